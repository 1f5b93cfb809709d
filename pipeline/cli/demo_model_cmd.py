"""`llmgate demo-model`: the tiny demo fixture model the quick start serves."""

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
