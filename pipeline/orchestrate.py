"""The main job: build → leak check → scan → sign → boot → bench → eval → manifests → gate → report.

This is the only place that knows the order of the stages. It checkpoints the record after every
stage (a crash loses nothing measured), turns an exception inside a stage into a recorded stage
error before re-raising it, and always leaves a report behind, also for a failed run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.errors import ExitCode, InfraError, LlmgateError
from pipeline.models import Decision, RunRecord, StageResult, StageStatus
from pipeline.progress import NullReporter, Reporter
from pipeline.runs import new_run
from pipeline.workspace import Workspace

StageFn = Callable[..., StageResult]

# Stages that need the booted server are run inside `booted_server`; the rest around it.
PRE_BOOT = ("build", "leak", "scan", "sign")
SERVED = ("bench", "eval")
POST = ("manifests",)


def _stage_fn(name: str) -> StageFn:
    # Imported lazily: `llmgate --help` must not pay for torch, ragas or the docker SDK.
    if name == "build":
        from pipeline.stages.build import build_stage

        return build_stage
    if name == "leak":
        from pipeline.stages.leak import leak_stage

        return leak_stage
    if name == "scan":
        from pipeline.stages.scan import scan_stage

        return scan_stage
    if name == "sign":
        from pipeline.stages.sign import sign_stage

        return sign_stage
    if name == "bench":
        from pipeline.stages.bench import bench_stage

        return bench_stage
    if name == "eval":
        from pipeline.stages.evaluate import eval_stage

        return eval_stage
    if name == "manifests":
        from pipeline.stages.manifests import manifests_stage

        return manifests_stage
    raise ValueError(f"unknown stage {name!r}")


class Runner:
    """Runs stages on one record and checkpoints after each."""

    def __init__(self, run: RunRecord, cfg: PipelineConfig, ws: Workspace, reporter: Reporter) -> None:
        self.run, self.cfg, self.ws, self.reporter = run, cfg, ws, reporter

    def stage(self, name: str, fn: StageFn | None = None, **kwargs: object) -> StageResult:
        fn = fn or _stage_fn(name)
        self.reporter.step(f"{name}: started")
        t0 = time.monotonic()
        try:
            result = fn(self.run, self.cfg, self.ws, self.reporter, **kwargs)
        except LlmgateError as exc:
            self.record_error(name, exc)
            raise
        except Exception as exc:  # an unexpected bug must still leave a record behind
            self.record_error(name, InfraError(f"{type(exc).__name__}: {exc}", where=f"stage {name}"))
            raise
        self.run.add_stage(result)
        self.ws.checkpoint(self.run)
        self.reporter.step(f"{name}: {result.status.value} in {time.monotonic() - t0:.1f}s {result.reason or ''}")
        return result

    def record_error(self, name: str, exc: LlmgateError) -> None:
        self.run.add_stage(StageResult(stage=name, status=StageStatus.ERROR, reason=exc.render()))
        self.run.decision = Decision.ERROR
        self.run.decision_reason = f"stage {name}: {exc.message}"
        self.ws.checkpoint(self.run)

    def skip(self, name: str, reason: str) -> None:
        self.run.add_stage(StageResult(stage=name, status=StageStatus.SKIPPED, reason=reason))
        self.ws.checkpoint(self.run)


def run_pipeline(
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter | None = None,
    *,
    tag: str | None = None,
    skip: tuple[str, ...] = (),
) -> RunRecord:
    """Run every stage for one image and return the recorded run (decision set).

    Raises `LlmgateError` for bad input (before anything is built) and infrastructure failures;
    the record written so far is in the store either way.
    """
    from pipeline.gates.policy import load_policy
    from pipeline.stages.boot import booted_server
    from pipeline.stages.gate import gate_stage

    reporter = reporter or NullReporter()
    # Validate everything a person wrote before spending minutes on a build.
    policy = load_policy(Path(cfg.gates_file))
    from evals.ground_truth import load_ground_truth

    load_ground_truth(Path(cfg.eval.ground_truth))

    run = new_run(cfg, tag=tag)
    ws.checkpoint(run)
    reporter.step(f"run {run.run_id}: {run.image.by_tag} (target {run.target})")
    runner = Runner(run, cfg, ws, reporter)
    try:
        for name in PRE_BOOT:
            if name in skip:
                runner.skip(name, "not run: skipped on request (--skip)")
            else:
                runner.stage(name)
        with booted_server(run, cfg, ws, reporter) as server:
            run.add_stage(server.result)
            ws.checkpoint(run)
            for name in SERVED:
                if name in skip:
                    runner.skip(name, "not run: skipped on request (--skip)")
                else:
                    runner.stage(name, base_url=server.base_url, model=server.model)
        for name in POST:
            if name in skip:
                runner.skip(name, "not run: skipped on request (--skip)")
            else:
                runner.stage(name)
        gate_stage(run, cfg, ws, reporter, policy=policy)
        ws.checkpoint(run)
    finally:
        write_reports(run, ws)
    return run


def write_reports(run: RunRecord, ws: Workspace) -> Path | None:
    """report.json + report.html next to the run; a report failure never hides the verdict."""
    try:
        from pipeline.report.run_page import write_run_report

        baseline = ws.store.get(run.baseline_run_id) if run.baseline_run_id else None
        return write_run_report(run, ws.run_dir(run.run_id), baseline=baseline).html
    except Exception as exc:  # noqa: BLE001 - reporting is best effort, the record is already stored
        ws.run_dir(run.run_id).joinpath("report-error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
        return None


def exit_code_for(run: RunRecord) -> ExitCode:
    if run.decision is Decision.PASS:
        return ExitCode.PASS
    if run.decision is Decision.BLOCKED:
        return ExitCode.GATE_FAILED
    return ExitCode.INFRA
