"""The gate policy (`gates.yaml`): pydantic-validated, checked against a metric catalogue.

`load_policy(path, sections=..., catalogue=...)` runs before any stage: a malformed or contradictory policy (unknown
metric, margin with no baseline data, threshold that is not a finite number, duplicate key, key gate
marked optional, a child relaxing a locked gate, ...) raises `BadInput` listing every problem by key
path (`gates.ttft_p99.threshold`, or `gates[3].margin` for a gate without a usable name). See
docs/GATES.md for every field and rule; `extends.py` for how a child policy merges onto its parent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from pipeline import metrics
from pipeline.errors import BadInput
from pipeline.gates import registry
from pipeline.gates.extends import Merged, Problems, load_merged, reason_problem
from pipeline.gates.registry import Source
from pipeline.gates.sections import ENGINE_SECTION_KEYS, RESERVED, SectionPlugin, SectionSet, as_map
from pipeline.metrics import Catalogue
from pipeline.models import Stage

Test = Literal["bootstrap", "mcnemar", "mannwhitney", "quantile"]
# What a gate the data could not judge does: `inconclusive` (the release cannot pass, a person decides
# what to measure next) or `fail` (it is blocked). There is no "warn": doubt never passes.
OnInconclusive = Literal["inconclusive", "fail"]
Subset = Literal["answer", "refuse"]

_FINITE = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class GateSpec(BaseModel):
    """One gate. Exactly the fields documented in docs/GATES.md; unknown keys are errors."""

    model_config = _FINITE

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
    locked: bool = False
    min_agreement: float | None = Field(default=None, ge=0, le=1)
    alpha: float | None = Field(default=None, gt=0, lt=0.5)
    drift_allowance: float | None = Field(default=None, ge=0, lt=1)
    min_n: int | None = Field(default=None, ge=3)
    on_inconclusive: OnInconclusive | None = None
    on_underpowered: OnInconclusive | None = None
    # compare only the items a good server should answer (`answer`) or refuse (`refuse`)
    subset: Subset | None = None
    # block when any ground-truth category's mean score is shown to drop by more than this, whatever
    # the average does (categories with fewer than category_min_n paired items are not tested)
    category_margin: float | None = Field(default=None, gt=0, lt=1)
    category_min_n: int | None = Field(default=None, ge=2)
    # design values, used to size the bench and to check the ground truth (`llmgate policy check`):
    # the A/A spread of the compared data (items: sd of paired differences; samples: sd of log latency)
    planning_sd: float | None = Field(default=None, gt=0, le=10)
    # the value an unchanged release is expected to show against the threshold
    expected: float | None = None
    reason: str | None = None

    _source: Source | None = PrivateAttr(default=None)
    _compare: Source | None = PrivateAttr(default=None)
    _test: Test | None = PrivateAttr(default=None)
    _origin: str = PrivateAttr(default="")
    _overrides: dict[str, list[Any]] = PrivateAttr(default_factory=dict)

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
    def inconclusive_action(self) -> OnInconclusive:
        """What a gate the data could not judge does (never a pass)."""
        return self.on_inconclusive or "inconclusive"

    @property
    def underpowered_action(self) -> OnInconclusive:
        return self.on_underpowered or self.inconclusive_action

    @property
    def scorer_dimension(self) -> str | None:
        """The per-item dimension whose scorer produced this gate's figures, if any."""
        for src in (self._compare, self._source):
            if src is not None and src.kind == "items":
                return src.name
        if self._source is not None and self._source.kind == "metric":
            info = self._source.info
            if info and info.compare and info.compare.startswith("items:"):
                return info.compare.removeprefix("items:")
        return None


class SectionMeta(BaseModel):
    """Engine-owned keys allowed in every section."""

    model_config = _FINITE

    required: bool = True
    key: bool = False
    locked: bool = False
    relaxable: list[str] = Field(default_factory=list)
    reason: str | None = None


class Policy(BaseModel):
    model_config = _FINITE

    version: Literal[1] = 1
    extends: str | None = None
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.8, gt=0.5, lt=1)
    seed: int = 20240601
    resamples: int = Field(default=10_000, ge=10_000, le=1_000_000)
    min_paired_fraction: float = Field(default=0.9, gt=0, le=1)
    drift_allowance: float = Field(default=0.05, ge=0, lt=1)
    min_n: int = Field(default=30, ge=3)
    # sizing: the largest chance that an unchanged release at its expected values fails one threshold
    # only because of sampling noise (a few unlucky requests); see pipeline/gates/sizing.py
    planning_risk: float = Field(default=0.01, gt=0, lt=0.5)
    # none: each comparison is tested at its alpha; holm: Holm-adjusted across the release's comparisons
    multiplicity: Literal["none", "holm"] = "none"
    gates: list[GateSpec] = Field(default_factory=list)

    _sections: dict[str, BaseModel] = PrivateAttr(default_factory=dict)
    _section_meta: dict[str, SectionMeta] = PrivateAttr(default_factory=dict)
    _section_overrides: dict[str, dict[str, list[Any]]] = PrivateAttr(default_factory=dict)
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
    def section_overrides(self) -> dict[str, dict[str, list[Any]]]:
        return self._section_overrides

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

    def min_n_for(self, g: GateSpec) -> int:
        return g.min_n or self.min_n

    def drift_for(self, g: GateSpec) -> float:
        return self.drift_allowance if g.drift_allowance is None else g.drift_allowance


class GateSource(NamedTuple):
    """One input a gate reads, for `llmgate policy check --plan`: which stage must run to feed it."""

    gate: str
    stage: Stage
    name: str  # metric name, or "samples:<series>" / "items:<dimension>", or what a section reads
    required: bool


def gate_sources(policy: Policy, sections: SectionSet) -> list[GateSource]:
    """Every (gate, stage, metric/sample/items name, required) the policy reads, gates first."""
    out: list[GateSource] = []
    for g in policy.gates:
        src = g.parsed_source
        out.append(GateSource(g.name, src.stage, src.label, g.required))
        cmp = g.parsed_compare
        if cmp is not None and str(cmp) != str(src):
            out.append(GateSource(g.name, cmp.stage, cmp.label, g.required))
    plugins = as_map(sections)
    for name, meta in policy.section_meta.items():
        plugin = plugins.get(name)
        if plugin is not None:
            out.append(GateSource(name, plugin.stage, plugin.reads, meta.required))
    return out


# -- validation --------------------------------------------------------------------------------------


def _gate_path(gates: list[Any], index: int) -> str:
    g = gates[index] if 0 <= index < len(gates) else None
    name = g.get("name") if isinstance(g, dict) else None
    if isinstance(name, str) and name and all(c.isalnum() or c in "_.-" for c in name):
        names = [x.get("name") for x in gates if isinstance(x, dict)]
        if names.count(name) == 1:
            return f"gates.{name}"
    return f"gates[{index}]"


def _pydantic_problems(
    exc: ValidationError, gates_raw: list[Any], origins: dict[str, str], problems: Problems
) -> None:
    for err in exc.errors():
        loc = list(err["loc"])
        origin = None
        if len(loc) >= 2 and loc[0] == "gates" and isinstance(loc[1], int):
            head = _gate_path(gates_raw, loc[1])
            rest = ".".join(str(p) for p in loc[2:])
            path = f"{head}.{rest}" if rest else head
            name = gates_raw[loc[1]].get("name") if isinstance(gates_raw[loc[1]], dict) else None
            origin = origins.get(name) if isinstance(name, str) else None
        else:
            path = ".".join(str(p) for p in loc) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error" and err.get("input") == "warn" and loc and str(loc[-1]).startswith("on_"):
            msg = ("'warn' is not accepted: a gate the data could not judge never passes; use 'inconclusive' "
                   "(the default) or 'fail'")
        elif err["type"] == "finite_number":
            msg = f"must be a finite number (got {err.get('input')!r})"
        elif "input" in err and err["type"] not in ("missing",):
            msg = f"{msg} (got {err['input']!r})"
        problems.add(path, msg, origin if origin and " + " in origin else None)


TAIL_QUANTILE = 0.9  # percentile sources at or above this are compared as quantiles (a tail test)


def _default_test(src: Source, cmp: Source) -> Test:
    if cmp.kind == "samples":
        q = src.quantile
        return "quantile" if q is not None and q >= TAIL_QUANTILE else "mannwhitney"
    dim = cmp.dimension
    return "mcnemar" if dim and dim.binary else "bootstrap"


def _resolve_compare(g: GateSpec, src: Source, path: str, problems: Problems, catalogue: Catalogue) -> None:
    assert g.margin is not None
    compare_text = g.compare
    if compare_text is None:
        compare_text = str(src) if src.kind != "metric" else (src.info.compare if src.info else None)
    if compare_text is None:
        problems.add(
            f"{path}.margin",
            f"a margin needs baseline data to compare, and {src} has no per-item scores or per-request samples; "
            "set compare: items:<dimension> | samples:<name>, or use an absolute threshold only",
        )
        return
    try:
        cmp = registry.parse_source(compare_text, catalogue)
    except ValueError as exc:
        problems.add(f"{path}.compare", str(exc))
        return
    if cmp.kind == "metric":
        problems.add(f"{path}.compare", "compare must be items:<dimension> or samples:<name> (paired data)")
        return
    g._compare = cmp
    test = g.test or _default_test(src, cmp)
    dim = cmp.dimension
    if test in ("mannwhitney", "quantile") and cmp.kind != "samples":
        problems.add(f"{path}.test", f"{test} compares latency samples; use bootstrap or mcnemar for items")
    elif test == "quantile" and src.quantile is None:
        problems.add(f"{path}.test", f"quantile compares a percentile; {src} is not one (use mannwhitney)")
    elif test in ("bootstrap", "mcnemar") and cmp.kind != "items":
        problems.add(f"{path}.test", f"{test} needs paired per-item scores; use mannwhitney for samples")
    elif test == "mcnemar" and not (dim and dim.binary):
        problems.add(f"{path}.test", f"mcnemar needs a 0/1 dimension; {cmp.name!r} is continuous")
    g._test = test
    if cmp.kind == "items" and g.margin >= 1:
        problems.add(f"{path}.margin", "item scores are 0..1; a margin of 1 or more can never fail")
    if g.drift_allowance is not None and cmp.kind != "samples":
        problems.add(f"{path}.drift_allowance", "a drift allowance applies to latency samples only")
    for k in ("subset", "category_margin"):
        if getattr(g, k) is not None and cmp.kind != "items":
            problems.add(f"{path}.{k}", f"{k} applies to per-item scores only (compare: items:<dimension>)")
    if g.category_margin is not None and g.category_margin < g.margin:
        problems.add(f"{path}.category_margin", f"a category is smaller than the whole: its margin must be at "
                     f"least the gate's margin {g.margin:g}")


def _cannot_fail(src: Source, direction: str, threshold: float) -> str | None:
    """Why a threshold can never be violated (a quality bar of 0 passes anything), or None."""
    unit = src.unit
    lowest, highest = 0.0, (1.0 if unit in ("ratio", "bool") else None)
    if direction == "min" and threshold <= lowest:
        return f"{src} is never below {lowest:g}: '>= {threshold:g}' passes anything"
    if direction == "max" and highest is not None and threshold >= highest:
        return f"{src} is never above {highest:g}: '<= {threshold:g}' passes anything"
    return None


def _resolve_gate(g: GateSpec, path: str, problems: Problems, catalogue: Catalogue) -> None:
    try:
        src = registry.parse_source(g.source, catalogue)
    except ValueError as exc:
        problems.add(f"{path}.source", str(exc))
        return
    g._source = src
    default_dir = "max" if src.better == "lower" else "min"
    if g.threshold is not None:
        if g.direction is None:
            g.direction = default_dir
        elif g.direction != default_dir:
            problems.add(
                f"{path}.direction",
                f"'{g.direction}' contradicts {src}: {src.better} is better, so the threshold is a '{default_dir}'",
            )
    elif g.direction is not None:
        problems.add(f"{path}.direction", "direction without a threshold")
    if g.threshold is not None and g.direction is not None:
        why = _cannot_fail(src, g.direction, g.threshold)
        if why:
            problems.add(f"{path}.threshold", f"cannot fail: {why}; set a bar that means something for the "
                         "target, or remove the threshold (a first release then needs a recorded approval)")
    if g.expected is not None:
        if g.threshold is None:
            problems.add(f"{path}.expected", "expected sizes a threshold; this gate has none")
        elif g.direction in ("max", "min") and not (
            g.expected < g.threshold if g.direction == "max" else g.expected > g.threshold
        ):
            problems.add(f"{path}.expected", f"an unchanged release expected at {g.expected:g} would not meet "
                         f"{'<=' if g.direction == 'max' else '>='} {g.threshold:g}")
    if g.threshold is None and g.margin is None:
        problems.add(path, "checks nothing: give a threshold, a margin, or both")
    if g.compare is not None and g.margin is None:
        problems.add(f"{path}.compare", "compare without a margin: set margin (non-inferiority) or remove compare")
    if g.margin is not None:
        _resolve_compare(g, src, path, problems, catalogue)
    else:
        for k in ("test", "drift_allowance", "on_underpowered", "subset", "category_margin", "planning_sd"):
            if getattr(g, k) is not None:
                problems.add(f"{path}.{k}", f"{k} without a margin compares nothing")
    if g.category_min_n is not None and g.category_margin is None:
        problems.add(f"{path}.category_min_n", "category_min_n without a category_margin checks nothing")
    if g.min_agreement is not None:
        dim_name = g.scorer_dimension
        info = catalogue.item_dimensions.get(dim_name) if dim_name else None
        if info is None or not info.scorer:
            problems.add(f"{path}.min_agreement", f"{g.source} is not produced by a calibrated scorer")
    _optional_problems(problems, path, "gate", key=g.key, locked=g.locked, required=g.required, reason=g.reason)
    if g.required and g.reason is not None:
        why = reason_problem(g.reason)
        if why:
            problems.add(f"{path}.reason", f"the reason {why}")


def _optional_problems(problems: Problems, path: str, what: str, *, key: bool, locked: bool, required: bool,
                       reason: str | None) -> None:
    """What is wrong with an optional gate or section (`what`): it may be neither key nor locked, and
    must state why it does not block."""
    if required:
        return
    for flag, on in (("key", key), ("locked", locked)):
        if on:
            problems.add(f"{path}.{flag}", f"a {flag} {what} cannot be optional (required: false)")
    why = reason_problem(reason)
    if why:
        problems.add(f"{path}.reason", f"an optional {what} must state why it does not block: the reason {why}")


def _resolve_section(
    name: str, value: Any, plugin: SectionPlugin | None, where: str, problems: Problems, policy: Policy
) -> None:
    if plugin is None:
        stage = RESERVED.get(name)
        problems.add(
            name,
            f"no section plug-in was given for this section (it reads the {stage.value if stage else '?'} stage); "
            "not evaluated, so refused",
        )
        return
    if value is not None and not isinstance(value, dict):
        problems.add(name, "expected a mapping")
        return
    body = dict(value or {})
    meta_raw = {k: body.pop(k) for k in ENGINE_SECTION_KEYS if k in body}
    try:
        meta = SectionMeta.model_validate(meta_raw)
    except ValidationError as exc:
        for err in exc.errors():
            problems.add(f"{name}.{'.'.join(str(p) for p in err['loc'])}", err["msg"])
        return
    _optional_problems(problems, name, "section", key=meta.key, locked=meta.locked, required=meta.required,
                       reason=meta.reason)
    if meta.relaxable and not meta.locked:
        problems.add(f"{name}.relaxable", "relaxable names exceptions to a lock; the section is not locked")
    try:
        model = plugin.validate(body, f"{where}: {name}")
    except BadInput as exc:
        problems.add(name, exc.message)
        return
    unknown = [f for f in meta.relaxable if f not in type(model).model_fields]
    if unknown:
        problems.add(f"{name}.relaxable", f"not fields of the section: {', '.join(unknown)}")
    policy._sections[name] = model
    policy._section_meta[name] = meta


def policy_from_dict(
    raw: dict[str, Any],
    *,
    sections: SectionSet,
    where: str = "gates.yaml",
    merged: Merged | None = None,
    policy_dir: Path | None = None,
    problems: Problems | None = None,
    catalogue: Catalogue | None = None,
) -> Policy:
    """Validate an already-parsed policy mapping; every problem reported at once. `merged`, when `raw` is
    the merge of a file and what it extends, says where each gate came from and what the merge changed.
    `catalogue`: the metrics the gates may read (the plan's own, from whoever runs it); None: the
    installed one (`pipeline.metrics.catalogue`)."""
    catalogue = catalogue or metrics.catalogue()
    problems = problems or Problems()
    merged = merged or Merged(data=raw, files=[])
    origins = merged.origins
    plugins = as_map(sections)
    raw = dict(raw)
    section_raw = {k: raw.pop(k) for k in list(raw) if k in plugins or k in RESERVED}
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
        g._overrides = merged.overrides.get(g.name, {})
        _resolve_gate(g, path, problems, catalogue)
    for name, value in section_raw.items():
        if name in seen:
            problems.add(name, f"section {name!r} produces a gate named like gates[{seen[name]}]; rename that gate")
        _resolve_section(name, value, plugins.get(name), where, problems, policy)
    for name, plugin in plugins.items():
        if plugin.always and name not in section_raw:
            policy._sections[name] = plugin.validate(None, f"{where}: {name}")
            policy._section_meta[name] = SectionMeta()
    if not any(g.required for g in policy.gates) and not any(m.required for m in policy._section_meta.values()):
        problems.add("gates", "no required gate: such a policy would pass any release")
    problems.raise_if_any(where)
    policy._files = merged.files or [where]
    policy._dir = policy_dir or Path(".")
    policy._section_overrides = merged.section_overrides
    effective = {"policy": raw, "sections": dict(sorted(section_raw.items()))}
    policy._sha256 = hashlib.sha256(json.dumps(effective, sort_keys=True, default=str).encode()).hexdigest()
    return policy


def load_policy(path: str | Path, *, sections: SectionSet, catalogue: Catalogue | None = None) -> Policy:
    """Load, merge (`extends`) and validate a policy file. Raises BadInput naming every bad key.

    `sections` are the section plug-ins the caller evaluates (`pipeline.supplychain.gate_sections.SECTIONS`
    and any other); a reserved section in the file without its plug-in is refused. `catalogue`: the
    metrics the gates may read (None: the installed one)."""
    path = Path(path)
    problems = Problems()
    plugins = as_map(sections)
    catalogue = catalogue or metrics.catalogue()
    merged = load_merged(path, plugins, problems, catalogue=catalogue)
    return policy_from_dict(merged.data, sections=plugins, where=str(path), merged=merged, policy_dir=path.parent,
                            problems=problems, catalogue=catalogue)
