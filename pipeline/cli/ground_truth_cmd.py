"""`llmgate ground-truth`: check a ground-truth version, start a new one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, handle_errors, out, plain

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
