"""Boot stage: start the image with the weights mounted read-only and measure how long until it serves.

Load time = container start (the engine's start call) -> end of the first successful streamed
completion. Milestones: `port_open_s` (published port accepts), `health_ok_s` (readiness path
answers 200), `first_completion_s` (= load time). Each repetition is a cold start (a new container);
single-value milestones come from the first repetition, `load_time_p50_s`/`load_time_p95_s` from all.
`readiness_honest` is 1 when the readiness probe agreed with real completions in every repetition
(see `pipeline.bench.startup`). The container gets the release's model digest
(`LLMGATE_MODEL_DIGEST`), so its readiness helper stays not-ready on weights other than the gated ones.

The last repetition's server is handed to the runner's context for bench and eval and stopped when the
context closes (its full log replaces that repetition's artifact then). With `--server-url` (the
Dagger plan, where Dagger starts the server as a service) the stage attaches instead: the milestones
are measured from the stage's start against the given URL, and nothing is started or stopped.

A server that never becomes ready within `boot.ready_timeout_s`, or whose container exits, makes the
stage `failed` with the reason, exit code and last log lines; the runner turns that into exit 3.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import numpy as np

from pipeline.adapters.docker_run import MODEL_MOUNT, Container, RunSpec, has_model_files, query_gpus
from pipeline.bench.startup import StartupTimeline, watch_startup
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput, InfraError
from pipeline.metrics import Metric, Series
from pipeline.models import Artifact, RunRecord, Stage, StageResult, StageStatus
from pipeline.redact import redact_text
from pipeline.schemas.boot import BootDetails, BootRepetition, GpuReport
from pipeline.stages.context import BaselineServer, ServedModel, StageContext, StageOptions
from pipeline.stages.spec import EVIDENCE, StageSpec, Variant
from pipeline.supplychain.model_digest import weights_manifest

MODEL_DIGEST_ENV = "LLMGATE_MODEL_DIGEST"


def _alive(c: Container) -> tuple[bool, int | None]:
    status, code = c.state()
    return status in ("created", "running", "restarting"), code


def _save_logs(run_dir: Path, c: Container, name: str) -> Artifact:
    path = run_dir / name
    text = redact_text(c.logs())
    path.write_text(text)
    return Artifact(name=name, path=str(path), media_type="text/plain",
                    sha256=hashlib.sha256(text.encode()).hexdigest())


def model_dir(run: RunRecord, cfg: PipelineConfig) -> Path:
    """The weights directory of the release (recorded when the run was created)."""
    path = Path(run.model.path) if run.model else Path(cfg.boot.model_dir)
    if not has_model_files(path):
        raise BadInput(f"no model at {path}", where="boot.model_dir", hint="llmgate demo-model OUT")
    return path


def _spec(cfg: PipelineConfig, image: str, run: RunRecord, name: str, labels: dict[str, str]) -> RunSpec:
    """The container for `run`'s release: its weights read-only, told their digest."""
    b = cfg.boot
    env = dict(b.env)
    if run.model is not None:
        env[MODEL_DIGEST_ENV] = run.model.digest
    return RunSpec(image=image, model_dir=model_dir(run, cfg), container_port=b.container_port, env=env,
                   gpus=b.gpus, memory=b.memory, name_prefix=name, labels=labels)


def _gpu_report(cfg: PipelineConfig) -> GpuReport:
    if cfg.boot.gpus in ("none", 0):
        return GpuReport(reason="not requested (boot.gpus=none)")
    report = query_gpus()
    if not report.gpus:
        raise InfraError(f"GPUs requested (boot.gpus={cfg.boot.gpus}) but {report.reason}", where="boot.gpus")
    return report


def _watch(cfg: PipelineConfig, base_url: str, alive, t0: float) -> StartupTimeline:  # type: ignore[no-untyped-def]
    b = cfg.boot
    return asyncio.run(
        watch_startup(
            base_url=base_url, alive=alive, t0=t0, timeout_s=b.ready_timeout_s, readiness_path=b.readiness_path,
            api=b.api, model=b.served_model_name, interval_s=b.probe_interval_s,
            lag_tolerance_s=b.readiness_lag_tolerance_s, request_timeout_s=min(60.0, b.ready_timeout_s),
        )
    )


def _milestones(result: StageResult, first: StartupTimeline | None, loads: list[float],
                honest: list[bool | None]) -> None:
    if first is not None:
        result.metrics |= {
            "load_time_s": first.first_completion_s,
            "port_open_s": first.port_open_s,
            "health_ok_s": first.health_ok_s,
            "first_completion_s": first.first_completion_s,
        }
    if loads:
        result.samples["load_time_s"] = loads
        result.metrics["load_time_p50_s"] = float(np.percentile(loads, 50))
        result.metrics["load_time_p95_s"] = float(np.percentile(loads, 95))
    judged = [h for h in honest if h is not None]
    result.metrics["readiness_honest"] = (1.0 if all(judged) else 0.0) if judged else None


def _attach(run: RunRecord, ctx: StageContext, url: str) -> StageResult:
    """Measure a server started elsewhere from now on; it is not ours to stop."""
    cfg = ctx.cfg
    details = BootDetails(image=run.image.by_digest if run.digest else run.image.by_tag,
                          model_dir=str(run.model.path if run.model else cfg.boot.model_dir),
                          readiness_path=cfg.boot.readiness_path, gpus_requested=str(cfg.boot.gpus), attached=url)
    ctx.reporter.step(f"boot: attaching to {url}")
    tl = _watch(cfg, url, lambda: (True, None), time.perf_counter())
    result = StageResult(stage=Stage.BOOT, status=StageStatus.OK)
    details.repetitions.append(BootRepetition(rep=0, container_name="(attached)", container_id="", pull_s=0.0,
                                              start_call_s=0.0, timeline=tl.as_dict()))
    details.readiness_reasons.append(tl.readiness_reason)
    if not tl.ready:
        result.status, result.reason = StageStatus.FAILED, _not_ready(tl, cfg)
    _milestones(result, tl, [tl.first_completion_s] if tl.first_completion_s is not None else [],
                [tl.readiness_honest])
    result.details = details
    if tl.ready:
        ctx.hold_server(ServedModel(url.rstrip("/"), tl.model or cfg.boot.served_model_name or MODEL_MOUNT))
    return result


def boot_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    """Boot `boot.repetitions` cold starts; the last server stays up for the stages after this one."""
    if ctx.options.server_url:
        return _attach(run, ctx, ctx.options.server_url)
    cfg, reporter = ctx.cfg, ctx.reporter
    runtime = ctx.adapters.container_runtime()
    image = run.image.by_digest
    run_dir = ctx.ws.run_dir(run.run_id)
    result = StageResult(stage=Stage.BOOT, status=StageStatus.OK)
    details = BootDetails(image=image, model_dir=str(model_dir(run, cfg).resolve()),
                          readiness_path=cfg.boot.readiness_path, gpus_requested=str(cfg.boot.gpus),
                          gpu=_gpu_report(cfg))
    loads: list[float] = []
    first: StartupTimeline | None = None
    honest: list[bool | None] = []
    reps = cfg.boot.repetitions
    for rep in range(reps):
        reporter.step(f"boot {rep + 1}/{reps}: starting {image}")
        spec = _spec(cfg, image, run, f"llmgate-boot-{run.run_id}-{rep}", {"llmgate.run": run.run_id})
        pull_s = runtime.ensure_image(spec.image)
        c = runtime.start(spec)
        if c.host_port is None:  # exited before the engine published the port
            _status, code = _alive(c)
            tl = StartupTimeline(died=True, exit_code=code, reason=f"container exited with code {code} at start")
        else:
            tl = _watch(cfg, c.base_url, lambda c=c: _alive(c), c.started_at)
        keep = rep == reps - 1 and tl.ready
        if not keep:
            c.stop()
        log_name = f"boot-rep{rep}.log"
        art = _save_logs(run_dir, c, log_name)
        result.artifacts.append(art)
        details.repetitions.append(BootRepetition(rep=rep, container_name=c.name, container_id=c.id, pull_s=pull_s,
                                                  start_call_s=c.start_call_s, timeline=tl.as_dict(),
                                                  log_artifact=art.path))
        first = first or tl
        honest.append(tl.readiness_honest)
        details.readiness_reasons.append(tl.readiness_reason)
        if not tl.ready:
            tail = redact_text("\n".join(c.logs(tail=cfg.boot.log_tail_lines).splitlines()[-cfg.boot.log_tail_lines:]))
            c.remove()
            result.status = StageStatus.FAILED
            result.reason = f"{_not_ready(tl, cfg)}\n--- last log lines ({c.name}) ---\n{tail}"
            break
        assert tl.first_completion_s is not None
        loads.append(tl.first_completion_s)
        reporter.step(f"boot {rep + 1}/{reps}: ready in {tl.first_completion_s:.2f} s (port open {_s(tl.port_open_s)}, "
                      f"probe ready {_s(tl.health_ok_s)}); readiness honest: {tl.readiness_honest}")
        if keep:
            ctx.hold_server(ServedModel(c.base_url, tl.model or cfg.boot.served_model_name or MODEL_MOUNT,
                                        stop=lambda c=c, name=log_name: _stop(c, run_dir, name), pid=c.pid))
        else:
            c.remove()
    _milestones(result, first, loads, honest)
    if result.status is StageStatus.OK and cfg.bench.same_run_baseline:
        details.same_run_baseline = _boot_baseline(run, ctx)
    result.details = details
    return result


def _boot_baseline(run: RunRecord, ctx: StageContext) -> str:
    """Start the target's last promoted release beside this one (its image by digest, its weights checked
    against its digest), so the bench measures both on this machine now; returns what happened, for the
    record. Any reason it cannot be booted means the bench compares with stored samples instead."""
    baseline = ctx.ws.store.last_promoted(run.target)
    if baseline is None or baseline.run_id == run.run_id:
        return "none: nothing promoted to this target yet"
    if baseline.image.digest is None or baseline.model is None:
        return f"none: promoted run {baseline.run_id} names no image or model digest"
    path = Path(baseline.model.path)
    if not path.is_dir():
        return f"none: the weights of promoted run {baseline.run_id} are not at {path} on this runner"
    if weights_manifest(path).digest != baseline.model.digest:
        return f"none: the weights at {path} are no longer those promoted run {baseline.run_id} was gated with"
    runtime = ctx.adapters.container_runtime()
    spec = _spec(ctx.cfg, baseline.image.by_digest, baseline, f"llmgate-baseline-{run.run_id}",
                 {"llmgate.run": run.run_id, "llmgate.baseline": baseline.run_id})
    try:
        runtime.ensure_image(spec.image)
        c = runtime.start(spec)
    except InfraError as exc:
        return f"none: promoted run {baseline.run_id} could not be started: {exc.message}"
    tl = _watch(ctx.cfg, c.base_url, lambda: _alive(c), c.started_at) if c.host_port else None
    if tl is None or not tl.ready:
        c.stop()
        c.remove()
        return f"none: promoted run {baseline.run_id} did not become ready: {tl.reason if tl else 'exited at start'}"
    ctx.hold_baseline(BaselineServer(c.base_url, tl.model or ctx.cfg.boot.served_model_name or MODEL_MOUNT,
                                     stop=lambda: (c.stop(), c.remove()), run_id=baseline.run_id,
                                     image=baseline.image.by_digest, model_digest=baseline.model.digest,
                                     pid=c.pid))
    ctx.reporter.step(f"boot: baseline run {baseline.run_id} ready in {tl.first_completion_s:.2f}s "
                      "beside the candidate")
    return f"run {baseline.run_id} ({baseline.image.by_digest}, model {baseline.model.digest})"


def _not_ready(tl: StartupTimeline, cfg: PipelineConfig) -> str:
    """Why the server was not ready, naming the setting when it ran out of time."""
    return tl.reason + (f" (boot.ready_timeout_s={cfg.boot.ready_timeout_s:g}s)" if tl.timed_out else "")


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"


def _stop(c: Container, run_dir: Path, log_name: str) -> None:
    """Stop the kept server; its whole log (bench and eval included) replaces the boot-time one."""
    c.stop()
    _save_logs(run_dir, c, log_name)
    c.remove()


def reuse_key(run: RunRecord, cfg: PipelineConfig, _options: StageOptions) -> dict[str, object] | None:
    # Reused only with bench, and only when no later step needs a live server (the runner).
    if run.release.model_digest is None:
        return None
    return {"image": run.release.image_digest, "model": run.release.model_digest,
            "boot": cfg.boot.model_dump(mode="json")}


_LOAD = "samples:load_time_s"

# The help of `llmgate boot`.
HELP = (
    "Boot the run's image with its weights mounted read-only; time cold starts and readiness "
    "honesty.\n"
    "\n"
    "Exit 0 ready, 3 never ready or died. The server is stopped when the command ends.\n"
    "\n"
    "Example: llmgate boot --run 3f2a9c1b7d4e"
)

SPEC = StageSpec(
    help=HELP,
    stage=Stage.BOOT, evidence=True, run=boot_stage, details=BootDetails, credentials=EVIDENCE, reuse_key=reuse_key,
    measurement=True, measures_machine=True, starts_server=True,
    metrics=(
        Metric("load_time_s", "s", "lower", _LOAD),
        Metric("port_open_s", "s", "lower"),
        Metric("health_ok_s", "s", "lower"),
        Metric("first_completion_s", "s", "lower"),
        Metric("load_time_p50_s", "s", "lower", _LOAD),
        Metric("load_time_p95_s", "s", "lower", _LOAD),
        Metric("readiness_honest", "bool", "higher"),
    ),
    samples=(Series("load_time_s"),),
    doc="start the image with the weights mounted, cold starts timed to the first completion",
    plans={"dagger": Variant(doc="measure the GPU service Dagger started: port, readiness and first completion")},
)
