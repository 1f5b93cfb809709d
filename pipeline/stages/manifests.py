"""Stage "manifests": the deployment manifests as this digest would ship, checked offline.

Metric `violations` counts schema errors plus policy violations (the gate wants 0). A missing
`kubectl` makes the stage `skipped` ("not run: kubectl not found"), which the gate engine fails.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.manifests.check import check_overlay, measured_load_time
from pipeline.manifests.render import KubectlNotFound
from pipeline.manifests.validate import DEFAULT_K8S_VERSION
from pipeline.models import Artifact, RunRecord, StageResult, StageStatus
from pipeline.progress import NullReporter, Reporter
from pipeline.workspace import Workspace

DEFAULT_MANIFESTS_DIR = Path("manifests")


def manifests_stage(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    overlay: str = "canary",
    manifests_dir: Path = DEFAULT_MANIFESTS_DIR,
    k8s_version: str = DEFAULT_K8S_VERSION,
) -> StageResult:
    result = StageResult(stage="manifests", status=StageStatus.OK)
    load_time, source = measured_load_time(run)
    reporter.step(f"manifests: rendering overlay {overlay} with {run.image.by_digest if run.digest else 'no digest'}")
    try:
        report = check_overlay(
            Path(manifests_dir), overlay, image=run.image, load_time_s=load_time, k8s_version=k8s_version
        )
    except KubectlNotFound:
        result.status = StageStatus.SKIPPED
        result.reason = "not run: kubectl not found"
        return result.finish()
    report.load_time_source = source
    for problem in report.problems:
        reporter.step(f"manifests: {problem}")
    for line in report.rollout_estimates:
        reporter.step(f"manifests: expected rollout {line}")
    result.metrics = {
        "violations": float(len(report.problems)),
        "schema_errors": float(len(report.schema_errors)),
        "policy_violations": float(len(report.violations)),
        "expected_rollout_s": report.rollout_s,
    }
    if report.problems:
        result.reason = f"{len(report.problems)} violation(s); first: {report.problems[0]}"
    path = ws.run_dir(run.run_id) / "manifests-report.json"
    path.write_text(report.model_dump_json(indent=2))
    result.artifacts.append(Artifact(name=path.name, path=str(path), media_type="application/json"))
    result.details = report.model_dump(mode="json")
    return result.finish()

