"""Gate stage: judge a run against the policy and its baseline; record verdicts and the decision.

Unlike the measuring stages it returns the verdicts (the decision is on the run), and it records a
`gate` stage result whose artifacts are `verdict.json` and `junit.xml`. It reads only what is
stored in the run and the store, and every resample is seeded, so running it again on the same
stored inputs gives the same verdict.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.gates.baseline import Baseline, find_baseline
from pipeline.gates.engine import Calibration, Evaluation, default_calibration, evaluate
from pipeline.gates.outputs import write_junit, write_verdict_json
from pipeline.gates.policy import Policy, load_policy
from pipeline.models import Artifact, GateVerdict, RunRecord, StageResult, StageStatus
from pipeline.progress import NullReporter, Reporter
from pipeline.workspace import Workspace


def _artifact(name: str, path: Path, media_type: str) -> Artifact:
    return Artifact(
        name=name, path=str(path), media_type=media_type, sha256=hashlib.sha256(path.read_bytes()).hexdigest()
    )


def gate_stage(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    policy: Policy | None = None,
    baseline: Baseline | None = None,
    rescore: Any | None = None,
    calibration: Calibration = default_calibration,
) -> list[GateVerdict]:
    """Set run.gates, run.decision(+reason), run.baseline_run_id; write verdict.json and junit.xml."""
    policy = policy or load_policy(Path(cfg.gates_file))
    reporter.step(
        f"gate: policy {', '.join(policy.files)} ({len(policy.gates)} gates, {len(policy.sections)} sections)"
    )
    if baseline is None:
        baseline = find_baseline(run, ws.store, rescore=rescore)
    reporter.step(f"gate: baseline: {baseline.reason}")
    result = evaluate(policy, run, baseline, calibration=calibration)
    record(run, ws, policy, result)
    for v in result.verdicts:
        reporter.step(f"gate {v.name}: {v.status.value}: {v.reason}")
    reporter.step(f"gate: {result.reason}")
    return result.verdicts


def record(run: RunRecord, ws: Workspace, policy: Policy, result: Evaluation) -> StageResult:
    run.gates = result.verdicts
    run.decision = result.decision
    run.decision_reason = result.reason
    run.baseline_run_id = result.baseline.run_id
    out = ws.run_dir(run.run_id)
    verdict_path = write_verdict_json(result, run, policy, out / "verdict.json")
    junit_path = write_junit(result, run, out / "junit.xml")
    stage = StageResult(
        stage="gate",
        status=StageStatus.OK,
        reason=result.reason,
        artifacts=[
            _artifact("verdict.json", verdict_path, "application/json"),
            _artifact("junit.xml", junit_path, "application/xml"),
        ],
        details={
            "policy_files": policy.files,
            "policy_sha256": policy.sha256,
            "baseline": result.baseline.to_json(),
            "warnings": result.warnings,
        },
    )
    run.add_stage(stage)
    return stage
