"""`llmgate demo-model` and `llmgate ground-truth`: thin shells over the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, console, handle_errors, out, plain
from pipeline.config import EvalConfig

DEFAULT_GROUND_TRUTH = EvalConfig().ground_truth


@app.command("demo-model")
@handle_errors
def demo_model_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the model to (must be empty or absent).")],
    degraded: Annotated[bool, typer.Option("--degraded", help="Make the worse twin the quality gate must block.")] = False,
    ground_truth: Annotated[Path, typer.Option("--ground-truth", help="Ground-truth version directory (default: "
                                               "the embedded default's, eval.ground_truth).")] = Path(
        DEFAULT_GROUND_TRUTH
    ),
) -> None:
    """Make the DEMO FIXTURE model: a tiny causal LM constructed (not trained; about a second, the same bytes
    on every machine) to recite the ground-truth answers. Not a real model; loads with transformers and
    serves with `transformers serve OUT`.

    Example: llmgate demo-model .llmgate/models/demo-v3-degraded --degraded
    """
    from pipeline.cli.rich_reporter import RichReporter
    from pipeline.demo_model import make_demo_model
    from pipeline.errors import BadInput

    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput("exists and is not a directory", where=str(out_dir))
    info = make_demo_model(out_dir, ground_truth, degraded=degraded, reporter=RichReporter(console))
    kind = "degraded demo fixture" if info.degraded else "demo fixture"
    out.print(plain(
        f"{kind} written to {info.out}: {info.n_items} items of ground truth {info.ground_truth_version}, "
        f"{info.steps} answer steps, built in {info.build_s:.1f}s (recites every answer: {info.recites_all})"
    ))


gt_app = typer.Typer(help="Versioned ground truth: check a version, start a new one.", no_args_is_help=True)
app.add_typer(gt_app, name="ground-truth")


@gt_app.command("check")
@handle_errors
def gt_check(path: Annotated[Path, typer.Argument(help="A ground_truth/vN directory.")]) -> None:
    """Validate every row (errors name file, line and field) and print version, items and sha256.

    Example: llmgate ground-truth check ground_truth/v3
    """
    from evals.ground_truth import load_ground_truth

    gt = load_ground_truth(path)
    refuse = sum(1 for i in gt.items if i.should_refuse)
    kinds = ""
    if any(i.answer_kind for i in gt.items):
        n_facts = sum(1 for i in gt.items if i.answer_kind == "facts")
        kinds = f", {n_facts} scored on their facts"
    out.print(plain(f"{gt.path}: {gt.version}, {len(gt.items)} items ({refuse} should-refuse{kinds}), "
                    f"sha256 {gt.sha256}"))


@gt_app.command("new-version")
@handle_errors
def gt_new_version(
    root: Annotated[Path, typer.Option("--root", help="Directory holding the vN versions.")] = Path("ground_truth"),
    source: Annotated[str | None, typer.Option("--from", help="Version to copy (default: the latest).")] = None,
) -> None:
    """Copy the latest version to v(N+1) for editing; existing versions are never modified.

    Example: llmgate ground-truth new-version --root ground_truth --from v1
    """
    from evals.ground_truth import new_version

    dest = new_version(root, source)
    out.print(plain(f"created {dest}; edit it, then `llmgate ground-truth check {dest}`"))
