"""Stage "manifests": the deployment manifests as this release would ship, checked offline.

The overlay is rendered (in a scratch copy) with both digests of the release, the image and the
weights, validated against the Kubernetes and CRD schemas and checked against the manifest policy.
Metric `violations` counts schema errors plus policy violations (the gate wants 0). A missing
`kubectl` makes the stage `skipped` ("not run: kubectl not found"), which the gate engine fails.
"""

from __future__ import annotations

import inspect

from pipeline.config import PipelineConfig
from pipeline.manifests.check import check_overlay, measured_load_time
from pipeline.manifests.render import KubectlNotFound
from pipeline.manifests.validate import DEFAULT_K8S_VERSION
from pipeline.metrics import Metric
from pipeline.models import Artifact, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.manifests import ManifestsDetails
from pipeline.stages.context import StageContext, StageOptions
from pipeline.stages.spec import EVIDENCE, StageSpec, tree_sha


def manifests_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    overlay, manifests_dir = ctx.options.overlay, ctx.options.manifests_dir
    result = StageResult(stage=Stage.MANIFESTS, status=StageStatus.OK)
    load_time, source = measured_load_time(run)
    ctx.reporter.step(f"manifests: rendering overlay {overlay} with "
                      f"{run.image.by_digest if run.digest else 'no digest'}")
    kwargs = {}
    if "model_digest" in inspect.signature(check_overlay).parameters:
        kwargs["model_digest"] = run.model.digest if run.model else None
    try:
        report = check_overlay(manifests_dir, overlay, image=run.image, load_time_s=load_time,
                               k8s_version=DEFAULT_K8S_VERSION, **kwargs)
    except KubectlNotFound:
        result.status = StageStatus.SKIPPED
        result.reason = "not run: kubectl not found"
        return result
    report.load_time_source = source
    report.model_digest = run.model.digest if run.model else None
    for problem in report.problems:
        ctx.reporter.step(f"manifests: {problem}")
    for line in report.rollout_estimates:
        ctx.reporter.step(f"manifests: expected rollout {line}")
    result.metrics = {
        "violations": float(len(report.problems)),
        "schema_errors": float(len(report.schema_errors)),
        "policy_violations": float(len(report.violations)),
        "expected_rollout_s": report.rollout_s,
    }
    if report.problems:
        result.reason = f"{len(report.problems)} violation(s); first: {report.problems[0]}"
    path = ctx.ws.run_dir(run.run_id) / "manifests-report.json"
    path.write_text(report.model_dump_json(indent=2))
    result.artifacts.append(Artifact(name=path.name, path=str(path), media_type="application/json"))
    result.details = report
    return result


def reuse_key(run: RunRecord, _cfg: PipelineConfig, options: StageOptions) -> dict[str, object] | None:
    # The overlay is sized by the measured load time, so a new boot means a new check.
    boot = run.stage(Stage.BOOT.value)
    load = None if boot is None else boot.metrics.get("load_time_p95_s", boot.metrics.get("load_time_s"))
    return {"image": run.release.image_digest, "model": run.release.model_digest, "overlay": options.overlay,
            "tree": tree_sha(options.manifests_dir), "load_time_s": load}


SPEC = StageSpec(
    stage=Stage.MANIFESTS, evidence=True, run=manifests_stage, details=ManifestsDetails, reads=(Stage.BOOT,), credentials=EVIDENCE,
    metrics=(Metric("violations", "count", "lower"),),
    reuse_key=reuse_key, check=lambda r: r.metrics.get("violations") == 0,
    doc="the deployment overlay rendered with both digests, validated against its schemas",
)
