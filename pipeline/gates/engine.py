"""Evaluate a policy against one run (and its baseline): verdicts per gate, then one decision.

Rules, in order of precedence:
- A gate whose stage or metric is missing is `not_run`; a stage that was skipped (tool absent) or
  errored is `not_run` too, and a stage that *failed* (the thing under test misbehaved) is `fail`.
  `not_run` blocks exactly like `fail` unless the policy marks the gate optional (with a reason).
- Absolute threshold: `max` means value <= threshold, `min` value >= threshold.
- Margin (non-inferiority against the baseline): a regression test per gate (paired bootstrap,
  McNemar, Mann-Whitney; see stats.py), Holm-adjusted across the gates of this release. A gate
  fails when the data show a regression beyond the margin; it passes when they show
  non-inferiority (one-sided bound inside the margin); otherwise it is inconclusive: `warn` (or
  `fail` with `on_inconclusive: fail`). A margin below the minimum detectable effect warns.
- A scorer-based gate with `min_agreement` whose scorer's calibration is below it (or unknown) is
  `warn` "uncalibrated: reported, not trusted" and does not gate.
- The release passes only if every required gate passes (warn counts as passed); a failed key gate
  is named first in the decision.
Deterministic: every resample is seeded from the policy seed and the gate name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.gates import stats
from pipeline.gates.baseline import Baseline, BaselineKind, first_release
from pipeline.gates.policy import GateSpec, Policy
from pipeline.gates.registry import Source
from pipeline.gates.sections import SectionContext, sections
from pipeline.models import Decision, GateStatus, GateVerdict, ItemResult, RunRecord, StageResult, StageStatus

Calibration = Callable[[str], float | None]  # scorer id -> agreement with human labels (0..1) or None


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
    abs_ok: bool | None = None
    comparison: stats.PairedResult | stats.RankResult | None = None
    raw_p: float | None = None
    uncalibrated: str | None = None
    compare_blocked: bool = False  # comparison requested but the new run lacks its data


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}"


# -- reading the run ---------------------------------------------------------------------------


def _stage_problem(run: RunRecord, stage: str) -> tuple[GateStatus, str] | None:
    res = run.stage(stage)
    if res is None:
        return GateStatus.NOT_RUN, f"not run: stage '{stage}' has no result in this run"
    if res.status is StageStatus.SKIPPED:
        return GateStatus.NOT_RUN, f"not run: stage '{stage}' skipped ({res.reason or 'no reason given'})"
    if res.status is StageStatus.ERROR:
        return GateStatus.NOT_RUN, f"not run: stage '{stage}' errored ({res.reason or 'no reason given'})"
    if res.status is StageStatus.FAILED:
        return GateStatus.FAIL, f"stage '{stage}' failed: {res.reason or 'no reason given'}"
    return None


def _item_score(item: ItemResult, dim: str) -> float | None:
    """A dimension's score; a whole-item failure counts as 0 (a failure is never silently missing)."""
    if dim in item.scores:
        return item.scores[dim]
    if item.error is not None or dim in item.errors:
        return 0.0
    return None  # the dimension does not apply to this item


def item_scores(res: StageResult | None, dim: str) -> dict[str, float]:
    if res is None:
        return {}
    out: dict[str, float] = {}
    for it in res.items:
        s = _item_score(it, dim)
        if s is not None and not math.isnan(s):
            out[it.item_id] = float(s)
    return out


def _value(run: RunRecord, src: Source) -> float | None:
    res = run.stage(src.stage)
    if res is None:
        return None
    if src.kind == "metric":
        v = res.metrics.get(src.name)
        return None if v is None else float(v)
    if src.kind == "items":
        scores = item_scores(res, src.name)
        return float(np.mean(list(scores.values()))) if scores else None
    series = res.samples.get(src.name) or []
    return float(np.median(series)) if series else None


def _scorer_id(details: dict[str, Any], dim: str) -> str | None:
    for key in ("scorers", "scorer_ids"):
        m = details.get(key)
        if isinstance(m, dict) and dim in m:
            v = m[dim]
            if isinstance(v, str):
                return v
            if isinstance(v, dict):
                for k in ("scorer_id", "id"):
                    if isinstance(v.get(k), str):
                        return v[k]
    sub = details.get(dim)
    if isinstance(sub, dict) and isinstance(sub.get("scorer_id"), str):
        return sub["scorer_id"]
    return None


def default_calibration(scorer_id: str) -> float | None:
    """Agreement from `evals.calibration.load_calibration` (eval owners); None when unknown."""
    try:
        from evals.calibration import load_calibration  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        cal = load_calibration(scorer_id)
    except Exception:  # noqa: BLE001 - no calibration on record means "not trusted", not a crash
        return None
    if cal is None:
        return None
    # The weakest agreement over the label sets it was calibrated on: trust must hold on each of them.
    for attr in ("worst_agreement", "agreement"):
        agreement = cal.get(attr) if isinstance(cal, dict) else getattr(cal, attr, None)
        if agreement is not None:
            return float(agreement)
    return None


def _check_calibration(run: RunRecord, spec: GateSpec, calibration: Calibration) -> str | None:
    """None when trusted; else why the gate only reports."""
    dim = spec.scorer_dimension
    if spec.min_agreement is None or dim is None:
        return None
    ev = run.stage("eval")
    details = ev.details if ev else {}
    sid = _scorer_id(details, dim)
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


# -- one gate ----------------------------------------------------------------------------------


def _first_pass(
    spec: GateSpec, run: RunRecord, baseline: Baseline, policy: Policy, calibration: Calibration
) -> _Pending:
    src = spec.parsed_source
    v: dict[str, Any] = {
        "name": spec.name,
        "source": spec.source,
        "threshold": spec.threshold,
        "direction": spec.direction,
        "required": spec.required,
        "key": spec.key,
        "details": {"origin": spec.origin},
    }
    if spec.overrides:
        v["details"]["overrides"] = spec.overrides
    if spec.reason:
        v["details"]["policy_reason"] = spec.reason
    p = _Pending(spec, v)
    problem = _stage_problem(run, src.stage)
    if problem:
        p.status, note = problem
        p.notes.append(note)
        return p
    value = _value(run, src)
    if value is None:
        p.status = GateStatus.NOT_RUN
        p.notes.append(f"not run: {src} not recorded by stage '{src.stage}'")
        return p
    v["value"] = value
    if baseline.run is not None:
        v["baseline"] = _value(baseline.run, src)
    if spec.threshold is not None:
        ok = value <= spec.threshold if spec.direction == "max" else value >= spec.threshold
        p.abs_ok = bool(ok) and not math.isnan(value)
        op = "<=" if spec.direction == "max" else ">="
        p.notes.append(
            f"{_fmt(value)} {op} {_fmt(spec.threshold)}"
            if p.abs_ok
            else f"{_fmt(value)} violates {op} {_fmt(spec.threshold)}"
        )
    p.uncalibrated = _check_calibration(run, spec, calibration)
    cmp = spec.parsed_compare
    if cmp is None or spec.margin is None:
        return p
    problem = _stage_problem(run, cmp.stage)
    if problem:
        p.compare_blocked = True
        p.notes.append(f"comparison {problem[1]}")
        return p
    if baseline.run is None:
        p.notes.append(f"no comparison: {baseline.reason}")
        v["details"]["comparison"] = "no baseline"
        return p
    if cmp.kind == "items" and not baseline.items_comparable:
        p.notes.append(f"no comparison: {baseline.reason}")
        v["details"]["comparison"] = "incomparable"
        return p
    seed = stats.gate_seed(policy.seed, spec.name)
    alpha = spec.alpha or policy.alpha
    if cmp.kind == "items":
        new = item_scores(run.stage(cmp.stage), cmp.name)
        base = item_scores(baseline.run.stage(cmp.stage), cmp.name)
        if not new:
            p.compare_blocked = True
            p.notes.append(f"comparison not run: this run has no per-item '{cmp.name}' scores")
            return p
        ids = sorted(set(new) & set(base))
        frac = len(ids) / max(len(new), len(base)) if base else 0.0
        v["details"]["paired_items"] = len(ids)
        if len(ids) < 2:
            p.notes.append(f"no comparison: baseline {baseline.run_id} shares {len(ids)} scored items with this run")
            v["details"]["comparison"] = "no paired items"
            return p
        if frac < policy.min_paired_fraction:
            p.notes.append(f"only {frac:.0%} of items could be paired with the baseline")
            v["details"]["paired_fraction_low"] = True
        a = [new[i] for i in ids]
        b = [base[i] for i in ids]
        test = spec.resolved_test
        if test == "mcnemar" and not all(x in (0.0, 1.0) for x in a + b):
            p.notes.append("scores are not 0/1: paired bootstrap used instead of McNemar")
            test = "bootstrap"
        if test == "mcnemar":
            res = stats.paired_binary(a, b, alpha=alpha, resamples=policy.resamples, seed=seed)
        else:
            res = stats.paired_bootstrap(a, b, margin=spec.margin, alpha=alpha, resamples=policy.resamples, seed=seed)
        v["details"].update({"test": res.method, "difference_unit": "score (new - baseline)"})
        if res.discordant:
            v["details"]["discordant_lost_gained"] = list(res.discordant)
    else:
        new_s = (run.stage(cmp.stage).samples.get(cmp.name) or []) if run.stage(cmp.stage) else []
        base_stage = baseline.run.stage(cmp.stage)
        base_s = (base_stage.samples.get(cmp.name) or []) if base_stage else []
        if len(new_s) < 2:
            p.compare_blocked = True
            p.notes.append(f"comparison not run: this run has fewer than 2 '{cmp.name}' samples")
            return p
        if len(base_s) < 2:
            p.notes.append(f"no comparison: baseline {baseline.run_id} has fewer than 2 '{cmp.name}' samples")
            v["details"]["comparison"] = "no baseline samples"
            return p
        res = stats.rank_shift(new_s, base_s, alpha=alpha, resamples=policy.resamples, seed=seed)
        v["details"].update(
            {
                "test": "Mann-Whitney U (one-sided) + median-shift floor",
                "difference_unit": "relative median shift (new / baseline - 1)",
                "median_new": res.median_new,
                "median_baseline": res.median_base,
                "cliffs_delta": res.cliffs_delta,
                "cles": res.cles,
                "n_new": res.n_new,
                "n_baseline": res.n_base,
            }
        )
    p.comparison = res
    p.raw_p = res.p_regression
    return p


def _finish(p: _Pending, p_adj: float | None, policy: Policy) -> GateVerdict:
    spec, v = p.spec, p.verdict
    alpha = spec.alpha or policy.alpha
    status = p.status
    warn = False
    if status is None:
        status = GateStatus.PASS
        if p.abs_ok is False:
            status = GateStatus.FAIL
        if p.compare_blocked:
            status = GateStatus.NOT_RUN if status is GateStatus.PASS else status
        res = p.comparison
        if res is not None and spec.margin is not None:
            m = spec.margin
            v["p_value"] = p_adj
            v["details"]["p_raw"] = p.raw_p
            v["details"]["alpha"] = alpha
            v["details"]["margin"] = m
            v["ci_low"], v["ci_high"] = res.ci_low, res.ci_high
            if isinstance(res, stats.PairedResult):
                v["difference"] = res.mean_diff
                mde = stats.mde_paired(res.sd_diff, res.n, alpha=alpha, power=policy.power)
                observed_drop = -res.mean_diff
                regressed = p_adj is not None and p_adj < alpha and (res.discordant is None or observed_drop > m)
                noninferior = res.ci_low > -m
                shown = f"diff {res.mean_diff:+.4f} [{res.ci_low:+.4f}, {res.ci_high:+.4f}] n={res.n}"
            else:
                v["difference"] = res.rel_shift
                mde = stats.mde_relative_shift(res.log_sd, res.n_new, res.n_base, alpha=alpha, power=policy.power)
                regressed = p_adj is not None and p_adj < alpha and res.rel_shift > m
                noninferior = res.ci_high < m
                shown = f"median shift {res.rel_shift:+.1%} [{res.ci_low:+.1%}, {res.ci_high:+.1%}] n={res.n_new}/{res.n_base}"
            v["mde"] = mde
            base_id = f" {v['details']['baseline_run_id']}" if v["details"].get("baseline_run_id") else ""
            verdict_txt = (
                "regression beyond margin" if regressed else ("non-inferior" if noninferior else "inconclusive")
            )
            p.notes.append(f"vs baseline{base_id}: {shown}, p={_fmt(p_adj)} (Holm), margin {m:g}: {verdict_txt}")
            if regressed:
                status = GateStatus.FAIL
            elif not noninferior:
                if spec.on_inconclusive == "fail":
                    status = GateStatus.FAIL
                else:
                    warn = True
            if math.isfinite(mde) and m < mde:
                warn = True
                p.notes.append(
                    f"margin {m:g} is below the smallest change detectable at this n ({mde:.3g}, power {policy.power:g})"
                )
        # A first release is expected (no warning); a baseline that exists but cannot be used is not.
        if v["details"].get("comparison", "no baseline") != "no baseline" or v["details"].get("paired_fraction_low"):
            warn = True
        if status is GateStatus.PASS and warn:
            status = GateStatus.WARN
    if p.uncalibrated and status is not GateStatus.NOT_RUN:
        v["details"]["would_be"] = status.value
        status = GateStatus.WARN
        p.notes.insert(0, p.uncalibrated)
    if not spec.required:
        p.notes.append(f"optional: {spec.reason}")
    v["status"] = status
    v["reason"] = "; ".join(p.notes)
    return GateVerdict.model_validate(v)


# -- the release ---------------------------------------------------------------------------------


def evaluate(
    policy: Policy,
    run: RunRecord,
    baseline: Baseline | RunRecord | None = None,
    *,
    calibration: Calibration = default_calibration,
) -> Evaluation:
    if baseline is None:
        baseline = first_release(run.target)
    elif isinstance(baseline, RunRecord):
        baseline = Baseline(BaselineKind.SAME, f"baseline {baseline.run_id} (given)", baseline)
    pending = [_first_pass(g, run, baseline, policy, calibration) for g in policy.gates]
    for p in pending:
        if baseline.run_id:
            p.verdict["details"]["baseline_run_id"] = baseline.run_id
    family = [i for i, p in enumerate(pending) if p.raw_p is not None and p.uncalibrated is None]
    adjusted = stats.holm([pending[i].raw_p for i in family])  # type: ignore[misc]
    p_adj: dict[int, float] = dict(zip(family, adjusted, strict=True))
    verdicts = []
    for i, p in enumerate(pending):
        verdict = _finish(p, p_adj.get(i, p.raw_p), policy)
        verdict.details["holm_family"] = len(family) if i in p_adj else 0
        verdicts.append(verdict)
    plugins = sections()
    ctx = SectionContext(baseline=baseline.run, policy_dir=policy.directory)
    for name, section in policy.sections.items():
        meta = policy.section_meta[name]
        try:
            produced = plugins[name].evaluate(section, run, ctx)
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
            if not meta.required:
                verdict.reason = f"{verdict.reason}; optional: {meta.reason}"
                verdict.details["policy_reason"] = meta.reason
            verdicts.append(verdict)
    return _decide(verdicts, baseline)


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
            parts.append("key gate " + ", ".join(f"{v.name} {v.status.value}" for v in key))
        rest = [v for v in blocking if not v.key]
        if rest:
            parts.append("required gate " + ", ".join(f"{v.name} {v.status.value}" for v in rest))
        decision, reason = Decision.BLOCKED, "blocked: " + "; ".join(parts)
    else:
        decision = Decision.PASS
        reason = f"pass: all {len(required)} required gates passed"
        if warnings:
            reason += f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})"
    if baseline.kind is not BaselineKind.SAME:
        reason += f" [{baseline.reason}]"
    return Evaluation(verdicts, decision, reason, warnings, baseline)
