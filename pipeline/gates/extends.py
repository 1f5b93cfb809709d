"""`extends:` for gate policies: merge a child onto its parent, and keep locked gates from relaxing.

Gates merge by name: a child may change fields of a parent gate (each change needs a `reason`, shown
in the verdict) or add gates. Sections merge key by key, and a change to a parent's section needs a
`reason` too. Top-level settings are replaced.

`locked: true` on a parent's gate or section means a child may tighten it but never relax it: a
locked gate stays required, key and locked; its threshold may only move to the stricter side, its
margin only shrink, its alpha only grow; what it measures (source, direction, compare, test) and how
it trusts a scorer (min_agreement, min_n) do not change; `on_inconclusive`/`on_underpowered` may go
from inconclusive to fail only; the compared items (`subset`) do not change, and the per-category
check (`category_margin`, `category_min_n`) may only get stricter. A locked section stays required and key; its rules may change only in ways
the section's plug-in calls tightening, except the fields the parent lists in `relaxable:`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import metrics
from pipeline.config import load_yaml
from pipeline.errors import BadInput
from pipeline.gates import registry
from pipeline.gates.sections import ENGINE_SECTION_KEYS, SectionPlugin
from pipeline.metrics import Catalogue

MIN_REASON_CHARS = 15
MIN_REASON_WORDS = 3
TOP_LEVEL = ("version", "extends", "alpha", "power", "seed", "resamples", "min_paired_fraction", "drift_allowance",
             "min_n", "multiplicity", "gates")


def reason_problem(reason: Any) -> str | None:
    """None when `reason` says why in a sentence; else what is wrong with it."""
    if not isinstance(reason, str) or not reason.strip():
        return "is missing"
    text = reason.strip()
    if len(text) < MIN_REASON_CHARS or len(text.split()) < MIN_REASON_WORDS:
        return (
            f"must say why in a sentence (at least {MIN_REASON_WORDS} words and {MIN_REASON_CHARS} characters), "
            f"got {text!r}"
        )
    return None


class Problems:
    """Every problem in a policy, collected so that one run of `policy check` names them all."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, msg: str, origin: str | None = None) -> None:
        self.lines.append(f"{path}: {msg}" + (f" (from {origin})" if origin else ""))

    def raise_if_any(self, where: str) -> None:
        if self.lines:
            raise BadInput("invalid gate policy:\n  " + "\n  ".join(self.lines), where=where)


@dataclass
class Merged:
    data: dict[str, Any]
    files: list[str]
    origins: dict[str, str] = field(default_factory=dict)  # gate -> "parent.yaml + child.yaml"
    overrides: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # gate -> field -> [old, new]
    section_overrides: dict[str, dict[str, list[Any]]] = field(default_factory=dict)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _gate_relaxations(parent: dict[str, Any], child: dict[str, Any], top_alpha: float,
                      catalogue: Catalogue | None = None) -> list[str]:
    """How `child` (the merged gate) accepts more than the locked `parent`."""
    out: list[str] = []
    for k in ("source", "direction", "compare", "test", "min_agreement", "min_n"):
        if child.get(k) != parent.get(k):
            out.append(f"{k} cannot change ({parent.get(k)!r} -> {child.get(k)!r})")
    for k in ("required", "key", "locked"):
        if parent.get(k, k == "required") is True and child.get(k, k == "required") is not True:
            out.append(f"{k} cannot be turned off")
    pt, ct = _num(parent.get("threshold")), _num(child.get("threshold"))
    if pt is not None:
        direction = parent.get("direction")
        if direction is None:
            try:
                src = registry.parse_source(str(parent.get("source", "")), catalogue or metrics.catalogue())
                direction = "max" if src.better == "lower" else "min"
            except ValueError:
                direction = None
        if ct is None:
            out.append("threshold cannot be removed")
        elif (direction == "max" and ct > pt) or (direction == "min" and ct < pt):
            out.append(f"threshold may only get stricter ({pt:g} -> {ct:g}, {direction})")
    pm, cm = _num(parent.get("margin")), _num(child.get("margin"))
    if pm is not None and (cm is None or cm > pm):
        out.append(f"margin may only shrink ({pm:g} -> {child.get('margin')!r})")
    pa = _num(parent.get("alpha")) or top_alpha
    ca = _num(child.get("alpha")) or top_alpha
    if ca < pa:
        out.append(f"alpha may only grow ({pa:g} -> {ca:g}: a lower alpha blocks less)")
    pd, cd = _num(parent.get("drift_allowance")), _num(child.get("drift_allowance"))
    if cd is not None and (pd is None or cd > pd):
        out.append(f"drift_allowance may only shrink ({parent.get('drift_allowance')!r} -> {cd:g})")
    for k in ("on_inconclusive", "on_underpowered"):
        if parent.get(k) == "fail" and child.get(k) != "fail":
            out.append(f"{k} cannot go from fail to {child.get(k) or 'the default'}")
    if child.get("subset") != parent.get("subset"):
        out.append(f"subset cannot change ({parent.get('subset')!r} -> {child.get('subset')!r})")
    pc, cc = _num(parent.get("category_margin")), _num(child.get("category_margin"))
    if pc is not None and (cc is None or cc > pc):
        out.append(f"category_margin may only shrink ({pc:g} -> {child.get('category_margin')!r})")
    pn, cn = _num(parent.get("category_min_n")), _num(child.get("category_min_n"))
    if pc is not None and cn is not None and cn > (pn or 5):
        out.append(f"category_min_n may only shrink ({parent.get('category_min_n')!r} -> {cn:g})")
    return out


def _section_relaxations(
    name: str,
    parent: dict[str, Any],
    child_raw: dict[str, Any],
    merged: dict[str, Any],
    plugin: SectionPlugin | None,
    where: str,
) -> list[str]:
    out: list[str] = []
    for k in ("required", "key", "locked"):
        if parent.get(k, k == "required") is True and merged.get(k, k == "required") is not True:
            out.append(f"{k} cannot be turned off")
    if "relaxable" in child_raw and child_raw["relaxable"] != parent.get("relaxable"):
        out.append("relaxable is set by the policy that locks the section, not by a child")
    relaxable = set(parent.get("relaxable") or [])
    body_p = {k: v for k, v in parent.items() if k not in ENGINE_SECTION_KEYS}
    body_m = {k: v for k, v in merged.items() if k not in ENGINE_SECTION_KEYS}
    changed = {k for k in set(body_p) | set(body_m) if body_p.get(k) != body_m.get(k)} - relaxable
    if not changed:
        return out
    if plugin is None or plugin.relaxations is None:
        out.append(f"{', '.join(sorted(changed))} cannot change (the section's plug-in defines no tightening)")
        return out
    try:
        before = plugin.validate(body_p, where)
        after = plugin.validate({k: v for k, v in body_m.items()}, where)
    except BadInput:
        return out  # the merged section is validated (and its errors reported) by the loader
    for fld, msg in plugin.relaxations(before, after):
        if fld not in relaxable:
            out.append(msg)
    return out


def load_merged(
    path: Path, sections: Mapping[str, SectionPlugin], problems: Problems, seen: tuple[Path, ...] = (),
    *, catalogue: Catalogue | None = None,
) -> Merged:
    """The policy at `path` with everything it extends merged in; problems of the merge are collected."""
    data = load_yaml(path, what="policy file")  # first: it refuses a symlink loop, which resolve() cannot name
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise BadInput(f"extends forms a cycle: {chain}", where=str(path))
    if not isinstance(data, dict):
        raise BadInput("expected a mapping at the top level", where=str(path))
    gates = data.get("gates", [])
    if not isinstance(gates, list):
        raise BadInput("gates: expected a list of gates", where=str(path))
    parent_ref = data.get("extends")
    if parent_ref is None:
        m = Merged(data=data, files=[str(path)])
        for g in gates:
            if isinstance(g, dict) and isinstance(g.get("name"), str):
                m.origins[g["name"]] = str(path)
        return m
    if not isinstance(parent_ref, str) or not parent_ref.strip():
        raise BadInput("extends: expected a file path (string)", where=str(path))
    parent_path = path.parent / parent_ref
    if not parent_path.exists():
        raise BadInput(f"extends: parent policy {parent_ref!r} not found (looked at {parent_path})", where=str(path))
    base = load_merged(parent_path, sections, problems, (*seen, resolved), catalogue=catalogue)
    here = str(path)
    top_alpha = _num(base.data.get("alpha")) or 0.05
    locked_margin = any(
        isinstance(g, dict) and g.get("locked") is True and g.get("margin") is not None
        for g in base.data.get("gates", [])
    )
    merged = {k: copy.deepcopy(v) for k, v in base.data.items() if k not in ("gates", "extends")}
    for k, v in data.items():
        if k in ("gates", "extends"):
            continue
        if k in TOP_LEVEL:
            if locked_margin and k == "alpha" and (_num(v) or top_alpha) < top_alpha:
                problems.add(k, "a parent locks a compared gate; alpha may only grow", here)
            if locked_margin and k == "drift_allowance" and (_num(v) or 0.0) > (_num(merged.get(k)) or 0.05):
                problems.add(k, "a parent locks a compared gate; drift_allowance may only shrink", here)
            if locked_margin and k == "multiplicity" and v != merged.get(k, "none") and v == "holm":
                problems.add(k, "a parent locks a compared gate; multiplicity holm would block less", here)
            merged[k] = copy.deepcopy(v)
            continue
        parent_sec = merged.get(k)
        if isinstance(v, dict) and isinstance(parent_sec, dict):
            new_sec = {**parent_sec, **v}
            changed = {
                kk: [parent_sec.get(kk), vv] for kk, vv in v.items() if kk != "reason" and parent_sec.get(kk) != vv
            }
            if changed:
                why = reason_problem(v.get("reason"))
                if why:
                    problems.add(
                        f"{k}.reason",
                        f"overrides {', '.join(sorted(changed))} of the section from {parent_path}; the reason {why}",
                        here,
                    )
                base.section_overrides.setdefault(k, {}).update(changed)
            if parent_sec.get("locked") is True:
                for msg in _section_relaxations(k, parent_sec, v, new_sec, sections.get(k), f"{here}: {k}"):
                    problems.add(k, f"locked in {parent_path}: {msg}", here)
            merged[k] = new_sec
        else:
            if isinstance(parent_sec, dict) and parent_sec.get("locked") is True:
                problems.add(k, f"locked in {parent_path}: the section cannot be replaced or removed", here)
            merged[k] = copy.deepcopy(v)
    merged_gates: list[Any] = copy.deepcopy(base.data.get("gates", []))
    by_name = {g.get("name"): i for i, g in enumerate(merged_gates) if isinstance(g, dict)}
    for i, g in enumerate(gates):
        if not isinstance(g, dict) or not isinstance(g.get("name"), str):
            problems.add(f"gates[{i}].name", "every gate in a policy that extends another needs a name", here)
            continue
        name = g["name"]
        if name not in by_name:
            by_name[name] = len(merged_gates)
            merged_gates.append(copy.deepcopy(g))
            base.origins[name] = here
            continue
        parent_gate = merged_gates[by_name[name]]
        changed = {k: [parent_gate.get(k), v] for k, v in g.items() if k not in ("name", "reason") and parent_gate.get(k) != v}
        new_gate = {**parent_gate, **g}
        if changed:
            why = reason_problem(g.get("reason"))
            if why:
                problems.add(
                    f"gates.{name}.reason",
                    f"overrides {', '.join(sorted(changed))} of the gate from {base.origins.get(name, parent_path)}; "
                    f"an override must state why: the reason {why}",
                    here,
                )
        if parent_gate.get("locked") is True:
            for msg in _gate_relaxations(parent_gate, new_gate, top_alpha, catalogue):
                problems.add(f"gates.{name}", f"locked in {base.origins.get(name, parent_path)}: {msg}", here)
        merged_gates[by_name[name]] = new_gate
        base.overrides.setdefault(name, {}).update(changed)
        base.origins[name] = f"{base.origins.get(name, parent_path)} + {here}"
    merged["gates"] = merged_gates
    merged["extends"] = parent_ref
    return Merged(
        data=merged,
        files=[here, *base.files],
        origins=base.origins,
        overrides=base.overrides,
        section_overrides=base.section_overrides,
    )


def floor_relaxations(floor: dict[str, Any], policy: dict[str, Any], sections: Mapping[str, SectionPlugin],
                      *, where: str = "floor") -> list[str]:
    """How the merged policy `policy` fails to contain the locked gates and locked sections of the merged
    policy `floor` (both as `load_merged` returns their data): a locked gate or section missing, or
    present but relaxed by the same rules `extends:` applies. A policy that extends the floor can never
    fail this; a standalone policy passes only by repeating the floor's locked parts at least as strictly."""
    out: list[str] = []
    top_alpha = _num(floor.get("alpha")) or 0.05
    mine = {g.get("name"): g for g in policy.get("gates", []) if isinstance(g, dict)}
    for g in floor.get("gates", []):
        if not (isinstance(g, dict) and g.get("locked") is True):
            continue
        child = mine.get(g.get("name"))
        if child is None:
            out.append(f"gate {g.get('name')} (locked in the floor) is missing")
            continue
        out += [f"gate {g.get('name')}: {msg}" for msg in _gate_relaxations(g, child, top_alpha)]
    for name, sec in floor.items():
        if not (isinstance(sec, dict) and sec.get("locked") is True):
            continue
        child_sec = policy.get(name)
        if not isinstance(child_sec, dict):
            out.append(f"section {name} (locked in the floor) is missing")
            continue
        out += [f"section {name}: {msg}"
                for msg in _section_relaxations(name, sec, child_sec, child_sec, sections.get(name), where)]
    return out
