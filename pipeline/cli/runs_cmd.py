"""`llmgate runs list|show`, `history` and `status`: ask the store (and, for status, the live target).

Every command prints a table for people and, with `--json`, one JSON document for tools. A target is
always `--target`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.text import Text

from pipeline.cli.app import ConfigOpt, app, handle_errors, out, state, warn_unreadable
from pipeline.errors import BadInput
from pipeline.models import Decision, RunRecord, check_run_id
from pipeline.store import Store, UnreadableRecord

runs_app = typer.Typer(help="Runs in the store: list them, show one.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]
TagFilter = Annotated[str | None, typer.Option("--tag", help="Only runs of this image tag.")]
TargetFilter = Annotated[str | None, typer.Option("--target", help="Only runs for this promotion target.")]


def _print_json(doc: Any) -> None:
    """JSON on stdout, unwrapped and never read as markup (`typer.echo`, not rich)."""
    if isinstance(doc, BaseModel):
        text = doc.model_dump_json(indent=2)
    else:
        text = json.dumps(doc, indent=2, default=lambda o: o.model_dump(mode="json") if isinstance(o, BaseModel)
                          else str(o))
    typer.echo(text)


def find_run(store: Store, ref: str) -> RunRecord:
    """A run by exact id, else the newest run of the tag `ref`, else a run whose id starts with `ref`."""
    try:
        check_run_id(ref, where="RUN|TAG")
        exact = store.get(ref)
        if exact.run_id == ref:
            return exact
    except UnreadableRecord:
        raise
    except BadInput:
        exact = None
    tagged = store.newest(tag=ref)
    if tagged is not None:
        return tagged
    if exact is not None:
        return exact  # a unique id prefix
    raise BadInput(f"no run with id {ref!r} and no run tagged {ref!r} in the store", where="RUN|TAG",
                   hint="`llmgate runs list` shows what is there")


@runs_app.command("list")
@handle_errors
def runs_list(
    tag: TagFilter = None,
    target: TargetFilter = None,
    decision: Annotated[Decision | None, typer.Option("--decision", help="Only runs with this decision.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only runs created since then: an age (30m, 12h, "
                                              "1d, 2w) or an ISO 8601 date/time.", metavar="AGE|ISO")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs (0: all).", min=0)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Runs, newest first: id, tag, target, created, decision, image and model digests, promoted marker
    (★ serves its target now, ✓ was promoted before).

    Example: llmgate runs list --target production --decision pass --since 7d
    """
    from pipeline.report.listing import parse_since, run_rows, runs_table, serving_from_store

    store = state.workspace().store
    runs = store.runs(tag=tag, target=target, decision=decision, since=parse_since(since) if since else None,
                      limit=limit or None)
    rows = run_rows(runs, serving_from_store(store, {r.target for r in runs}))
    if as_json:
        _print_json({"runs": rows, "unreadable": dict(sorted(store.unreadable.items()))})
        return
    out.print(runs_table(rows))
    warn_unreadable(store.unreadable)


@runs_app.command("show")
@handle_errors
def runs_show(
    ref: Annotated[str, typer.Argument(help="Run id (or unique prefix), or a tag: its newest run.",
                                       metavar="RUN|TAG")],
    as_json: JsonOpt = False,
) -> None:
    """One run: the release it is about (image, model, ground truth, policy), its gate verdicts and its
    stages with their real durations, or the run each reused result came from.

    Example: llmgate runs show demo-good
    """
    from pipeline.report.listing import run_detail, run_detail_renderable

    run = find_run(state.workspace().store, ref)
    detail = run_detail(run)
    if as_json:
        _print_json(detail)
        return
    out.print(run_detail_renderable(detail, run))


@app.command("history")
@handle_errors
def history_cmd(
    tag: Annotated[str | None, typer.Argument(help="Image tag whose runs to show.", metavar="[TAG]")] = None,
    target: TargetFilter = None,
    as_json: JsonOpt = False,
) -> None:
    """Verdicts over time, oldest first, of one tag or of every run for a target: decision, promoted
    marker, digests and the key gates' values.

    Example: llmgate history --target production
    """
    from pipeline.report.listing import history, history_table

    if tag is None and target is None:
        raise BadInput("say whose history: give a TAG or --target TARGET", where="TAG/--target")
    h = history(state.workspace().store, tag=tag, target=target)
    if as_json:
        _print_json(h)
        return
    if not h.runs:
        out.print(Text("no runs" + (f" of tag {tag}" if tag else "") + (f" for target {target}" if target else "")))
        return
    out.print(history_table(h))


@app.command("status")
@handle_errors
def status_cmd(
    target: Annotated[str, typer.Option("--target", help="A target declared in targets.yaml, e.g. canary.")],
    gitops_repo: Annotated[Path | None, typer.Option("--gitops-repo", help="Also read the overlay the GitOps "
                                                     "repository holds for TARGET.", metavar="DIR")] = None,
    kubeconfig: Annotated[Path | None, typer.Option("--kubeconfig", help="Also read the live rollout in the "
                                                    "target's cluster (a mounted secret file).", metavar="FILE")] = None,
    in_cluster: Annotated[bool, typer.Option("--in-cluster", help="Use the pod's service account.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What TARGET serves according to the store (the release pair, since when, by which run, the signed
    verdict that authorised it, the last attempt, a promotion in progress) and, with a cluster or GitOps
    repository given, what the backend says runs there now (rollout phase, in flight or not). Exit 0;
    3 when the backend cannot be read.

    Example: llmgate status --target canary --kubeconfig /run/secrets/kubeconfig
    """
    from pipeline.cli.promote_cmd import load_target, target_backend
    from pipeline.report.listing import status_renderable, status_view

    store = state.workspace().store
    live = None
    if gitops_repo is not None or kubeconfig is not None or in_cluster:
        chosen, backend = target_backend(target, config, gitops_repo, kubeconfig, in_cluster)
        live = backend.status(target)
    else:
        chosen = load_target(target, config)
    view = status_view(target, store.target_status(target, lock_key=chosen.lock_key), store, live)
    if as_json:
        _print_json(view)
        return
    out.print(status_renderable(view))
