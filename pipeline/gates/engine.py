"""Evaluate a policy against one run (and its baseline): verdicts per gate, then one decision.

A pass means "shown safe to ship". Three decisions (docs/GATES.md states every rule for policy authors):
`blocked` (a required gate failed or did not run), `inconclusive` (nothing failed, but a required gate
could not be shown to hold), `pass` (every required gate was shown to hold). Blocked wins over
inconclusive, inconclusive over pass; only a pass is ever promoted or signed as a pass.

Rules, in order of precedence:
- A gate whose stage or metric is missing, skipped or errored is `not_run`; a stage that *failed*
  (the thing under test misbehaved) makes its gates `fail`; a NaN/infinite value is `not_run`.
  `not_run` blocks exactly like `fail` unless the gate is optional (with a reason).
- Absolute threshold: `max` means value <= threshold, `min` value >= threshold.
- A disturbed bench machine (other work took a share s of it: pipeline/bench/environment.py) only makes
  a release look slower. A performance threshold that is met stays met. One that is violated is judged on
  the best the release could have shown had the disturbance slowed it by the most it can explain,
  2 / (1 - s) (latency divided by it, throughput multiplied, goodput recounted from the requests with
  their latencies divided by it): still violated, it fails (never waived); otherwise, or when s >= 0.5
  or unknown, it is inconclusive. Comparisons of performance series on a disturbed run are inconclusive.
- Margin (non-inferiority against the baseline): a regression test per gate against the margin
  (paired bootstrap, McNemar/Tango, shifted Mann-Whitney for a shift of the distribution, a quantile
  test for a p90+ percentile; see stats.py) at the gate's alpha, or Holm-adjusted with
  `multiplicity: holm`. A regression shown beyond the margin fails. A key gate carries the burden of
  proof: it passes only when the one-sided bound clears the margin (`non_inferior`); otherwise it is
  inconclusive. A comparison is underpowered (inconclusive) when it would not catch a regression of
  twice its margin with the policy's power, computed from a spread a regression cannot inflate (the
  favourable half of the paired differences, or the baseline's own latency spread). Latency against a
  stored baseline is tested against (1 + margin)(1 + drift allowance); against a baseline measured
  in the same run, against 1 + margin.
- A refusal-type (0/1) comparison scored by a calibrated scorer tests the margin x (1 - 2 eps), eps
  the scorer's plausible error rate (1 - the lower end of its agreement interval): misclassifying
  with rate eps attenuates a true difference by (1 - 2 eps), so a true drop at the margin shows as a
  smaller one.
- Per-category check (`category_margin`): every ground-truth category with at least
  `category_min_n` paired items is tested for a drop beyond the category margin (Holm across the
  categories); any such category fails the gate, named, whatever the average does.
- A scorer-based gate with `min_agreement` is trusted only when its scorer's calibration was measured
  on held-out labels and the lower end of its agreement interval reaches the minimum. Otherwise a
  required gate is inconclusive (`uncalibrated`), an optional one only reports.
- First release (no baseline): a gate with a threshold is judged on it; a gate with only a margin
  has shown nothing (`no_baseline`, inconclusive) unless the run carries a recorded human approval.
- Every inconclusive outcome follows the gate's `on_inconclusive` (`on_underpowered` for an
  underpowered one): `inconclusive` by default, or `fail`.
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
from pipeline.schemas.bench import BenchDetails
from pipeline.schemas.eval import EvalDetails
from pipeline.schemas.gate import Approval, GateStatus, GateVerdict, VerdictDetails
from pipeline.schemas.trust import ScorerTrust

Calibration = Callable[[str], ScorerTrust | None]  # scorer id -> how far its verdicts can be trusted
DEFAULT_CATEGORY_MIN_N = 5
_RANK = {GateStatus.PASS: 0, GateStatus.WARN: 1, GateStatus.INCONCLUSIVE: 2, GateStatus.NOT_RUN: 3,
         GateStatus.FAIL: 4}


@dataclass
class Evaluation:
    verdicts: list[GateVerdict]
    decision: Decision
    reason: str
    warnings: list[str]
    baseline: Baseline
    approval: Approval | None = None  # the first-release approval the verdicts relied on

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "reason": self.reason,
            "warnings": self.warnings,
            "baseline": self.baseline.to_json(),
            "approval": self.approval.model_dump(mode="json") if self.approval else None,
            "gates": [v.model_dump(mode="json") for v in self.verdicts],
        }


@dataclass(frozen=True)
class Disturbance:
    """The bench machine was disturbed: why, and the share of it other work took (None: unknown)."""

    text: str
    share: float | None


@dataclass
class _Pending:
    spec: GateSpec
    verdict: GateVerdict
    notes: list[str] = field(default_factory=list)
    status: GateStatus | None = None  # decided before any comparison (not_run, stage failed)
    outcome: Outcome | None = None  # an inconclusive or first-release outcome of the comparison
    abs_ok: bool | None = None
    comparison: stats.PairedResult | stats.ShiftResult | stats.QuantileResult | None = None
    raw_p: float | None = None
    margin_tested: float | None = None  # the margin the test used (drift allowance, scorer error)
    target: float | None = None  # the regression beyond margin_tested the comparison must catch
    mde: float | None = None
    n_needed: int | None = None
    untrusted: str | None = None
    scorer_error: float | None = None
    disturbed: Disturbance | None = None
    best_case: float | None = None  # a violated performance threshold: the best value a quiet machine could give
    collapsed: list[str] = field(default_factory=list)
    approval: Approval | None = None
    warn: bool = False  # passed, but a person should look (a baseline that pairs only some items)

    @property
    def details(self) -> VerdictDetails:
        return self.verdict.details


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


def item_scores(res: StageResult | None, dim: str, subset: str | None = None) -> dict[str, float]:
    """Per-item scores of one dimension (only items with `subset` as expected behaviour, when given),
    NaN/inf kept so that the caller can refuse them by name."""
    if res is None:
        return {}
    out: dict[str, float] = {}
    for it in res.items:
        if subset is not None and it.expected_behaviour != subset:
            continue
        s = _item_score(it, dim)
        if s is not None:
            out[it.item_id] = float(s)
    return out


def _categories(res: StageResult | None) -> dict[str, str]:
    return {it.item_id: it.category for it in res.items if it.category} if res is not None else {}


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
    details = ev.details_as(EvalDetails) if ev is not None else None
    info = details.scorers.get(dim) if details is not None else None
    return info.id if info is not None else None


def _check_calibration(run: RunRecord, spec: GateSpec, calibration: Calibration) -> tuple[str | None, float | None]:
    """(None, eps) when the scorer is trusted (eps its plausible error rate); else (why not, None)."""
    dim = spec.scorer_dimension
    if spec.min_agreement is None or dim is None:
        return None, None
    sid = _scorer_id(run, dim)
    if sid is None:
        return f"uncalibrated: not trusted (the eval stage names no scorer for '{dim}')", None
    trust = calibration(sid)
    if trust is None:
        return f"uncalibrated: not trusted (no calibration on record for scorer '{sid}')", None
    shown = (f"scorer '{sid}' agrees with human labels on {trust.agreement:.1%} of {trust.n} "
             f"(95% interval [{trust.lower:.1%}, {trust.upper:.1%}])")
    if not trust.held_out:
        return f"uncalibrated: not trusted ({shown}, measured on labels it was trained on)", None
    if trust.lower < spec.min_agreement:
        return (f"uncalibrated: not trusted ({shown}; the lower end is below min_agreement "
                f"{spec.min_agreement:.1%})"), None
    if trust.error_rate >= 0.5:
        return f"uncalibrated: not trusted ({shown}: no better than chance)", None
    return None, trust.error_rate


def environment_disturbance(run: RunRecord) -> Disturbance | None:
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
        ("env_others_during", "other processes used {:.0%} of the CPUs during it"),
        ("env_load_before", "load {:.2f} per CPU before it"),
    ):
        v = m.get(key)
        if v is not None:
            parts.append(text.format(v))
    share = m.get("env_disturbance")
    text = "environment disturbed (" + ", ".join(parts) + ")" if parts else "environment disturbed"
    return Disturbance(text, None if share is None else float(share))


# -- one gate ----------------------------------------------------------------------------------


def _inconclusive(p: _Pending, outcome: Outcome, note: str) -> _Pending:
    p.outcome = outcome
    p.notes.append(f"inconclusive ({outcome.value}): {note}")
    return p


def _category_check(p: _Pending, run: RunRecord, base_run: RunRecord, cmp: Source, ids: list[str],
                    a: np.ndarray, b: np.ndarray, policy: Policy, binary: bool) -> None:
    """Test every category with enough paired items for a drop beyond the category margin (Holm)."""
    spec = p.spec
    assert spec.category_margin is not None
    bound = spec.category_margin * (1 - 2 * (p.scorer_error or 0.0) if binary else 1.0)
    cats = _categories(run.stage(cmp.stage.value)) or _categories(base_run.stage(cmp.stage.value))
    min_n = spec.category_min_n or DEFAULT_CATEGORY_MIN_N
    groups: dict[str, list[int]] = {}
    for i, item_id in enumerate(ids):
        c = cats.get(item_id)
        if c:
            groups.setdefault(c, []).append(i)
    tested = {c: idx for c, idx in sorted(groups.items()) if len(idx) >= min_n}
    p.details.categories_checked = len(tested)
    if not tested:
        p.notes.append(f"per-category check: no category has {min_n} or more paired items")
        return
    alpha = spec.alpha or policy.alpha
    raw: list[float] = []
    for c, idx in tested.items():
        x, y = a[idx], b[idx]
        if np.array_equal(x, y):
            raw.append(1.0)
        elif binary:
            raw.append(stats.paired_binary(x, y, margin=bound, alpha=alpha).p_regression)
        else:
            seed = stats.gate_seed(policy.seed, f"{spec.name}/{c}")
            raw.append(stats.paired_bootstrap(x, y, margin=bound, alpha=alpha, resamples=policy.resamples,
                                              seed=seed).p_regression)
    adjusted = stats.holm(raw)
    names = list(tested)
    for c, q in zip(names, adjusted, strict=True):
        if q < alpha:
            idx = tested[c]
            p.collapsed.append(f"{c} ({float(np.mean(a[idx] - b[idx])):+.2f} on {len(idx)} items, p={_fmt(q)})")
    p.details.categories = [c.split(" (")[0] for c in p.collapsed] or None
    if p.collapsed:
        p.notes.append(f"categories dropped beyond the category margin {bound:.3g} (Holm over {len(names)} "
                       f"categories): {', '.join(p.collapsed)}")
    else:
        p.notes.append(f"no category of {len(names)} dropped beyond {bound:.3g}")


def _compare_items(p: _Pending, cmp: Source, run: RunRecord, baseline: Baseline, policy: Policy) -> _Pending:
    spec, margin = p.spec, p.spec.margin
    assert margin is not None and baseline.run is not None
    subset = spec.subset
    new = item_scores(run.stage(cmp.stage.value), cmp.name, subset)
    what = f"'{cmp.name}' scores" + (f" of should-{subset} items" if subset else "")
    if subset:
        p.details.subset = subset
    if not new:
        p.status, p.outcome = GateStatus.NOT_RUN, Outcome.COMPARE_DATA_MISSING
        p.notes.append(f"comparison not run: this run has no per-item {what}")
        return p
    base = item_scores(baseline.run.stage(cmp.stage.value), cmp.name, subset)
    ids = sorted(set(new) & set(base))
    bad_new = sum(1 for v in new.values() if not _finite(v))
    bad_base = sum(1 for i in ids if not _finite(base[i]))
    p.details.paired_items = len(ids)
    if bad_new or bad_base:
        return _inconclusive(
            p, Outcome.INVALID_SAMPLES,
            f"{bad_new} of this run's and {bad_base} of the baseline's {what} are NaN or infinite",
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
    test = spec.resolved_test
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    if spec.category_margin is not None:
        _category_check(p, run, baseline.run, cmp, ids, a, b, policy, binary)
    if np.array_equal(a, b):
        p.outcome = Outcome.IDENTICAL
        p.verdict.difference, p.verdict.ci_low, p.verdict.ci_high = 0.0, 0.0, 0.0
        p.notes.append(f"vs baseline {baseline.run_id}: all {len(ids)} paired items scored the same in both runs")
        return p
    alpha = spec.alpha or policy.alpha
    if test == "mcnemar" and not binary:
        p.notes.append("scores are not 0/1: paired bootstrap used instead of McNemar")
        test = "bootstrap"
    # a 0/1 verdict misclassified with rate eps shows a true drop d as (1 - 2 eps) d
    tested = margin * (1 - 2 * p.scorer_error) if binary and p.scorer_error else margin
    if test == "mcnemar":
        res = stats.paired_binary(a, b, margin=tested, alpha=alpha)
    else:
        seed = stats.gate_seed(policy.seed, spec.name)
        res = stats.paired_bootstrap(a, b, margin=tested, alpha=alpha, resamples=policy.resamples, seed=seed)
    p.details.note(test=res.method, difference_unit="score (new - baseline)", n=res.n, tested_margin=tested)
    if res.discordant:
        p.details.discordant_lost_gained = list(res.discordant)
    p.comparison, p.raw_p, p.margin_tested = res, res.p_regression, tested
    sd = stats.regression_proof_sd(a - b)
    p.details.planning_sd = sd
    p.mde = stats.mde_paired(sd, res.n, alpha=alpha, power=policy.power)
    p.target = tested  # twice the margin is caught: tested + target = 2 x tested
    if 0 < tested < p.mde:  # against a zero margin no n suffices: the MDE is shown, not judged
        p.n_needed = stats.n_needed_paired(res.n, p.mde, tested)
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
    if p.disturbed is not None:
        return _inconclusive(p, Outcome.ENVIRONMENT_DISTURBED,
                             f"{p.disturbed.text}: the comparison with {against} is not judged on this run")
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
    p.target = stats.latency_target(margin, tested)
    common = {"against": against, "drift_allowance": drift, "tested_shift": tested, "tested_margin": tested}
    if spec.resolved_test == "quantile":
        q = spec.parsed_source.quantile
        assert q is not None
        qres = stats.quantile_test(new, base, q=q, ratio=1 + tested, alpha=alpha)
        p.details.note(
            test=f"quantile test of the p{round(q * 100)} (Fisher's exact test of the samples above the common "
                 "cut) against baseline x (1 + margin)",
            difference_unit="relative shift (new / baseline - 1, of the quantile)",
            quantile=q, exceed_new_baseline=[qres.exceed_new, qres.exceed_base], n_new=qres.n_new,
            n_baseline=qres.n_base, **common,
        )
        p.comparison, p.raw_p, p.margin_tested = qres, qres.p_regression, tested
        p.details.planning_sd = stats.baseline_log_sd(base)
        p.mde = stats.mde_quantile(qres.log_sparsity, q, qres.n_new, qres.n_base, alpha=alpha, power=policy.power)
        n_side = min(qres.n_new, qres.n_base)
    else:
        res = stats.shift_test(new, base, ratio=1 + tested, alpha=alpha)
        p.details.note(
            test="Mann-Whitney U (one-sided) against baseline x (1 + margin)",
            difference_unit="relative shift (new / baseline - 1, Hodges-Lehmann)",
            median_new=res.median_new, median_baseline=res.median_base, median_ratio=res.median_ratio,
            cliffs_delta=res.cliffs_delta, cles=res.cles, n_new=res.n_new, n_baseline=res.n_base, **common,
        )
        p.comparison, p.raw_p, p.margin_tested = res, res.p_regression, tested
        sd = stats.baseline_log_sd(base)
        p.details.planning_sd = sd
        p.mde = stats.mde_relative_shift(sd, res.n_new, res.n_base, alpha=alpha, power=policy.power)
        n_side = min(res.n_new, res.n_base)
    if p.target > 0 and math.log1p(p.mde) > p.target:
        p.n_needed = stats.n_needed_log(n_side, p.mde, p.target)
    return p


def _first_pass(
    spec: GateSpec, run: RunRecord, baseline: Baseline, policy: Policy, calibration: Calibration,
    env: Disturbance | None, approval: Approval | None,
) -> _Pending:
    src = spec.parsed_source
    # Typed from the start (every assignment validated); not run until the gate is judged.
    v = GateVerdict(name=spec.name, source=spec.source, status=GateStatus.NOT_RUN, threshold=spec.threshold,
                    direction=spec.direction, required=spec.required, key=spec.key,
                    details=VerdictDetails(origin=spec.origin))
    if spec.overrides:
        v.details.overrides = spec.overrides
    if spec.reason:
        v.details.policy_reason = spec.reason
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
    v.value = value
    if baseline.run is not None:
        bv = _value(baseline.run, src)
        v.baseline = bv if bv is not None and _finite(bv) else None
    cmp = spec.parsed_compare
    if env is not None and (src.performance or (cmp is not None and cmp.performance)):
        p.disturbed = env
        p.details.disturbance = env.share
    if spec.threshold is not None:
        ok = value <= spec.threshold if spec.direction == "max" else value >= spec.threshold
        p.abs_ok = bool(ok)
        v.details.threshold_met = p.abs_ok
        op = "<=" if spec.direction == "max" else ">="
        p.notes.append(
            f"{_fmt(value)} {op} {_fmt(spec.threshold)}" if ok else f"{_fmt(value)} violates {op} {_fmt(spec.threshold)}"
        )
        share = env.share if env is not None else None
        if not ok and p.disturbed is not None and share is not None and share < MAX_JUDGED_DISTURBANCE:
            p.best_case = _best_case(run, src, value, slowdown_bound(share))
    p.untrusted, p.scorer_error = _check_calibration(run, spec, calibration)
    if p.scorer_error is not None:
        p.details.scorer_error = p.scorer_error
    if cmp is None or spec.margin is None:
        return p
    problem = _stage_problem(run, cmp.stage)
    if problem:
        p.status, p.outcome = GateStatus.NOT_RUN, Outcome.COMPARE_DATA_MISSING
        p.notes.append(f"comparison {problem[2]}")
        return p
    if cmp.kind == "samples":
        _compare_samples(p, cmp, run, baseline, policy)
    elif baseline.run is None:
        p.outcome = Outcome.FIRST_RELEASE
        p.notes.append(f"no comparison: {baseline.reason}")
    elif not baseline.items_comparable:
        kind = Outcome.RESCORE_FAILED if baseline.kind is BaselineKind.RESCORE_FAILED else Outcome.BASELINE_INCOMPARABLE
        _inconclusive(p, kind, baseline.reason)
    else:
        _compare_items(p, cmp, run, baseline, policy)
    if p.outcome is Outcome.FIRST_RELEASE and spec.threshold is None:
        if approval is not None:
            p.outcome, p.approval = Outcome.APPROVED, approval
            p.notes.append(f"no baseline and no threshold: let through by {approval.by} "
                           f"({approval.at:%Y-%m-%d %H:%M} UTC): {approval.reason}")
            p.details.approval = approval.by
        else:
            _inconclusive(p, Outcome.NO_BASELINE, "no baseline to compare with and no threshold: nothing was shown; "
                          "give the gate a threshold that means something for this target, or record an approval "
                          "(llmgate gate --approve-first-release)")
    return p


def _action(p: _Pending, outcome: Outcome) -> GateStatus:
    action = p.spec.underpowered_action if outcome is Outcome.UNDERPOWERED else p.spec.inconclusive_action
    return GateStatus.FAIL if action == "fail" else GateStatus.INCONCLUSIVE


def _describe_comparison(p: _Pending, p_adj: float | None, policy: Policy, verdict_txt: str) -> str:
    res, spec = p.comparison, p.spec
    assert res is not None and spec.margin is not None
    base_id = p.details.baseline_run_id
    if isinstance(res, stats.PairedResult):
        shown = f"diff {res.mean_diff:+.4f} [{res.ci_low:+.4f}, {res.ci_high:+.4f}] n={res.n}"
        against = f"baseline {base_id}" if base_id else "baseline"
        tested = f"margin {spec.margin:g}"
        if p.margin_tested is not None and p.margin_tested != spec.margin:
            tested += (f", tested at {p.margin_tested:.4g} for the scorer's error rate {p.scorer_error:.1%} "
                       "(x (1 - 2 eps))")
    else:
        if isinstance(res, stats.ShiftResult):
            shown = f"shift {res.shift:+.1%} [{res.ci_low:+.1%}, {res.ci_high:+.1%}] n={res.n_new}/{res.n_base}"
        else:
            shown = (f"p{round(res.q * 100)} {res.quantile_new:.4g} vs {res.quantile_base:.4g} "
                     f"({res.shift:+.1%} [{res.ci_low:+.1%}, {res.ci_high:+.1%}]), above the common cut "
                     f"{res.exceed_new} of {res.n_new} vs {res.exceed_base} of {res.n_base}")
        against = p.details.against or "baseline"
        drift = p.details.drift_allowance or 0.0
        tested = (
            f"tested against +{p.margin_tested:.1%} (margin {spec.margin:.0%} and drift allowance {drift:.0%})"
            if drift
            else f"margin {spec.margin:.0%}"
        )
    holm = " (Holm)" if policy.multiplicity == "holm" else ""
    return f"vs {against}: {shown}, p={_fmt(p_adj)}{holm}, {tested}: {verdict_txt}"


def _comparison_status(p: _Pending, p_adj: float | None, policy: Policy) -> tuple[GateStatus, Outcome]:
    """The status and outcome of a comparison that ran; records its figures in the verdict."""
    spec, v, res = p.spec, p.verdict, p.comparison
    assert res is not None and spec.margin is not None
    alpha = spec.alpha or policy.alpha
    v.p_value = p_adj
    v.mde = p.mde
    v.difference = res.mean_diff if isinstance(res, stats.PairedResult) else res.shift
    v.ci_low, v.ci_high = res.ci_low, res.ci_high
    p.details.note(p_raw=p.raw_p, alpha=alpha, margin=spec.margin)
    tested = p.margin_tested if p.margin_tested is not None else spec.margin
    noninferior = res.ci_low > -tested if isinstance(res, stats.PairedResult) else res.ci_high < tested
    catch = f"{2 * spec.margin:g}" if isinstance(res, stats.PairedResult) else f"+{2 * spec.margin:.0%}"
    if p_adj is not None and p_adj < alpha:
        status, outcome, text = GateStatus.FAIL, Outcome.REGRESSION, "regression beyond the margin"
    elif noninferior:
        status, outcome, text = GateStatus.PASS, Outcome.NON_INFERIOR, "non-inferior"
    elif p.n_needed is not None:
        outcome = Outcome.UNDERPOWERED
        status = _action(p, outcome)
        text = (f"underpowered: a regression of {catch} is caught with power {policy.power:g} only with "
                f">= {p.n_needed} (the smallest change past the tested margin detectable here is {_fmt(p.mde)}, "
                f"from the spread a regression cannot inflate); n >= {p.n_needed} needed")
        p.details.n_needed = p.n_needed
    elif spec.key:
        outcome = Outcome.NOT_SHOWN_NON_INFERIOR
        status = _action(p, outcome)
        text = ("not shown non-inferior: a key gate passes only when its one-sided bound clears the margin, and "
                "the data leave a regression beyond it plausible")
    else:
        status, outcome = GateStatus.PASS, Outcome.NO_REGRESSION_SHOWN
        text = (f"no regression beyond the margin shown (powered: a regression of {catch} is caught with power "
                f"{policy.power:g})")
    p.notes.append(_describe_comparison(p, p_adj, policy, text))
    return status, outcome


# A machine that lost a share s of its CPU time to other work runs CPU-bound work at most 1 / (1 - s) times
# slower; scheduling delays add to that for a streaming server, so twice that is allowed. Beyond half the
# machine taken, no performance threshold is judged.
DISTURBANCE_SAFETY = 2.0
MAX_JUDGED_DISTURBANCE = 0.5


def slowdown_bound(share: float) -> float:
    """The largest slowdown a disturbance of `share` is allowed to explain."""
    return DISTURBANCE_SAFETY / (1 - share)


def _best_case(run: RunRecord, src: Source, value: float, factor: float) -> float | None:
    """What the release could at best have shown had the disturbance not slowed it by more than `factor`:
    latencies divided by it, throughputs multiplied, goodput recounted from the requests with their
    latencies divided by it against the bench's SLOs; None when that cannot be worked out."""
    if src.kind == "samples" or (src.info is not None and src.info.unit == "s"):
        return value / factor
    if src.info is not None and src.info.unit in ("tokens/s", "requests/s"):
        return value * factor
    if src.kind != "metric" or src.name != "goodput":
        return None
    bench = run.stage(Stage.BENCH.value)
    details = bench.details_as(BenchDetails) if bench is not None else None
    if bench is None or details is None or not details.requests:
        return None
    ttft, tpot, e2e = (bench.samples.get(k) or [] for k in ("ttft_s", "tpot_s", "e2e_s"))
    if not ttft:
        return 0.0
    met = []
    for series, slo in ((ttft, details.slo.get("ttft_s")), (tpot, details.slo.get("tpot_s")),
                        (e2e, details.slo.get("e2e_s"))):
        unmeasured = len(ttft) - len(series)  # one-token answers have no TPOT: they meet a TPOT SLO
        met.append(len(ttft) if slo is None else sum(1 for x in series if x / factor <= slo) + max(0, unmeasured))
    return min(met) / details.requests  # no request meets every SLO more often than it meets one


def _threshold_status(p: _Pending) -> tuple[GateStatus, Outcome] | None:
    spec = p.spec
    if p.abs_ok is None:
        return None
    if p.abs_ok:
        return GateStatus.PASS, Outcome.MET
    if p.disturbed is None:
        return GateStatus.FAIL, Outcome.VIOLATED
    share, best, thr = p.disturbed.share, p.best_case, spec.threshold
    assert thr is not None
    undecided = f"inconclusive ({Outcome.ENVIRONMENT_DISTURBED.value}): {p.disturbed.text}"
    if share is None:
        p.notes.append(f"{undecided}; how much of the machine other work took is unknown")
    elif share >= MAX_JUDGED_DISTURBANCE:
        p.notes.append(f"{undecided}; other work took {share:.0%} of the machine, too much to judge a "
                       "performance threshold at all")
    elif best is None:
        p.notes.append(f"{undecided}; what the release would have shown on a quiet machine cannot be bounded")
    else:
        p.details.explainable_bound = best
        factor = slowdown_bound(share)
        beyond = best > thr if spec.direction == "max" else best < thr
        if beyond:
            p.notes.append(f"{p.disturbed.text}, but even granting it a slowdown of x{factor:.2f} (other work took "
                           f"{share:.0%} of the machine) the release would show {_fmt(best)}, still violating "
                           f"{_fmt(thr)}: judged, not waived")
            return GateStatus.FAIL, Outcome.VIOLATED_DISTURBED
        p.notes.append(f"{undecided}; a slowdown of up to x{factor:.2f} (other work took {share:.0%} of the "
                       f"machine) can explain it: on a quiet machine the release could show {_fmt(best)}")
    return _action(p, Outcome.ENVIRONMENT_DISTURBED), Outcome.ENVIRONMENT_DISTURBED


def _finish(p: _Pending, p_adj: float | None, policy: Policy) -> GateVerdict:
    spec, v = p.spec, p.verdict
    status, outcome = p.status, p.outcome
    if status is None:
        parts: list[tuple[GateStatus, Outcome]] = []  # the comparison names the outcome of equal statuses
        if p.comparison is not None and spec.margin is not None:
            parts.append(_comparison_status(p, p_adj, policy))
        elif p.outcome in INCONCLUSIVE:
            parts.append((_action(p, p.outcome), p.outcome))  # type: ignore[arg-type]
        elif p.outcome in (Outcome.IDENTICAL, Outcome.APPROVED):
            parts.append((GateStatus.PASS, p.outcome))  # type: ignore[arg-type]
        if p.collapsed:
            parts.append((GateStatus.FAIL, Outcome.CATEGORY_REGRESSION))
        thr = _threshold_status(p)
        if thr is not None:
            parts.append(thr)
        if not parts:  # a threshold-less gate whose comparison is first_release is handled above
            parts.append((GateStatus.PASS, p.outcome or Outcome.MET))
        status, outcome = max(parts, key=lambda so: _RANK[so[0]])
        if outcome is Outcome.MET and p.outcome is Outcome.FIRST_RELEASE:
            outcome = Outcome.FIRST_RELEASE
        if p.warn and status is GateStatus.PASS:
            status = GateStatus.WARN
    if p.untrusted and p.status is None:  # a failed or missing stage stays what it is
        v.details.would_be = status.value
        v.details.calibration = Outcome.UNCALIBRATED.value
        if spec.required:
            status, outcome = _action(p, Outcome.UNCALIBRATED), Outcome.UNCALIBRATED
            p.notes.insert(0, f"{p.untrusted}: its figures show nothing either way")
        else:
            status = GateStatus.WARN
            p.notes.insert(0, f"{p.untrusted}: reported only")
    if not spec.required:
        p.notes.append(f"optional: {spec.reason}")
    v.details.outcome = (outcome or Outcome.MET).value
    v.status = status
    v.reason = "; ".join(p.notes)
    return v


# -- the release ---------------------------------------------------------------------------------


def evaluate(
    policy: Policy,
    run: RunRecord,
    baseline: Baseline | RunRecord | None,
    *,
    sections: SectionSet,
    calibration: Calibration,
    approval: Approval | None = None,
) -> Evaluation:
    """Judge `run` under `policy` against `baseline` (None: first release). `sections` are the section
    plug-ins to evaluate the policy's sections with; `calibration` maps a scorer id to how far it can be
    trusted; `approval` is a person's recorded approval of a first release (used only without a baseline)."""
    if baseline is None:
        baseline = first_release(run.target)
    elif isinstance(baseline, RunRecord):
        baseline = given(baseline)
    env = environment_disturbance(run)
    usable = approval if baseline.run is None else None
    pending = [_first_pass(g, run, baseline, policy, calibration, env, usable) for g in policy.gates]
    for p in pending:
        if baseline.run_id:
            p.details.baseline_run_id = baseline.run_id
    family = [i for i, p in enumerate(pending) if p.raw_p is not None and p.untrusted is None]
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
    used = next((p.approval for p in pending if p.approval is not None), None)
    return _decide(verdicts, baseline, used)


def _label(v: GateVerdict) -> str:
    outcome = v.details.outcome
    extra = ""
    if outcome in {o.value for o in INCONCLUSIVE}:
        extra = f" ({outcome}" if v.status is GateStatus.INCONCLUSIVE else f" (inconclusive: {outcome}"
        if v.details.n_needed:
            extra += f", n >= {v.details.n_needed} needed"
        extra += ")"
    elif outcome == Outcome.REGRESSION.value:
        extra = " (regression)"
    elif outcome == Outcome.CATEGORY_REGRESSION.value:
        extra = f" (categories: {', '.join(v.details.categories or [])})"
    elif outcome == Outcome.VIOLATED_DISTURBED.value:
        extra = " (beyond what the disturbed machine explains)"
    return f"{v.name} {v.status.value}{extra}"


def _decide(verdicts: list[GateVerdict], baseline: Baseline, approval: Approval | None) -> Evaluation:
    bad = (GateStatus.FAIL, GateStatus.NOT_RUN)
    blocking = [v for v in verdicts if v.required and v.status in bad]
    doubt = [v for v in verdicts if v.required and v.status is GateStatus.INCONCLUSIVE]
    key = [v for v in blocking if v.key]
    warnings = [f"{v.name}: {v.reason}" for v in verdicts if v.status is GateStatus.WARN]
    warnings += [
        f"{v.name} ({v.status.value}, optional): {v.reason}"
        for v in verdicts
        if not v.required and v.status in (*bad, GateStatus.INCONCLUSIVE)
    ]
    required = [v for v in verdicts if v.required]
    doubt_text = ", ".join(_label(v) for v in sorted(doubt, key=lambda v: not v.key))
    if blocking:
        parts = []
        if key:
            parts.append("key gate " + ", ".join(_label(v) for v in key))
        rest = [v for v in blocking if not v.key]
        if rest:
            parts.append("required gate " + ", ".join(_label(v) for v in rest))
        if doubt:
            parts.append("also not shown: " + doubt_text)
        decision, reason = Decision.BLOCKED, "blocked: " + "; ".join(parts)
    elif doubt:
        decision = Decision.INCONCLUSIVE
        reason = (f"inconclusive: {len(doubt)} required gate{'s' if len(doubt) != 1 else ''} could not be shown to "
                  f"hold ({doubt_text}); not shown safe to ship, not promotable: measure again (a quiet machine, "
                  "more requests or items) or fix what the verdicts name")
    else:
        decision = Decision.PASS
        reason = f"pass: all {len(required)} required gates passed"
        if warnings:
            reason += f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})"
    if approval is not None:
        reason += f" [first release approved by {approval.by} at {approval.at:%Y-%m-%d %H:%M} UTC: {approval.reason}]"
    if baseline.kind is not BaselineKind.SAME:
        reason += f" [{baseline.reason}]"
    return Evaluation(verdicts, decision, reason, warnings, baseline, approval)
