"""Evaluate a policy against one run (and its baseline): verdicts per gate, then one decision.

Rules, in order of precedence (docs/GATES.md states them for policy authors):
- A gate whose stage or metric is missing, skipped or errored is `not_run`; a stage that *failed*
  (the thing under test misbehaved) makes its gates `fail`; a NaN/infinite value is `not_run`.
  `not_run` blocks exactly like `fail` unless the gate is optional (with a reason).
- Absolute threshold: `max` means value <= threshold, `min` value >= threshold.
- A bench run whose environment was disturbed (CPU steal, load: pipeline/bench/environment.py)
  does not judge its performance gates: they are inconclusive (`environment_disturbed`).
- Margin (non-inferiority against the baseline): a regression test per gate against the margin
  (paired bootstrap, McNemar/Tango, shifted Mann-Whitney; see stats.py) at the gate's alpha, or
  Holm-adjusted across the release's comparisons with `multiplicity: holm`. `fail` when the data
  show a regression beyond the margin. Before that,
  the data's minimum detectable effect (MDE) at this n is compared with the margin: above it the
  comparison is `underpowered` and cannot pass on its own (it says how many items or requests
  would do). Latency against a *stored* baseline is tested against (1 + margin)(1 + drift
  allowance); against a baseline measured in the same run, against 1 + margin.
- Edge cases are named outcomes (outcomes.py): too few items/samples, zero variance, invalid
  samples, an unusable baseline. Every inconclusive outcome follows the gate's `on_inconclusive`
  (`on_underpowered` for an underpowered one): a key gate defaults to `fail`, others to `warn`.
- A scorer-based gate with `min_agreement` whose scorer's calibration is below it (or unknown) is
  `warn` "uncalibrated: reported, not trusted" and does not gate.
- The release passes only if every required gate passes (warn counts as passed); blocking key
  gates are named first in the decision.
Deterministic: every resample is seeded from the policy seed and the gate name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.gates import stats
from pipeline.gates.baseline import Baseline, BaselineKind, first_release, given
from pipeline.gates.outcomes import INCONCLUSIVE, Outcome
from pipeline.gates.policy import GateSpec, Policy
from pipeline.gates.registry import Source
from pipeline.gates.sections import SectionContext, SectionSet, as_map
from pipeline.metrics import same_run_series
from pipeline.models import Decision, ItemResult, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.eval import EvalDetails
from pipeline.schemas.gate import GateStatus, GateVerdict, VerdictDetails

Calibration = Callable[[str], float | None]  # scorer id -> agreement with human labels (0..1), None: unknown


@dataclass
class Evaluation:
    verdicts: list[GateVerdict]
    decision: Decision
    reason: str
    warnings: list[str]
    baseline: Baseline

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "reason": self.reason,
            "warnings": self.warnings,
            "baseline": self.baseline.to_json(),
            "gates": [v.model_dump(mode="json") for v in self.verdicts],
        }


@dataclass
class _Pending:
    spec: GateSpec
    verdict: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    status: GateStatus | None = None  # decided before any comparison (not_run, stage failed)
    outcome: Outcome | None = None
    abs_ok: bool | None = None
    comparison: stats.PairedResult | stats.ShiftResult | None = None
    raw_p: float | None = None
    margin_tested: float | None = None  # the margin the test used (latency: with the drift allowance)
    mde: float | None = None
    n_needed: int | None = None
    uncalibrated: str | None = None
    warn: bool = False  # passed, but a person should look (a baseline that pairs only some items)

    @property
    def details(self) -> VerdictDetails:
        return self.verdict["details"]  # type: ignore[no-any-return]


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a" if x is None or math.isnan(x) else str(x)
    return f"{x:.4g}"


def _finite(x: float) -> bool:
    return math.isfinite(x)


# -- reading the run ---------------------------------------------------------------------------


def _stage_problem(run: RunRecord, stage: Stage) -> tuple[GateStatus, Outcome, str] | None:
    res = run.stage(stage.value)
    name = stage.value
    if res is None:
        return GateStatus.NOT_RUN, Outcome.STAGE_MISSING, f"not run: stage '{name}' has no result in this run"
    why = res.reason or "no reason given"
    if res.status is StageStatus.SKIPPED:
        return GateStatus.NOT_RUN, Outcome.STAGE_SKIPPED, f"not run: stage '{name}' skipped ({why})"
    if res.status is StageStatus.ERROR:
        return GateStatus.NOT_RUN, Outcome.STAGE_ERROR, f"not run: stage '{name}' errored ({why})"
    if res.status is StageStatus.FAILED:
        return GateStatus.FAIL, Outcome.STAGE_FAILED, f"stage '{name}' failed: {why}"
    return None


def _item_score(item: ItemResult, dim: str) -> float | None:
    """A dimension's score; a whole-item failure counts as 0 (a failure is never silently missing)."""
    if dim in item.scores:
        return item.scores[dim]
    if item.error is not None or dim in item.errors:
        return 0.0
    return None  # the dimension does not apply to this item


def item_scores(res: StageResult | None, dim: str) -> dict[str, float]:
    """Per-item scores of one dimension, NaN/inf kept so that the caller can refuse them by name."""
    if res is None:
        return {}
    out: dict[str, float] = {}
    for it in res.items:
        s = _item_score(it, dim)
        if s is not None:
            out[it.item_id] = float(s)
    return out


def _value(run: RunRecord, src: Source) -> float | None:
    res = run.stage(src.stage.value)
    if res is None:
        return None
    if src.kind == "metric":
        v = res.metrics.get(src.name)
        return None if v is None else float(v)
    if src.kind == "items":
        scores = list(item_scores(res, src.name).values())
        return float(np.mean(scores)) if scores else None
    series = res.samples.get(src.name) or []
    return float(np.median(series)) if series else None


def _scorer_id(run: RunRecord, dim: str) -> str | None:
    ev = run.stage(Stage.EVAL.value)
    details = ev.payload(EvalDetails) if ev is not None else None
    info = details.scorers.get(dim) if details is not None else None
    return info.id if info is not None else None


def _check_calibration(run: RunRecord, spec: GateSpec, calibration: Calibration) -> str | None:
    """None when trusted; else why the gate only reports."""
    dim = spec.scorer_dimension
    if spec.min_agreement is None or dim is None:
        return None
    sid = _scorer_id(run, dim)
    if sid is None:
        return f"uncalibrated: reported, not trusted (the eval stage names no scorer for '{dim}')"
    agreement = calibration(sid)
    if agreement is None:
        return f"uncalibrated: reported, not trusted (no calibration on record for scorer '{sid}')"
    if agreement < spec.min_agreement:
        return (
            f"uncalibrated: reported, not trusted (scorer '{sid}' agrees with human labels on "
            f"{agreement:.1%}, below min_agreement {spec.min_agreement:.1%})"
        )
    return None


def environment_disturbance(run: RunRecord) -> str | None:
    """Why the bench machine was disturbed (from the bench stage's env_* metrics), or None."""
    bench = run.stage(Stage.BENCH.value)
    if bench is None or not bench.metrics.get("env_disturbed"):
        return None
    m = bench.metrics
    parts = []
    for key, text in (
        ("env_steal_before", "CPU steal {:.1%} before the bench"),
        ("env_steal_during", "CPU steal {:.1%} during the bench"),
        ("env_busy_before", "CPUs {:.0%} busy before it started"),
        ("env_load_before", "load {:.2f} per CPU before it"),
    ):
        v = m.get(key)
        if v is not None:
            parts.append(text.format(v))
    return "environment disturbed (" + ", ".join(parts) + ")" if parts else "environment disturbed"


# -- one gate ----------------------------------------------------------------------------------


def _inconclusive(p: _Pending, outcome: Outcome, note: str) -> _Pending:
    p.outcome = outcome
    p.notes.append(f"inconclusive ({outcome.value}): {note}")
    return p


def _compare_items(p: _Pending, cmp: Source, run: RunRecord, baseline: Baseline, policy: Policy) -> _Pending:
    spec, margin = p.spec, p.spec.margin
    assert margin is not None and baseline.run is not None
    new = item_scores(run.stage(cmp.stage.value), cmp.name)
    if not new:
        p.status, p.outcome = GateStatus.NOT_RUN, Outcome.COMPARE_DATA_MISSING
        p.notes.append(f"comparison not run: this run has no per-item '{cmp.name}' scores")
        return p
    base = item_scores(baseline.run.stage(cmp.stage.value), cmp.name)
    ids = sorted(set(new) & set(base))
    bad_new = sum(1 for v in new.values() if not _finite(v))
    bad_base = sum(1 for i in ids if not _finite(base[i]))
    p.details.paired_items = len(ids)
    if bad_new or bad_base:
        return _inconclusive(
            p, Outcome.INVALID_SAMPLES,
            f"{bad_new} of this run's and {bad_base} of the baseline's '{cmp.name}' scores are NaN or infinite",
        )
    min_n = policy.min_n_for(spec)
    if len(ids) < min_n:
        return _inconclusive(
            p, Outcome.TOO_FEW,
            f"{len(ids)} items pair with baseline {baseline.run_id}, fewer than min_n {min_n}; "
            f"at least {min_n} needed",
        )
    frac = len(ids) / max(len(new), len(base))
    if frac < policy.min_paired_fraction:
        p.notes.append(f"only {frac:.0%} of items could be paired with the baseline")
        p.details.paired_fraction_low = True
        p.warn = True
    a = np.array([new[i] for i in ids])
    b = np.array([base[i] for i in ids])
    if np.array_equal(a, b):
        p.outcome = Outcome.IDENTICAL
        p.verdict.update(difference=0.0, ci_low=0.0, ci_high=0.0)
        p.notes.append(f"vs baseline {baseline.run_id}: all {len(ids)} paired items scored the same in both runs")
        return p
    alpha = spec.alpha or policy.alpha
    test = spec.resolved_test
    if test == "mcnemar" and not (np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
        p.notes.append("scores are not 0/1: paired bootstrap used instead of McNemar")
        test = "bootstrap"
    if test == "mcnemar":
        res = stats.paired_binary(a, b, margin=margin, alpha=alpha)
    else:
        seed = stats.gate_seed(policy.seed, spec.name)
        res = stats.paired_bootstrap(a, b, margin=margin, alpha=alpha, resamples=policy.resamples, seed=seed)
    p.details.note(test=res.method, difference_unit="score (new - baseline)", n=res.n)
    if res.discordant:
        p.details.discordant_lost_gained = list(res.discordant)
    p.comparison, p.raw_p, p.margin_tested = res, res.p_regression, margin
    p.mde = stats.mde_paired(res.sd_diff, res.n, alpha=alpha, power=policy.power)
    if 0 < margin < p.mde:  # against a zero margin no n suffices: the MDE is shown, not judged
        p.n_needed = stats.n_needed_paired(res.n, p.mde, margin)
    return p


def _series(run: RunRecord, stage: Stage, name: str) -> list[float]:
    res = run.stage(stage.value)
    return list(res.samples.get(name) or []) if res is not None else []


def _bad_samples(xs: list[float]) -> int:
    return sum(1 for x in xs if not (math.isfinite(x) and x > 0))


def _compare_samples(p: _Pending, cmp: Source, run: RunRecord, baseline: Baseline, policy: Policy) -> _Pending:
    spec, margin = p.spec, p.spec.margin
    assert margin is not None
    new = _series(run, cmp.stage, cmp.name)
    if not new:
        p.status, p.outcome = GateStatus.NOT_RUN, Outcome.COMPARE_DATA_MISSING
        p.notes.append(f"comparison not run: this run has no '{cmp.name}' samples")
        return p
    same_run = _series(run, cmp.stage, same_run_series(cmp.name))
    if same_run:
        base, drift, against = same_run, 0.0, "the baseline release measured in this run (interleaved)"
        p.details.baseline_samples = "same_run"
    elif baseline.run is not None:
        base, drift = _series(baseline.run, cmp.stage, cmp.name), policy.drift_for(spec)
        against = f"stored baseline {baseline.run_id}"
        p.details.baseline_samples = "stored"
        if not base:
            p.outcome = Outcome.FIRST_RELEASE
            p.notes.append(f"no comparison: baseline {baseline.run_id} recorded no '{cmp.name}' samples")
            return p
    else:
        p.outcome = Outcome.FIRST_RELEASE
        p.notes.append(f"no comparison: {baseline.reason}")
        return p
    bad_new, bad_base = _bad_samples(new), _bad_samples(base)
    if bad_new or bad_base:
        return _inconclusive(
            p, Outcome.INVALID_SAMPLES,
            f"{bad_new} of {len(new)} '{cmp.name}' samples of this run and {bad_base} of {len(base)} of {against} "
            "are NaN, infinite, zero or negative (a latency is a positive number)",
        )
    min_n = policy.min_n_for(spec)
    if len(new) < min_n or len(base) < min_n:
        return _inconclusive(
            p, Outcome.TOO_FEW,
            f"{len(new)} '{cmp.name}' samples in this run and {len(base)} in {against}; at least {min_n} each needed",
        )
    if min(new) == max(new) or min(base) == max(base):
        return _inconclusive(
            p, Outcome.ZERO_VARIANCE,
            f"every '{cmp.name}' sample of {'this run' if min(new) == max(new) else against} is the same value: "
            "not a measurement of a server",
        )
    alpha = spec.alpha or policy.alpha
    tested = (1 + margin) * (1 + drift) - 1
    res = stats.shift_test(new, base, ratio=1 + tested, alpha=alpha)
    p.details.note(
        test="Mann-Whitney U (one-sided) against baseline x (1 + margin)",
        difference_unit="relative shift (new / baseline - 1, Hodges-Lehmann)",
        against=against,
        drift_allowance=drift,
        tested_shift=tested,
        median_new=res.median_new,
        median_baseline=res.median_base,
        median_ratio=res.median_ratio,
        cliffs_delta=res.cliffs_delta,
        cles=res.cles,
        n_new=res.n_new,
        n_baseline=res.n_base,
    )
    p.comparison, p.raw_p, p.margin_tested = res, res.p_regression, tested
    p.mde = stats.mde_relative_shift(res.log_sd, res.n_new, res.n_base, alpha=alpha, power=policy.power)
    if 0 < margin < p.mde:
        p.n_needed = stats.n_needed_shift(min(res.n_new, res.n_base), p.mde, margin)
    return p


def _first_pass(
    spec: GateSpec, run: RunRecord, baseline: Baseline, policy: Policy, calibration: Calibration, env: str | None
) -> _Pending:
    src = spec.parsed_source
    v: dict[str, Any] = {
        "name": spec.name,
        "source": spec.source,
        "threshold": spec.threshold,
        "direction": spec.direction,
        "required": spec.required,
        "key": spec.key,
        "details": VerdictDetails(origin=spec.origin),
    }
    if spec.overrides:
        v["details"].overrides = spec.overrides
    if spec.reason:
        v["details"].policy_reason = spec.reason
    p = _Pending(spec, v)
    problem = _stage_problem(run, src.stage)
    if problem:
        p.status, p.outcome, note = problem
        p.notes.append(note)
        return p
    value = _value(run, src)
    if value is None:
        p.status, p.outcome = GateStatus.NOT_RUN, Outcome.METRIC_MISSING
        p.notes.append(f"not run: {src} not recorded by stage '{src.stage.value}'")
        return p
    if not _finite(value):
        p.status, p.outcome = GateStatus.NOT_RUN, Outcome.INVALID_VALUE
        p.notes.append(f"not run: {src} was recorded as {value} (not a finite number)")
        return p
    v["value"] = value
    if baseline.run is not None:
        bv = _value(baseline.run, src)
        v["baseline"] = bv if bv is not None and _finite(bv) else None
    if spec.threshold is not None:
        ok = value <= spec.threshold if spec.direction == "max" else value >= spec.threshold
        p.abs_ok = bool(ok)
        v["details"].threshold_met = p.abs_ok
        op = "<=" if spec.direction == "max" else ">="
        p.notes.append(
            f"{_fmt(value)} {op} {_fmt(spec.threshold)}" if ok else f"{_fmt(value)} violates {op} {_fmt(spec.threshold)}"
        )
    p.uncalibrated = _check_calibration(run, spec, calibration)
    cmp = spec.parsed_compare
    if env is not None and (src.performance or (cmp is not None and cmp.performance)):
        return _inconclusive(p, Outcome.ENVIRONMENT_DISTURBED, f"{env}: performance not judged on this run")
    if cmp is None or spec.margin is None:
        return p
    problem = _stage_problem(run, cmp.stage)
    if problem:
        p.status, p.outcome = GateStatus.NOT_RUN, Outcome.COMPARE_DATA_MISSING
        p.notes.append(f"comparison {problem[2]}")
        return p
    if cmp.kind == "samples":
        return _compare_samples(p, cmp, run, baseline, policy)
    if baseline.run is None:
        p.outcome = Outcome.FIRST_RELEASE
        p.notes.append(f"no comparison: {baseline.reason}")
        return p
    if not baseline.items_comparable:
        kind = Outcome.RESCORE_FAILED if baseline.kind is BaselineKind.RESCORE_FAILED else Outcome.BASELINE_INCOMPARABLE
        return _inconclusive(p, kind, baseline.reason)
    return _compare_items(p, cmp, run, baseline, policy)


def _action(p: _Pending, outcome: Outcome) -> GateStatus:
    action = p.spec.underpowered_action if outcome is Outcome.UNDERPOWERED else p.spec.inconclusive_action
    return GateStatus.FAIL if action == "fail" else GateStatus.WARN


def _describe_comparison(p: _Pending, p_adj: float | None, policy: Policy, verdict_txt: str) -> str:
    res, spec = p.comparison, p.spec
    assert res is not None and spec.margin is not None
    base_id = p.details.baseline_run_id
    if isinstance(res, stats.PairedResult):
        shown = f"diff {res.mean_diff:+.4f} [{res.ci_low:+.4f}, {res.ci_high:+.4f}] n={res.n}"
        against = f"baseline {base_id}" if base_id else "baseline"
        tested = f"margin {spec.margin:g}"
    else:
        shown = f"shift {res.shift:+.1%} [{res.ci_low:+.1%}, {res.ci_high:+.1%}] n={res.n_new}/{res.n_base}"
        against = p.details.against or "baseline"
        drift = p.details.drift_allowance or 0.0
        tested = (
            f"tested against +{p.margin_tested:.1%} (margin {spec.margin:.0%} and drift allowance {drift:.0%})"
            if drift
            else f"margin {spec.margin:.0%}"
        )
    holm = " (Holm)" if policy.multiplicity == "holm" else ""
    return f"vs {against}: {shown}, p={_fmt(p_adj)}{holm}, {tested}: {verdict_txt}"


def _finish(p: _Pending, p_adj: float | None, policy: Policy) -> GateVerdict:
    spec, v = p.spec, p.verdict
    status = p.status
    if status is None:
        status = GateStatus.PASS if p.abs_ok is not False else GateStatus.FAIL
        outcome = p.outcome or (Outcome.MET if p.abs_ok is not False else Outcome.VIOLATED)
        res = p.comparison
        if outcome is Outcome.ENVIRONMENT_DISTURBED:
            status = _action(p, outcome)  # the threshold cannot be trusted either
        elif res is not None and spec.margin is not None:
            alpha = spec.alpha or policy.alpha
            v["p_value"] = p_adj
            v["mde"] = p.mde
            v["difference"] = res.mean_diff if isinstance(res, stats.PairedResult) else res.shift
            v["ci_low"], v["ci_high"] = res.ci_low, res.ci_high
            p.details.note(p_raw=p.raw_p, alpha=alpha, margin=spec.margin)
            regressed = p_adj is not None and p_adj < alpha
            tested = p.margin_tested if p.margin_tested is not None else spec.margin
            if isinstance(res, stats.PairedResult):
                noninferior = res.ci_low > -tested
            else:
                noninferior = res.ci_high < tested
            if regressed:
                outcome, text = Outcome.REGRESSION, "regression beyond the margin"
                status = GateStatus.FAIL
            elif p.n_needed is not None:
                outcome = Outcome.UNDERPOWERED
                text = (
                    f"underpowered: the smallest change detectable at this n is {_fmt(p.mde)} "
                    f"(power {policy.power:g}), above the margin {spec.margin:g}; n >= {p.n_needed} needed"
                )
                p.details.n_needed = p.n_needed
                status = GateStatus.FAIL if _action(p, outcome) is GateStatus.FAIL else GateStatus.WARN
                status = GateStatus.FAIL if p.abs_ok is False else status
            elif noninferior:
                outcome, text = Outcome.NON_INFERIOR, "non-inferior"
            else:
                outcome = Outcome.NO_REGRESSION_SHOWN
                text = f"no regression beyond the margin shown (a change of {_fmt(p.mde)} past it is caught with power {policy.power:g})"
            p.notes.append(_describe_comparison(p, p_adj, policy, text))
        elif outcome in INCONCLUSIVE:
            action = _action(p, outcome)
            if status is GateStatus.PASS:
                status = action
        if p.warn and status is GateStatus.PASS:
            status = GateStatus.WARN
        p.outcome = outcome
    if p.uncalibrated and status is not GateStatus.NOT_RUN:
        v["details"].would_be = status.value
        status = GateStatus.WARN
        p.notes.insert(0, p.uncalibrated)
        p.details.calibration = Outcome.UNCALIBRATED.value
    if not spec.required:
        p.notes.append(f"optional: {spec.reason}")
    v["details"].outcome = (p.outcome or Outcome.MET).value
    v["status"] = status
    v["reason"] = "; ".join(p.notes)
    return GateVerdict.model_validate(v)


# -- the release ---------------------------------------------------------------------------------


def evaluate(
    policy: Policy,
    run: RunRecord,
    baseline: Baseline | RunRecord | None,
    *,
    sections: SectionSet,
    calibration: Calibration,
) -> Evaluation:
    """Judge `run` under `policy` against `baseline` (None: first release). `sections` are the section
    plug-ins to evaluate the policy's sections with; `calibration` maps a scorer id to its agreement."""
    if baseline is None:
        baseline = first_release(run.target)
    elif isinstance(baseline, RunRecord):
        baseline = given(baseline)
    env = environment_disturbance(run)
    pending = [_first_pass(g, run, baseline, policy, calibration, env) for g in policy.gates]
    for p in pending:
        if baseline.run_id:
            p.details.baseline_run_id = baseline.run_id
    family = [i for i, p in enumerate(pending) if p.raw_p is not None and p.uncalibrated is None]
    p_adj: dict[int, float] = {}
    if policy.multiplicity == "holm":
        adjusted = stats.holm([pending[i].raw_p for i in family])  # type: ignore[misc]
        p_adj = dict(zip(family, adjusted, strict=True))
    verdicts = []
    for i, p in enumerate(pending):
        verdict = _finish(p, p_adj.get(i, p.raw_p), policy)
        verdict.details.holm_family = len(family) if i in p_adj else 0
        verdicts.append(verdict)
    plugins = as_map(sections)
    ctx = SectionContext(baseline=baseline.run, policy_dir=policy.directory)
    for name, section in policy.sections.items():
        meta = policy.section_meta[name]
        plugin = plugins.get(name)
        if plugin is None:
            produced = [
                GateVerdict(name=name, source=f"{name}:", status=GateStatus.NOT_RUN,
                            reason="not run: no evaluator was given for this section")
            ]
        else:
            try:
                produced = plugin.evaluate(section, run, ctx)
            except Exception as exc:  # noqa: BLE001 - a broken evaluator is a gate that did not run, never a pass
                produced = [
                    GateVerdict(
                        name=name,
                        source=f"{name}:",
                        status=GateStatus.NOT_RUN,
                        reason=f"not run: section evaluator failed: {type(exc).__name__}: {exc}",
                    )
                ]
        for verdict in produced:
            verdict.required = meta.required and verdict.required
            verdict.key = meta.key or verdict.key
            if name in policy.section_overrides:
                verdict.details.overrides = policy.section_overrides[name]
            if meta.reason:
                verdict.details.policy_reason = meta.reason
            if not meta.required:
                verdict.reason = f"{verdict.reason}; optional: {meta.reason}"
            verdicts.append(verdict)
    return _decide(verdicts, baseline)


def _label(v: GateVerdict) -> str:
    outcome = v.details.outcome
    extra = ""
    if outcome in {o.value for o in INCONCLUSIVE}:
        extra = f" (inconclusive: {outcome}"
        if v.details.n_needed:
            extra += f", n >= {v.details.n_needed} needed"
        extra += ")"
    elif outcome == Outcome.REGRESSION.value:
        extra = " (regression)"
    return f"{v.name} {v.status.value}{extra}"


def _decide(verdicts: list[GateVerdict], baseline: Baseline) -> Evaluation:
    bad = (GateStatus.FAIL, GateStatus.NOT_RUN)
    blocking = [v for v in verdicts if v.required and v.status in bad]
    key = [v for v in blocking if v.key]
    warnings = [f"{v.name}: {v.reason}" for v in verdicts if v.status is GateStatus.WARN]
    warnings += [
        f"{v.name} ({v.status.value}, optional): {v.reason}" for v in verdicts if not v.required and v.status in bad
    ]
    required = [v for v in verdicts if v.required]
    if blocking:
        parts = []
        if key:
            parts.append("key gate " + ", ".join(_label(v) for v in key))
        rest = [v for v in blocking if not v.key]
        if rest:
            parts.append("required gate " + ", ".join(_label(v) for v in rest))
        decision, reason = Decision.BLOCKED, "blocked: " + "; ".join(parts)
    else:
        decision = Decision.PASS
        reason = f"pass: all {len(required)} required gates passed"
        if warnings:
            reason += f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})"
    if baseline.kind is not BaselineKind.SAME:
        reason += f" [{baseline.reason}]"
    return Evaluation(verdicts, decision, reason, warnings, baseline)
