"""`llmgate run`: the main job on one image, every stage, one verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, console, handle_errors, out, save_run, state
from pipeline.cli.rich_reporter import RichReporter
from pipeline.config import load_config
from pipeline.orchestrate import exit_code_for, run_pipeline


@app.command("run")
@handle_errors
def run_cmd(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="llmgate.yaml (default: embedded local default).")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Image tag (default: short git commit).")] = None,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Model directory to serve (mounted read-only).")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Gate policy file (overrides the config's gates_file).")] = None,
    skip: Annotated[list[str] | None, typer.Option("--skip", help="Stage to skip (recorded as not run; its gates decide).")] = None,
) -> None:
    """Build → push → boot → bench → eval → gate → record; print the verdict and write report.json/HTML.

    Exit codes: 0 every required gate passed, 1 a gate failed, 2 bad input/config, 3 infrastructure failure.
    """
    cfg = load_config(config)
    if model_dir is not None:
        cfg.boot.model_dir = str(model_dir)
    if policy is not None:
        cfg.gates_file = str(policy)
    ws = state.workspace()
    run = run_pipeline(cfg, ws, RichReporter(console), tag=tag, skip=tuple(skip or ()))
    from pipeline.gates.outputs import verdict_table

    out.print(verdict_table(run.gates, run.decision, run.decision_reason, title=f"gates: {run.image.by_tag}"))
    run_dir = ws.run_dir(run.run_id)
    out.print(f"run {run.run_id}: [bold]{run.decision.value}[/] {run.decision_reason}")
    out.print(f"record: {run_dir / 'run.json'}  report: {run_dir / 'report.html'}")
    raise typer.Exit(int(exit_code_for(run)))


@app.command("new-run")
@handle_errors
def new_run_cmd(
    image: Annotated[str, typer.Option("--image", help="Image already built elsewhere, by digest (repo@sha256:…).")],
    tag: Annotated[str | None, typer.Option("--tag", help="Tag label for dashboards.")] = None,
    target: Annotated[str, typer.Option("--target", help="Promotion target the run is for.")] = "default",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="llmgate.yaml.")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Also write the record to this run.json.")] = None,
) -> None:
    """Start a run record for an image built outside `llmgate build` (e.g. by Dagger), identified by digest."""
    from pipeline.ci_plan import require_digest
    from pipeline.models import ImageRef
    from pipeline.runs import new_run

    ref = ImageRef.parse(require_digest(image, where="--image"))
    cfg = load_config(config)
    cfg.target = target
    run = new_run(cfg, tag=tag or ref.tag)
    run.image = ImageRef(repository=ref.repository, tag=tag or ref.tag, digest=ref.digest)
    ws = state.workspace()
    path = save_run(ws, run, str(out_path) if out_path else None)
    out.print(f"{run.run_id} {path}")
