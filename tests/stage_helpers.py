"""Building a stage context the way the Runner does, for tests that call one stage function directly."""

from __future__ import annotations

from typing import Any

from pipeline.adapters.bundle import Adapters
from pipeline.config import PipelineConfig
from pipeline.progress import NullReporter, Reporter
from pipeline.stages.context import StageContext, StageOptions
from pipeline.workspace import Workspace


def stage_ctx(cfg: PipelineConfig, ws: Workspace, reporter: Reporter | None = None, *, adapters: Adapters | None = None,
              policy: Any = None, **options: Any) -> StageContext:
    from pipeline.stages.registry import STAGES

    return StageContext(cfg=cfg, ws=ws, reporter=reporter or NullReporter(), adapters=adapters or Adapters(),
                        policy=policy, options=StageOptions(**options), linked=STAGES.linked)


def served_ctx(cfg: PipelineConfig, ws: Workspace, base_url: str, model: str | None = None, **options: Any) -> StageContext:
    """A context holding a server started elsewhere (a double), as the boot stage or `--server-url` leaves it."""
    from pipeline.stages.context import ServedModel

    ctx = stage_ctx(cfg, ws, **options)
    ctx.hold_server(ServedModel(base_url.rstrip("/"), model))
    return ctx


def record_measured(run: Any, result: Any, cfg: PipelineConfig | None = None, *, signing: Any = None) -> Any:
    """`result` added to `run` as the runner records a measured result: finished and signed with
    `signing` or else the configured key (`sign.key`; unsigned when none is there), so a gate accepts it as
    evidence."""
    from pipeline.supplychain.evidence import sign_result
    from pipeline.supplychain.signing import release_keys

    if result.finished_at is None:
        result.finish()
    key = signing if signing is not None else release_keys((cfg or PipelineConfig()).sign).signing
    if key is not None:
        sign_result(result, run, key)
    run.add_stage(result)
    return result


def sign_as_measured(run: Any, cfg: PipelineConfig | None = None) -> Any:
    """Every measuring stage's result of a run built by hand, signed as the runner would have signed it
    when it was measured (with the configured key; unsigned when none is there). Returns the run."""
    from pipeline.stages.registry import STAGES
    from pipeline.supplychain.evidence import sign_result
    from pipeline.supplychain.signing import release_keys

    key = release_keys((cfg or PipelineConfig()).sign).signing
    for stage in STAGES.linked:
        result = run.stage(stage.value)
        if result is not None and key is not None:
            sign_result(result, run, key)
    return run


def record_verdicts(run: Any, verdicts: list[Any]) -> Any:
    """`run` with a gate stage whose payload holds `verdicts` (where a record stores them) and the run's
    own decision, policy and baseline, as the gate would have recorded them. Returns the run."""
    from pipeline.models import PolicyRef, StageResult, StageStatus
    from pipeline.schemas.gate import BaselineInfo, GateDetails

    policy = run.policy or PolicyRef(name="gates.yaml", files=["gates.yaml"], sha256="0" * 64)
    unset, updated = run.policy is None, run.updated_at
    run.add_stage(StageResult(stage="gate", status=StageStatus.OK, details=GateDetails(
        policy_name=policy.name, policy_files=list(policy.files), policy_sha256=policy.sha256,
        baseline=BaselineInfo(kind="first_release" if run.baseline_run_id is None else "same_ground_truth",
                              run_id=run.baseline_run_id),
        verdicts=list(verdicts), decision=run.decision.value, reason=run.decision_reason)))
    if unset:
        run.policy = None
    run.updated_at = updated
    return run
