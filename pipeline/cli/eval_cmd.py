"""`llmgate demo-model`, `llmgate eval` and `llmgate ground-truth`: thin shells over the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import RunOpt, app, console, handle_errors, out, save_run, state


@app.command("demo-model")
@handle_errors
def demo_model_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the model to (must be empty or absent).")],
    degraded: Annotated[bool, typer.Option("--degraded", help="Make the worse twin the quality gate must block.")] = False,
    ground_truth: Annotated[Path, typer.Option("--ground-truth", help="Ground-truth version directory.")] = Path(
        "ground_truth/v1"
    ),
) -> None:
    """Make the DEMO FIXTURE model: a tiny causal LM trained (seeded, CPU, well under a minute) to recite
    the ground-truth answers. Not a real model; loads with transformers and serves with `transformers serve OUT`."""
    from pipeline.cli.rich_reporter import RichReporter
    from pipeline.demo_model import make_demo_model

    info = make_demo_model(out_dir, ground_truth, degraded=degraded, reporter=RichReporter(console))
    kind = "degraded demo fixture" if info.degraded else "demo fixture"
    out.print(
        f"{kind} written to {info.out}: {info.n_items} items of ground truth {info.ground_truth_version}, "
        f"{info.epochs} epochs in {info.train_s:.1f}s (answer loss {info.final_loss:.4f})"
    )


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="llmgate.yaml (default: ./llmgate.yaml if present).")]


@app.command("eval")
@handle_errors
def eval_cmd(
    run_ref: RunOpt = None,
    config: ConfigOpt = None,
    url: Annotated[str | None, typer.Option("--url", help="Evaluate this server instead of the booted one.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name to send (default: what boot found).")] = None,
    ground_truth: Annotated[Path | None, typer.Option("--ground-truth", help="Ground-truth version dir.")] = None,
    rescore: Annotated[
        bool, typer.Option("--rescore", help="Recompute scores from the run's stored responses (no server).")
    ] = False,
    judge_url: Annotated[str | None, typer.Option("--judge-url", help="OpenAI-compatible judge base URL.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Judge model name.")] = None,
    judge_key_env: Annotated[
        str | None, typer.Option("--judge-key-env", help="Environment variable holding the judge API key.")
    ] = None,
) -> None:
    """Score the server on the ground truth per dimension (correctness, refusal, latency, judged ones
    when a judge is set); `--rescore --run ID` recomputes the scores offline from stored responses."""
    from pipeline.config import JudgeConfig, load_config
    from pipeline.errors import BadInput, InfraError
    from pipeline.models import ImageRef, RunRecord, StageStatus
    from pipeline.progress import PrintReporter
    from pipeline.stages.evaluate import eval_stage
    from pipeline.stages.evaluate import rescore as rescore_fn

    cfg = load_config(config)
    if ground_truth is not None:
        cfg.eval.ground_truth = str(ground_truth)
    if judge_url or judge_model:
        if not (judge_url and judge_model):
            raise BadInput("--judge-url and --judge-model go together", where="--judge-url/--judge-model")
        cfg.eval.judge = JudgeConfig(
            base_url=judge_url, model=judge_model, **({"api_key_env": judge_key_env} if judge_key_env else {})
        )
    ws = state.workspace()
    if rescore:
        if url:
            raise BadInput("--rescore works on stored responses; it takes no --url", where="--url")
        run = ws.load_run(run_ref)
        res = rescore_fn(run, cfg, ws, PrintReporter(), judge=cfg.eval.judge)
    else:
        if url is not None and run_ref is None:  # an external server: a run of its own
            run = RunRecord(image=ImageRef(repository="external"), target=cfg.target, labels={"eval_url": url})
        else:
            run = ws.load_run(run_ref)
        res = eval_stage(run, cfg, ws, PrintReporter(), base_url=url, model=model)
    run.add_stage(res)
    save_run(ws, run, run_ref)
    out.print(f"run {run.run_id}: eval {res.status.value}{' (rescored)' if rescore else ''}", highlight=False)
    for k, v in res.metrics.items():
        out.print(f"  {k}: {v:.4f}" if v is not None else f"  {k}: -", highlight=False)
    for dim, info in res.details.get("scorers", {}).items():
        if info.get("status", "run") != "run":
            out.print(f"  {dim}: {info['status']}", highlight=False)
    if res.status is not StageStatus.OK:
        raise InfraError(res.reason or "eval failed", where="eval")


gt_app = typer.Typer(help="Versioned ground truth: check a version, start a new one.", no_args_is_help=True)
app.add_typer(gt_app, name="ground-truth")


@gt_app.command("check")
@handle_errors
def gt_check(path: Annotated[Path, typer.Argument(help="A ground_truth/vN directory.")]) -> None:
    """Validate every row (errors name file, line and field) and print version, items and sha256."""
    from evals.ground_truth import load_ground_truth

    gt = load_ground_truth(path)
    refuse = sum(1 for i in gt.items if i.should_refuse)
    out.print(f"{gt.path}: {gt.version}, {len(gt.items)} items ({refuse} should-refuse), sha256 {gt.sha256}")


@gt_app.command("new-version")
@handle_errors
def gt_new_version(
    root: Annotated[Path, typer.Option("--root", help="Directory holding the vN versions.")] = Path("ground_truth"),
    source: Annotated[str | None, typer.Option("--from", help="Version to copy (default: the latest).")] = None,
) -> None:
    """Copy the latest version to v(N+1) for editing; existing versions are never modified."""
    from evals.ground_truth import new_version

    dest = new_version(root, source)
    out.print(f"created {dest}; edit it, then `llmgate ground-truth check {dest}`")
