"""Which function runs each stage. Imported per stage when it runs, so `llmgate --help` and a gate
on a stored run never pay for torch, ragas or the docker SDK."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.models import RunRecord, Stage, StageResult
from pipeline.stages.context import StageContext

StageFn = Callable[[RunRecord, StageContext], StageResult]


def stage_fn(stage: Stage, *, plan: str = "local") -> StageFn:
    if stage is Stage.BUILD:
        from pipeline.stages.build import build_stage, published_stage

        return published_stage if plan == "dagger" else build_stage
    if stage is Stage.LEAK:
        from pipeline.stages.leak import leak_stage

        return leak_stage
    if stage is Stage.SCAN:
        from pipeline.stages.scan import scan_stage

        return scan_stage
    if stage is Stage.SIGN:
        from pipeline.stages.sign import sign_stage

        return sign_stage
    if stage is Stage.BOOT:
        from pipeline.stages.boot import boot_stage

        return boot_stage
    if stage is Stage.BENCH:
        from pipeline.stages.bench import bench_stage

        return bench_stage
    if stage is Stage.EVAL:
        from pipeline.stages.evaluate import eval_stage

        return eval_stage
    if stage is Stage.MANIFESTS:
        from pipeline.stages.manifests import manifests_stage

        return manifests_stage
    if stage is Stage.GATE:
        from pipeline.stages.gate import gate_stage

        return gate_stage
    if stage is Stage.ATTEST:
        from pipeline.stages.attest import attest_stage

        return attest_stage
    from pipeline.stages.promote import promote_stage

    return promote_stage


Precheck = Callable[[RunRecord, StageContext], None]


def stage_precheck(stage: Stage) -> Precheck | None:
    """The check a stage's inputs must pass before the runner marks or records anything for it: a refusal
    here (exit 1) leaves the stored record exactly as it was."""
    if stage is Stage.GATE:
        from pipeline.stages.gate import check_evidence

        return check_evidence
    if stage is Stage.ATTEST:
        from pipeline.stages.attest import check_fresh

        return check_fresh
    return None
