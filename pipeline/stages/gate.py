"""Gate stage: judge a run against the policy and its baseline.

It reads only what is stored in the run and the store, and every resample is seeded, so running it
again on the same stored inputs gives the same verdict. Its payload carries every verdict and the
decision (which the record mirrors); its artifacts are `verdict.json` and `junit.xml`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from evals.calibration import trust_for
from pipeline.gates.baseline import Baseline, find_baseline
from pipeline.gates.engine import evaluate
from pipeline.gates.outputs import write_junit, write_verdict_json
from pipeline.models import Artifact, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.gate import BaselineInfo, GateDetails
from pipeline.stages.context import StageContext
from pipeline.stages.evaluate import baseline_rescorer
from pipeline.supplychain.gate_sections import SECTIONS


def _artifact(name: str, path: Path, media_type: str) -> Artifact:
    return Artifact(name=name, path=str(path), media_type=media_type,
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def _baseline_info(run: RunRecord, baseline: Baseline) -> BaselineInfo:
    other = baseline.run.model if baseline.run is not None else None
    mine = run.model.digest if run.model else None
    other_weights = other is not None and mine is not None and other.digest != mine
    reason = baseline.reason
    if other_weights and other is not None:
        reason += f"; the baseline served other weights ({other.digest[:19]}…)"
    return BaselineInfo(kind=baseline.kind.value, run_id=baseline.run_id,
                        items_comparable=baseline.items_comparable and baseline.run is not None, reason=reason,
                        model_digest=other.digest if other else None, other_weights=other_weights)


def gate_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    policy = ctx.require_policy()
    ctx.reporter.step(f"gate: policy {', '.join(policy.files)} ({len(policy.gates)} gates, "
                      f"{len(policy.sections)} sections)")
    baseline = find_baseline(run, ctx.ws.store, rescore=baseline_rescorer(ctx.cfg, ctx.ws))
    ctx.reporter.step(f"gate: baseline: {baseline.reason}")
    # The engine compares one agreement figure with min_agreement: give it the held-out lower bound.
    evaluation = evaluate(policy, run, baseline, sections=SECTIONS,
                          calibration=lambda sid: None if (t := trust_for(sid)) is None else t.lower)
    for v in evaluation.verdicts:
        ctx.reporter.step(f"gate {v.name}: {v.status.value}: {v.reason}")
    ctx.reporter.step(f"gate: {evaluation.reason}")
    out = ctx.ws.run_dir(run.run_id)
    verdict_path = write_verdict_json(evaluation, run, policy, out / "verdict.json")
    junit_path = write_junit(evaluation, run, out / "junit.xml")
    details = GateDetails(
        policy_name=Path(policy.files[0]).name,
        policy_files=list(policy.files),
        policy_sha256=policy.sha256,
        baseline=_baseline_info(run, evaluation.baseline),
        warnings=list(evaluation.warnings),
        verdicts=list(evaluation.verdicts),
        decision=evaluation.decision.value,
        reason=evaluation.reason,
    )
    return StageResult(
        stage=Stage.GATE,
        status=StageStatus.OK,
        reason=evaluation.reason,
        artifacts=[
            _artifact("verdict.json", verdict_path, "application/json"),
            _artifact("junit.xml", junit_path, "application/xml"),
        ],
        details=details,
    )
