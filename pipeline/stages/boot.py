"""Boot stage: start the image with the model mounted read-only and measure how long until it serves.

Load time = container start (the engine's start call) -> end of the first successful streamed
completion. Milestones: `port_open_s` (published port accepts), `health_ok_s` (readiness path
answers 200), `first_completion_s` (= load time). Each repetition is a cold start (a new container);
single-value milestones come from the first repetition, `load_time_p50_s`/`load_time_p95_s` from all.
`readiness_honest` is 1 when the readiness probe agreed with real completions in every repetition
(see `pipeline.bench.startup`). A server that never becomes ready within `boot.ready_timeout_s`, or
whose container exits, makes the stage `failed` with the reason, exit code and last log lines; the
CLI turns that into exit 3. Container logs are kept, redacted, as artifacts.

`booted_server(...)` is the context manager the main job uses: it boots, records the stage in the run,
yields a `ServerHandle` for bench and eval, and stops the container on exit.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from pipeline.adapters.docker_run import MODEL_MOUNT, Container, DockerRunner, GpuReport, RunSpec, query_gpus
from pipeline.bench.startup import StartupTimeline, watch_startup
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput, InfraError
from pipeline.models import Artifact, RunRecord, StageResult, StageStatus
from pipeline.progress import NullReporter, Reporter
from pipeline.redact import redact_text
from pipeline.workspace import Workspace


class ServerInfo(BaseModel):
    base_url: str
    model: str | None = None
    container_id: str
    container_name: str
    image: str


class BootRepetition(BaseModel):
    rep: int
    container_name: str
    container_id: str
    pull_s: float
    start_call_s: float
    timeline: dict[str, Any]
    log_artifact: str | None = None


class BootDetails(BaseModel):
    image: str
    model_dir: str
    readiness_path: str
    gpus_requested: str
    gpu: dict[str, Any] | None = None
    repetitions: list[BootRepetition] = []
    readiness_reasons: list[str] = []
    server: ServerInfo | None = None  # set while a server booted by this stage is left running


@dataclass
class ServerHandle:
    """A running server for bench and eval."""

    base_url: str
    model: str | None
    container: Container
    result: StageResult

    @property
    def container_id(self) -> str:
        return self.container.id

    def stop(self) -> None:
        self.container.stop()
        self.container.remove()


def _alive(c: Container) -> tuple[bool, int | None]:
    status, code = c.state()
    return status in ("created", "running", "restarting"), code


def _save_logs(ws: Workspace, run: RunRecord, c: Container, name: str) -> Artifact:
    path = ws.run_dir(run.run_id) / name
    text = redact_text(c.logs())
    path.write_text(text)
    return Artifact(
        name=name, path=str(path), media_type="text/plain", sha256=hashlib.sha256(text.encode()).hexdigest()
    )


def _spec(cfg: PipelineConfig, image: str, run: RunRecord, rep: int) -> RunSpec:
    b = cfg.boot
    model_dir = Path(b.model_dir)
    if not (model_dir / "config.json").is_file():
        raise BadInput(
            f"no model at {model_dir} (config.json missing)", where="boot.model_dir", hint="llmgate demo-model OUT"
        )
    return RunSpec(
        image=image,
        model_dir=model_dir,
        container_port=b.container_port,
        env=dict(b.env),
        gpus=b.gpus,
        memory=b.memory,
        name_prefix=f"llmgate-boot-{run.run_id}-{rep}",
        labels={"llmgate.run": run.run_id},
    )


def _gpu_report(cfg: PipelineConfig) -> GpuReport | None:
    if cfg.boot.gpus in ("none", 0):
        return None
    report = query_gpus()
    if not report.gpus:
        raise InfraError(f"GPUs requested (boot.gpus={cfg.boot.gpus}) but {report.reason}", where="boot.gpus")
    return report


def boot_once(runner: DockerRunner, spec: RunSpec, cfg: PipelineConfig) -> tuple[Container, StartupTimeline, float]:
    """One cold start: pull if needed (not timed), start, watch until ready/dead/timeout."""
    pull_s = runner.ensure_image(spec.image)
    c = runner.start(spec)
    b = cfg.boot
    if c.host_port is None:  # exited before the engine published the port
        _status, code = _alive(c)
        tl = StartupTimeline(died=True, exit_code=code, reason=f"container exited with code {code} at start")
        return c, tl, pull_s
    tl = asyncio.run(
        watch_startup(
            base_url=c.base_url,
            alive=lambda: _alive(c),
            t0=c.started_at,
            timeout_s=b.ready_timeout_s,
            readiness_path=b.readiness_path,
            completion_path=b.completion_path,
            model=b.served_model_name,
            interval_s=b.probe_interval_s,
            lag_tolerance_s=b.readiness_lag_tolerance_s,
            request_timeout_s=min(60.0, b.ready_timeout_s),
        )
    )
    return c, tl, pull_s


def _boot(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter,
    runner: DockerRunner,
    image: str | None,
    keep: bool,
) -> tuple[StageResult, Container | None, StartupTimeline | None]:
    image = image or run.image.by_digest
    result = StageResult(stage="boot", status=StageStatus.OK)
    gpu = _gpu_report(cfg)
    details = BootDetails(
        image=image,
        model_dir=str(Path(cfg.boot.model_dir).resolve()),
        readiness_path=cfg.boot.readiness_path,
        gpus_requested=str(cfg.boot.gpus),
        gpu=gpu.as_dict() if gpu else {"gpus": [], "reason": "not requested (boot.gpus=none)"},
    )
    loads: list[float] = []
    first: StartupTimeline | None = None
    honest: list[bool | None] = []
    kept: tuple[Container, StartupTimeline] | None = None
    reps = cfg.boot.repetitions
    for rep in range(reps):
        reporter.step(f"boot {rep + 1}/{reps}: starting {image}")
        c, tl, pull_s = boot_once(runner, _spec(cfg, image, run, rep), cfg)
        last = keep and rep == reps - 1 and tl.ready
        log_name = f"boot-rep{rep}.log"
        if not last:
            c.stop()
        art = _save_logs(ws, run, c, log_name)
        result.artifacts.append(art)
        details.repetitions.append(
            BootRepetition(
                rep=rep,
                container_name=c.name,
                container_id=c.id,
                pull_s=pull_s,
                start_call_s=c.start_call_s,
                timeline=tl.as_dict(),
                log_artifact=art.path,
            )
        )
        first = first or tl
        honest.append(tl.readiness_honest)
        details.readiness_reasons.append(tl.readiness_reason)
        if not tl.ready:
            tail = "\n".join(c.logs(tail=cfg.boot.log_tail_lines).splitlines()[-cfg.boot.log_tail_lines :])
            c.remove()
            result.status = StageStatus.FAILED
            result.reason = f"{tl.reason}\n--- last log lines ({c.name}) ---\n{tail}"
            break
        assert tl.first_completion_s is not None
        loads.append(tl.first_completion_s)
        reporter.step(
            f"boot {rep + 1}/{reps}: ready in {tl.first_completion_s:.2f}s (port {tl.port_open_s}, "
            f"probe {tl.health_ok_s}); readiness honest: {tl.readiness_honest}"
        )
        if last:
            kept = (c, tl)
            details.server = ServerInfo(
                base_url=c.base_url, model=tl.model, container_id=c.id, container_name=c.name, image=image
            )
        else:
            c.remove()
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
    result.details = details.model_dump(mode="json")
    result.finish()
    return result, kept[0] if kept else None, kept[1] if kept else None


def boot_stage(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    runner: DockerRunner | None = None,
    image: str | None = None,
    keep: bool = False,
) -> StageResult:
    """Boot `cfg.boot.repetitions` times. With `keep`, the last server stays up and
    `details.server` says where (for `llmgate bench` run separately); stop it with `stop_server`."""
    result, _, _ = _boot(run, cfg, ws, reporter, runner or DockerRunner(), image, keep)
    return result


@contextmanager
def booted_server(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    runner: DockerRunner | None = None,
    image: str | None = None,
) -> Iterator[ServerHandle]:
    """Boot, record the boot stage in `run`, yield the running server, stop it on exit (its full
    log replaces the last repetition's artifact, so bench/eval-time server logs are kept too).
    A failed boot is recorded and raised as InfraError (exit 3)."""
    runner = runner or DockerRunner()
    result, container, tl = _boot(run, cfg, ws, reporter, runner, image, keep=True)
    run.add_stage(result)
    if container is None or tl is None:
        raise InfraError(f"server did not boot: {(result.reason or '').splitlines()[0]}", where="boot")
    # The images serve the model mounted at MODEL_PATH, and `transformers serve` answers only to that
    # path when the server lists no model name.
    served = tl.model or cfg.boot.served_model_name or MODEL_MOUNT
    handle = ServerHandle(container.base_url, served, container, result)
    try:
        yield handle
    finally:
        container.stop()
        _save_logs(ws, run, container, f"boot-rep{cfg.boot.repetitions - 1}.log")
        container.remove()
        details = dict(result.details)
        details["server"] = None
        result.details = details


def stop_server(result: StageResult, runner: DockerRunner | None = None) -> bool:
    """Stop and remove the server a `keep` boot left running; False when there was none."""
    server = (result.details or {}).get("server")
    if not server:
        return False
    import docker.errors

    runner = runner or DockerRunner()
    try:
        raw = runner.client.containers.get(server["container_id"])
    except docker.errors.NotFound:
        return False
    raw.stop(timeout=10)
    raw.remove(force=True)
    return True


def served_target(run: RunRecord, base_url: str | None, model: str | None, *, purpose: str) -> tuple[str, str | None]:
    """Where a client stage sends requests: `--url`, else the server the boot stage left running."""
    if base_url:
        return base_url.rstrip("/"), model
    boot = run.stages.get("boot")
    server = (boot.details or {}).get("server") if boot else None
    if not server:
        raise BadInput(
            f"run {run.run_id} has no running server to {purpose}",
            where="boot.details.server",
            hint="run `llmgate boot --keep` first, or pass --url",
        )
    return str(server["base_url"]).rstrip("/"), model or server.get("model")
