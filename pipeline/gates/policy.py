"""The gate policy (`gates.yaml`): pydantic-validated, checked against the metric registry.

`load_policy(path)` is what the orchestrator calls before any stage runs: a malformed or
contradictory policy (unknown metric, margin with no baseline data, threshold of the wrong type,
key gate marked optional, ...) raises `BadInput` listing every problem by key path
(`gates.ttft_p99.threshold`, or `gates[3].margin` for a gate without a usable name).

`extends: other.yaml` merges by gate name: a child may change fields of a parent gate (each such
override must state a `reason`, shown in the verdict) or add gates; top-level settings and sections
are overridden key by key. That is how `gates.local.yaml` relaxes exactly the gates that cannot run
in an offline sandbox while `gates.yaml` stays strict. See docs/GATES.md for every field.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from pipeline.config import load_yaml
from pipeline.errors import BadInput
from pipeline.gates import registry
from pipeline.gates.registry import Source
from pipeline.gates.sections import RESERVED, SectionPlugin, sections

Test = Literal["bootstrap", "mcnemar", "mannwhitney"]
ENGINE_SECTION_KEYS = ("required", "key", "reason")  # keys the engine owns inside every section


class GateSpec(BaseModel):
    """One gate. Exactly the fields documented in docs/GATES.md; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    source: str
    description: str = ""
    threshold: float | None = None
    direction: Literal["max", "min"] | None = None
    margin: float | None = Field(default=None, ge=0)
    compare: str | None = None
    test: Test | None = None
    required: bool = True
    key: bool = False
    min_agreement: float | None = Field(default=None, ge=0, le=1)
    alpha: float | None = Field(default=None, gt=0, lt=0.5)
    on_inconclusive: Literal["warn", "fail"] = "warn"
    reason: str | None = None

    _source: Source | None = PrivateAttr(default=None)
    _compare: Source | None = PrivateAttr(default=None)
    _test: Test | None = PrivateAttr(default=None)
    _origin: str = PrivateAttr(default="")
    _overrides: dict[str, list[Any]] = PrivateAttr(default_factory=dict)

    # Resolved by the loader (defaults filled from the registry); the engine reads these.
    @property
    def parsed_source(self) -> Source:
        assert self._source is not None, "policy not resolved; use load_policy / policy_from_dict"
        return self._source

    @property
    def parsed_compare(self) -> Source | None:
        return self._compare

    @property
    def resolved_test(self) -> Test | None:
        return self._test

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def overrides(self) -> dict[str, list[Any]]:
        return self._overrides

    @property
    def scorer_dimension(self) -> str | None:
        """The per-item dimension whose scorer produced this gate's figures, if any."""
        for src in (self._compare, self._source):
            if src is not None and src.kind == "items":
                return src.name
        if self._source is not None and self._source.kind == "metric":
            info = registry.STAGE_METRICS.get(self._source.stage, {}).get(self._source.name)
            if info and info.compare and info.compare.startswith("items:"):
                return info.compare.removeprefix("items:")
        return None


class SectionMeta(BaseModel):
    """Engine-owned keys allowed in every section: relax a whole section with a stated reason."""

    model_config = ConfigDict(extra="forbid", strict=True)

    required: bool = True
    key: bool = False
    reason: str | None = None


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1] = 1
    extends: str | None = None
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.8, gt=0.5, lt=1)
    seed: int = 20240601
    resamples: int = Field(default=10_000, ge=10_000, le=1_000_000)
    min_paired_fraction: float = Field(default=0.9, gt=0, le=1)
    gates: list[GateSpec] = Field(default_factory=list)

    _sections: dict[str, BaseModel] = PrivateAttr(default_factory=dict)
    _section_meta: dict[str, SectionMeta] = PrivateAttr(default_factory=dict)
    _files: list[str] = PrivateAttr(default_factory=list)
    _sha256: str = PrivateAttr(default="")
    _dir: Path = PrivateAttr(default=Path("."))

    @property
    def sections(self) -> dict[str, BaseModel]:
        return self._sections

    @property
    def section_meta(self) -> dict[str, SectionMeta]:
        return self._section_meta

    @property
    def files(self) -> list[str]:
        return self._files

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def directory(self) -> Path:
        return self._dir

    def gate(self, name: str) -> GateSpec:
        for g in self.gates:
            if g.name == name:
                return g
        raise KeyError(name)


# -- loading and merging ---------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, msg: str, origin: str | None = None) -> None:
        self.lines.append(f"{path}: {msg}" + (f" (from {origin})" if origin else ""))

    def raise_if_any(self, where: str) -> None:
        if self.lines:
            raise BadInput("invalid gate policy:\n  " + "\n  ".join(self.lines), where=where)


def _gate_path(gates: list[Any], index: int) -> str:
    g = gates[index] if 0 <= index < len(gates) else None
    name = g.get("name") if isinstance(g, dict) else None
    if isinstance(name, str) and name and all(c.isalnum() or c in "_.-" for c in name):
        names = [x.get("name") for x in gates if isinstance(x, dict)]
        if names.count(name) == 1:
            return f"gates.{name}"
    return f"gates[{index}]"


def _load_raw(
    path: Path, seen: tuple[Path, ...], problems: _Problems
) -> tuple[dict[str, Any], dict[str, str], dict[str, dict[str, list[Any]]]]:
    """Raw merged mapping, gate name -> defining file, gate name -> {field: [old, new]} overrides."""
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise BadInput(f"extends forms a cycle: {chain}", where=str(path))
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise BadInput("expected a mapping at the top level", where=str(path))
    gates = data.get("gates", [])
    if not isinstance(gates, list):
        raise BadInput("gates: expected a list of gates", where=str(path))
    origins: dict[str, str] = {}
    overrides: dict[str, dict[str, list[Any]]] = {}
    parent_ref = data.get("extends")
    if parent_ref is None:
        for g in gates:
            if isinstance(g, dict) and isinstance(g.get("name"), str):
                origins[g["name"]] = str(path)
        return data, origins, overrides
    if not isinstance(parent_ref, str):
        raise BadInput("extends: expected a file path (string)", where=str(path))
    parent_path = path.parent / parent_ref
    if not parent_path.exists():
        raise BadInput(f"extends: parent policy {parent_ref!r} not found (looked at {parent_path})", where=str(path))
    base, origins, overrides = _load_raw(parent_path, (*seen, resolved), problems)
    merged = {k: copy.deepcopy(v) for k, v in base.items() if k not in ("gates", "extends")}
    for k, v in data.items():
        if k in ("gates", "extends"):
            continue
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = {**merged[k], **v}  # sections: key by key
        else:
            merged[k] = copy.deepcopy(v)
    merged_gates: list[Any] = copy.deepcopy(base.get("gates", []))
    by_name = {g.get("name"): i for i, g in enumerate(merged_gates) if isinstance(g, dict)}
    for i, g in enumerate(gates):
        if not isinstance(g, dict) or not isinstance(g.get("name"), str):
            problems.add(f"gates[{i}].name", "every gate in a policy that extends another needs a name", str(path))
            continue
        name = g["name"]
        if name in by_name:
            parent_gate = merged_gates[by_name[name]]
            changed = {
                k: [parent_gate.get(k), v]
                for k, v in g.items()
                if k not in ("name", "reason") and parent_gate.get(k) != v
            }
            if changed and not (isinstance(g.get("reason"), str) and g["reason"].strip()):
                problems.add(
                    f"gates.{name}.reason",
                    f"overrides {', '.join(sorted(changed))} of the gate from {origins.get(name, parent_path)}; "
                    "an override must state why (reason: ...)",
                    str(path),
                )
            merged_gates[by_name[name]] = {**parent_gate, **g}
            overrides.setdefault(name, {}).update(changed)
            origins[name] = f"{origins.get(name, parent_path)} + {path}"
        else:
            by_name[name] = len(merged_gates)
            merged_gates.append(copy.deepcopy(g))
            origins[name] = str(path)
    merged["gates"] = merged_gates
    merged["extends"] = parent_ref
    return merged, origins, overrides


def _pydantic_problems(
    exc: ValidationError, gates_raw: list[Any], origins: dict[str, str], problems: _Problems
) -> None:
    for err in exc.errors():
        loc = list(err["loc"])
        if len(loc) >= 2 and loc[0] == "gates" and isinstance(loc[1], int):
            head = _gate_path(gates_raw, loc[1])
            rest = ".".join(str(p) for p in loc[2:])
            path = f"{head}.{rest}" if rest else head
            name = gates_raw[loc[1]].get("name") if isinstance(gates_raw[loc[1]], dict) else None
            origin = origins.get(name) if isinstance(name, str) else None
        else:
            path = ".".join(str(p) for p in loc) or "(root)"
            origin = None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and err["type"] not in ("missing",):
            msg = f"{msg} (got {err['input']!r})"
        problems.add(path, msg, origin if origin and " + " in origin else None)


def _resolve_gate(g: GateSpec, path: str, problems: _Problems) -> None:
    try:
        src = registry.parse_source(g.source)
    except ValueError as exc:
        problems.add(f"{path}.source", str(exc))
        return
    g._source = src
    if src.kind == "metric" and src.stage not in registry.STAGE_METRICS:
        problems.add(f"{path}.source", f"unknown stage {src.stage!r}")
        return
    default_dir = "max" if src.better == "lower" else "min"
    if g.threshold is not None:
        if g.direction is None:
            g.direction = default_dir
        elif g.direction != default_dir:
            problems.add(
                f"{path}.direction",
                f"'{g.direction}' contradicts {src}: {'lower' if src.better == 'lower' else 'higher'} is better, "
                f"so the threshold is a '{default_dir}'",
            )
    elif g.direction is not None:
        problems.add(f"{path}.direction", "direction without a threshold")
    if g.threshold is None and g.margin is None:
        problems.add(path, "checks nothing: give a threshold, a margin, or both")
    # What a margin compares: the source itself when it is a series, else the registry default.
    compare_text = g.compare
    if g.compare is not None and g.margin is None:
        problems.add(f"{path}.compare", "compare without a margin: set margin (non-inferiority) or remove compare")
    if g.margin is not None:
        if compare_text is None:
            if src.kind != "metric":
                compare_text = str(src)
            else:
                compare_text = registry.STAGE_METRICS[src.stage][src.name].compare
        if compare_text is None:
            problems.add(
                f"{path}.margin",
                f"a margin needs baseline data to compare, and {src} has no per-item scores or per-request samples; "
                "set compare: items:<dimension> | samples:<name>, or use an absolute threshold only",
            )
        else:
            try:
                cmp = registry.parse_source(compare_text)
            except ValueError as exc:
                problems.add(f"{path}.compare", str(exc))
                cmp = None
            if cmp is not None and cmp.kind == "metric":
                problems.add(f"{path}.compare", "compare must be items:<dimension> or samples:<name> (paired data)")
                cmp = None
            if cmp is not None:
                g._compare = cmp
                dim = cmp.dimension
                default_test: Test = (
                    "mannwhitney" if cmp.kind == "samples" else ("mcnemar" if dim and dim.binary else "bootstrap")
                )
                test = g.test or default_test
                if test == "mannwhitney" and cmp.kind != "samples":
                    problems.add(
                        f"{path}.test", "mannwhitney compares latency samples; use bootstrap or mcnemar for items"
                    )
                elif test in ("bootstrap", "mcnemar") and cmp.kind != "items":
                    problems.add(f"{path}.test", f"{test} needs paired per-item scores; use mannwhitney for samples")
                elif test == "mcnemar" and not (dim and dim.binary):
                    problems.add(f"{path}.test", f"mcnemar needs a 0/1 dimension; {cmp.name!r} is continuous")
                g._test = test
                if cmp.kind == "items" and g.margin > 1:
                    problems.add(f"{path}.margin", "item scores are 0..1; a margin above 1 can never fail")
    elif g.test is not None:
        problems.add(f"{path}.test", "a test without a margin compares nothing")
    if g.min_agreement is not None:
        dim_name = g.scorer_dimension
        info = registry.ITEM_DIMENSIONS.get(dim_name) if dim_name else None
        if info is None or not info.scorer:
            problems.add(f"{path}.min_agreement", f"{g.source} is not produced by a calibrated scorer")
    if g.key and not g.required:
        problems.add(f"{path}.key", "a key gate cannot be optional (required: false)")
    if not g.required and not (g.reason and g.reason.strip()):
        problems.add(f"{path}.reason", "an optional gate must state why it does not block (reason: ...)")


def policy_from_dict(
    raw: dict[str, Any],
    *,
    where: str = "gates.yaml",
    origins: dict[str, str] | None = None,
    overrides: dict[str, dict[str, list[Any]]] | None = None,
    files: list[str] | None = None,
    policy_dir: Path | None = None,
    problems: _Problems | None = None,
) -> Policy:
    """Validate an already-parsed (and merged) policy mapping; every problem reported at once."""
    problems = problems or _Problems()
    origins = origins or {}
    raw = dict(raw)
    plugins: dict[str, SectionPlugin] = sections()
    section_raw: dict[str, Any] = {}
    for key in list(raw):
        if key in plugins or key in RESERVED:
            section_raw[key] = raw.pop(key)
    gates_raw = raw.get("gates") if isinstance(raw.get("gates"), list) else []
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        _pydantic_problems(exc, gates_raw, origins, problems)
        problems.raise_if_any(where)
        raise  # unreachable: a validation error always adds a problem
    seen: dict[str, int] = {}
    for i, g in enumerate(policy.gates):
        path = _gate_path(gates_raw, i)
        if g.name in seen:
            problems.add(f"gates[{i}].name", f"duplicate gate name {g.name!r} (also gates[{seen[g.name]}])")
            continue
        seen[g.name] = i
        g._origin = origins.get(g.name, where)
        g._overrides = (overrides or {}).get(g.name, {})
        _resolve_gate(g, path, problems)
    for name, value in section_raw.items():
        plugin = plugins.get(name)
        if plugin is None:
            problems.add(
                name, f"no validator registered for this section (owner: {RESERVED[name]}); not evaluated, so refused"
            )
            continue
        if value is not None and not isinstance(value, dict):
            problems.add(name, "expected a mapping")
            continue
        body = dict(value or {})
        meta_raw = {k: body.pop(k) for k in ENGINE_SECTION_KEYS if k in body}
        try:
            meta = SectionMeta.model_validate(meta_raw)
        except ValidationError as exc:
            for err in exc.errors():
                problems.add(f"{name}.{'.'.join(str(p) for p in err['loc'])}", err["msg"])
            continue
        if meta.key and not meta.required:
            problems.add(f"{name}.key", "a key section cannot be optional (required: false)")
        if not meta.required and not (meta.reason and meta.reason.strip()):
            problems.add(f"{name}.reason", "an optional section must state why it does not block (reason: ...)")
        if name in seen:
            problems.add(name, f"section {name!r} produces a gate named like gates[{seen[name]}]; rename that gate")
        try:
            policy._sections[name] = plugin.validate(body, f"{where}: {name}")
        except BadInput as exc:
            problems.add(name, exc.message)
            continue
        policy._section_meta[name] = meta
    for name, plugin in plugins.items():
        if plugin.always and name not in policy._sections and name not in section_raw:
            policy._sections[name] = plugin.validate(None, f"{where}: {name}")
            policy._section_meta[name] = SectionMeta()
    if not any(g.required for g in policy.gates) and not any(m.required for m in policy._section_meta.values()):
        problems.add("gates", "no required gate: such a policy would pass any release")
    problems.raise_if_any(where)
    policy._files = files or [where]
    policy._dir = policy_dir or Path(".")
    effective = {"policy": raw, "sections": {k: v for k, v in sorted(section_raw.items())}}
    policy._sha256 = hashlib.sha256(json.dumps(effective, sort_keys=True, default=str).encode()).hexdigest()
    return policy


def load_policy(path: str | Path) -> Policy:
    """Load, merge (`extends`) and validate a policy file. Raises BadInput naming every bad key."""
    path = Path(path)
    problems = _Problems()
    raw, origins, overrides = _load_raw(path, (), problems)
    files = [str(path)]
    cur = raw
    parent = cur.get("extends")
    base_dir = path.parent
    while isinstance(parent, str):
        p = base_dir / parent
        files.append(str(p))
        nxt = load_yaml(p)
        base_dir = p.parent
        parent = nxt.get("extends") if isinstance(nxt, dict) else None
    return policy_from_dict(
        raw,
        where=str(path),
        origins=origins,
        overrides=overrides,
        files=files,
        policy_dir=path.parent,
        problems=problems,
    )
