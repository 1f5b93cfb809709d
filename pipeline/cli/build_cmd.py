"""`llmgate build` (new run: build, push, record the digest) and `llmgate leak` (secret leak proof)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import RunOpt, app, console, handle_errors, out, save_run, state
from pipeline.errors import ExitCode

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="llmgate.yaml (default: ./llmgate.yaml if present).")]


@app.command()
@handle_errors
def build(
    config: ConfigOpt = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Image tag (default: short git commit).")] = None,
    dockerfile: Annotated[Path | None, typer.Option("--dockerfile", "-f", help="Overrides build.dockerfile.")] = None,
) -> None:
    """Build the serving image with BuildKit secrets, push it, and start a run identified by its digest.

    Exit 0 built and pushed, 2 bad input/config, 3 infrastructure failure or a failed build.
    """
    from pipeline.cli.rich_reporter import RichReporter
    from pipeline.config import config_hash, load_config
    from pipeline.models import ImageRef, RunRecord, StageStatus
    from pipeline.stages.build import build_stage, default_tag

    cfg = load_config(config)
    if tag is not None:
        cfg.build.tag = tag
    if dockerfile is not None:
        cfg.build.dockerfile = str(dockerfile)
    ws = state.workspace()
    run = RunRecord(target=cfg.target, image=ImageRef(repository=cfg.build.repository, tag=cfg.build.tag),
                    source_commit=default_tag(Path(cfg.build.context)), config_hash=config_hash(cfg))
    result = build_stage(run, cfg, ws, RichReporter(console))
    run.add_stage(result)
    path = save_run(ws, run, None)
    if result.status is not StageStatus.OK:
        console.print(f"[bold red]build failed:[/] {result.reason}")
        console.print(f"log: {result.artifacts[0].path if result.artifacts else '-'}; run: {path}")
        raise typer.Exit(int(ExitCode.INFRA))
    out.print(f"run {run.run_id}: {run.image.by_digest}")
    console.print(f"build {result.metrics['build_s']:.1f}s, {result.metrics['image_bytes'] / 1e6:.0f} MB; run: {path}")


@app.command()
@handle_errors
def leak(run_ref: RunOpt = None, config: ConfigOpt = None) -> None:
    """Search the run's pushed image (manifest, config, history, every layer) for build secret bytes.

    Exit 0 none found, 1 a secret leaked, 2 bad input, 3 registry unreachable.
    """
    from pipeline.cli.rich_reporter import RichReporter
    from pipeline.config import load_config
    from pipeline.stages.leak import leak_stage

    cfg = load_config(config)
    ws = state.workspace()
    run = ws.load_run(run_ref)
    result = leak_stage(run, cfg, ws, RichReporter(console))
    run.add_stage(result)
    save_run(ws, run, run_ref)
    leaks = int(result.metrics["leaks"] or 0)
    out.print(f"leaks: {leaks} ({result.reason})")
    raise typer.Exit(int(ExitCode.GATE_FAILED if leaks else ExitCode.PASS))
