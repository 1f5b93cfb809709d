"""`llmgate bench`: streamed load against the server `llmgate boot --keep` left running, or `--url`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from pipeline.cli.app import RunOpt, app, handle_errors, out, save_run, state
from pipeline.errors import ExitCode, InfraError

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="llmgate.yaml (default: ./llmgate.yaml if present).")]


@app.command()
@handle_errors
def bench(
    run_ref: RunOpt = None,
    config: ConfigOpt = None,
    url: Annotated[str | None, typer.Option("--url", help="Bench this server instead of the booted one.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name to send (default: what boot found).")] = None,
    shape: Annotated[Literal["concurrency", "poisson", "sweep"] | None, typer.Option("--shape")] = None,
    requests: Annotated[int | None, typer.Option("--requests", min=1)] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1)] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Poisson arrivals, requests/s.")] = None,
    prompts: Annotated[Literal["ground_truth", "synthetic"] | None, typer.Option("--prompts")] = None,
    stop_server: Annotated[bool, typer.Option("--stop-server", help="Stop the booted server afterwards.")] = False,
) -> None:
    """Measure TTFT, TPOT, ITL, E2E, throughput, error rate and goodput; exit 0 measured, 3 server failed."""
    from pipeline.config import load_config
    from pipeline.models import ImageRef, RunRecord, StageStatus
    from pipeline.progress import PrintReporter
    from pipeline.stages.bench import bench_stage
    from pipeline.stages.boot import stop_server as stop

    cfg = load_config(config)
    b = cfg.bench
    for name, value in (("shape", shape), ("requests", requests), ("concurrency", concurrency), ("rate_rps", rate),
                        ("prompts", prompts)):
        if value is not None:
            setattr(b, name, value)
    ws = state.workspace()
    if url is not None and run_ref is None:  # an external server: a run of its own
        run = RunRecord(image=ImageRef(repository="external"), target=cfg.target, labels={"bench_url": url})
    else:
        run = ws.load_run(run_ref)
    try:
        res = bench_stage(run, cfg, ws, PrintReporter(), base_url=url, model=model)
    finally:
        if stop_server and run.stage("boot") is not None:
            stop(run.stages["boot"])
    run.add_stage(res)
    save_run(ws, run, run_ref)
    m = res.metrics
    out.print(f"run {run.run_id}: bench {res.status.value}", highlight=False)
    for k, v in m.items():
        out.print(f"  {k}: {v}", highlight=False)
    if res.details.get("error_reasons"):
        out.print(f"  errors: {res.details['error_reasons']}", highlight=False, soft_wrap=True)
    if res.status is not StageStatus.OK:
        raise InfraError(res.reason or "bench failed", where="bench")
    raise typer.Exit(int(ExitCode.PASS))
