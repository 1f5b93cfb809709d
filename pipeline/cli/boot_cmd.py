"""`llmgate boot`: start the run's image, measure load time and readiness honesty, optionally keep it up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import RunOpt, app, console, handle_errors, out, state
from pipeline.errors import ExitCode, InfraError

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="llmgate.yaml (default: ./llmgate.yaml if present).")]


@app.command()
@handle_errors
def boot(
    run_ref: RunOpt = None,
    config: ConfigOpt = None,
    image: Annotated[
        str | None, typer.Option("--image", help="Boot this image reference instead of the run's digest (new run).")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the last server running for `llmgate bench`.")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the server a `boot --keep` left running, and exit.")] = False,
    repetitions: Annotated[int | None, typer.Option("--repetitions", min=1, help="Cold starts (default: config).")] = None,
) -> None:
    """Boot the image with the model mounted read-only; exit 0 ready, 3 never ready or died."""
    from pipeline.config import load_config
    from pipeline.models import ImageRef, RunRecord, StageStatus
    from pipeline.progress import PrintReporter
    from pipeline.stages.boot import boot_stage, stop_server

    cfg = load_config(config)
    if repetitions is not None:
        cfg.boot.repetitions = repetitions
    ws = state.workspace()
    if stop:
        run = ws.load_run(run_ref)
        res = run.stage("boot")
        stopped = bool(res) and stop_server(res)  # type: ignore[arg-type]
        if res is not None:
            res.details = {**res.details, "server": None}
            ws.checkpoint(run)
        console.print("server stopped" if stopped else "no running server recorded for this run")
        return
    if image is not None:
        run = RunRecord(image=ImageRef.parse(image), target=cfg.target, labels={"boot_image": image})
    else:
        run = ws.load_run(run_ref)
    res = boot_stage(run, cfg, ws, PrintReporter(), image=image, keep=keep)
    run.add_stage(res)
    ws.checkpoint(run)
    m = res.metrics
    out.print(f"run {run.run_id}: boot {res.status.value}", highlight=False)
    for k in ("load_time_s", "port_open_s", "health_ok_s", "first_completion_s", "load_time_p50_s", "load_time_p95_s",
              "readiness_honest"):
        out.print(f"  {k}: {m.get(k)}", highlight=False)
    for reason in res.details.get("readiness_reasons", []):
        out.print(f"  readiness: {reason}", highlight=False, soft_wrap=True)
    if res.details.get("server"):
        out.print(f"  server: {res.details['server']['base_url']} (stop with `llmgate boot --stop --run {run.run_id}`)")
    if res.status is not StageStatus.OK:
        raise InfraError(res.reason or "boot failed", where="boot")
    raise typer.Exit(int(ExitCode.PASS))
