"""`llmgate promote`, `rollback`, `abort` and `targets`: move a gated release to a target, back, or stop a
canary; list the configured targets.

A target is configuration (`targets.yaml` at the project root: backend, namespace, the verdicts it
accepts; `pipeline.promote.targets`), and its backend is built from it (`pipeline.promote.factory`).
The command line says only which target and how this machine reaches it: `--gitops-repo` (a checkout
of the GitOps repository) or `--kubeconfig` / `--in-cluster`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from pipeline.cli.app import ConfigOpt, app, console, handle_errors, make_runner, out, plain, state
from pipeline.errors import BadInput, ExitCode

TargetOpt = Annotated[str, typer.Option("--target", help="A target declared in targets.yaml, e.g. canary.")]
GitopsOpt = Annotated[Path | None, typer.Option("--gitops-repo", help="Checkout of the GitOps repository holding "
                                                "the target's overlay (GitOps targets).", metavar="DIR")]
KubeconfigOpt = Annotated[Path | None, typer.Option("--kubeconfig", help="Reach the target's cluster with this "
                                                    "kubeconfig (a mounted secret file).", metavar="FILE")]
InClusterOpt = Annotated[bool, typer.Option("--in-cluster", help="Reach the cluster with the pod's service account.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print exactly what would change; change nothing.")]


def connections(gitops_repo: Path | None, kubeconfig: Path | None, in_cluster: bool) -> Any:
    from pipeline.promote.factory import Connections

    return Connections(gitops_repo=gitops_repo, kubeconfig=kubeconfig, in_cluster=in_cluster)


def load_target(name: str, config: Path | None) -> Any:
    """The configured target `name` (targets.yaml next to --config, else in the current directory)."""
    from pipeline.promote.targets import load_targets, targets_path

    return load_targets(targets_path(config), workdir=state.workdir).get(name)


def target_backend(name: str, config: Path | None, gitops_repo: Path | None, kubeconfig: Path | None,
                   in_cluster: bool) -> tuple[Any, Any]:
    """The target and the backend its configuration names, connected the way the flags say."""
    from pipeline.promote.factory import create_backend

    target = load_target(name, config)
    return target, create_backend(target, connections(gitops_repo, kubeconfig, in_cluster))


def _print(details: Any) -> None:
    out.print(Text.assemble((details.outcome, "bold"), f": {details.image} -> {details.target} ({details.mode})"))
    if details.model_digest:
        out.print(Text(f"model: {details.model_digest}"))
    g = details.guard
    if g.verdict_run:
        out.print(Text(f"verdict: run {g.verdict_run}, gated {g.verdict_at.isoformat() if g.verdict_at else '?'}"
                       + (f", policy {g.policy}" if g.policy else "")))
    if g.key:
        out.print(plain(f"key: {g.key}"))
    for label, value in (("previous", details.previous), ("reason", details.reason)):
        if value:
            out.print(plain(f"{label}: {value}"))
    if details.branch and details.outcome != "refused":
        out.print(Text(f"branch: {details.branch}" + (f" commit {details.commit}" if details.commit else "")))
    if details.diff:
        out.print(Text(details.diff), end="")
    if details.patch and details.outcome == "dry-run":
        out.print(Text(json.dumps(details.patch, indent=2)))
    for e in details.events:
        console.print(plain(f"  {e}"))


def _exit(outcome: str) -> None:
    raise typer.Exit(int(ExitCode.PASS if outcome in ("promoted", "noop", "dry-run") else ExitCode.GATE_FAILED))


def _promote_stage(run: Any, config: Path | None, request: Any) -> None:
    """Run `run`'s promote stage for `request` (a PromoteRequest), print what it did and exit with its code."""
    from pipeline.models import Stage

    runner = make_runner(config, run_plan=run.labels.get("llmgate.plan"), promote=request)
    details = runner.run_stage(run, Stage.PROMOTE).details
    _print(details)
    _exit(details.outcome)


@app.command()
@handle_errors
def promote(
    target: TargetOpt,
    run_ref: Annotated[str | None, typer.Option("--run", help="Run id (or unique prefix) in the store.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="The newest run of this tag.")] = None,
    gitops_repo: GitopsOpt = None,
    kubeconfig: KubeconfigOpt = None,
    in_cluster: InClusterOpt = False,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Promote a gated release: its image digest and model digest, only on a valid signature and a signed
    passing verdict for exactly that pair, gated for this target, under a policy the target accepts.
    Exit 0 promoted (or already there), 1 refused or aborted, 2 bad input, 3 infrastructure.

    Example: llmgate promote --target canary --run 3f2a9c1b7d4e --gitops-repo ../deploy
    """
    from pipeline.stages.context import PromoteRequest

    if (run_ref is None) == (tag is None):
        raise BadInput("say which release: give exactly one of --run RUN_ID or --tag TAG", where="--run/--tag")
    ws = state.workspace()
    run = ws.load_run(run_ref, tag=tag)
    chosen, backend = target_backend(target, config, gitops_repo, kubeconfig, in_cluster)
    _promote_stage(run, config, PromoteRequest(target=chosen, backend=backend, dry_run=dry_run))


@app.command()
@handle_errors
def rollback(
    target: TargetOpt,
    gitops_repo: GitopsOpt = None,
    kubeconfig: KubeconfigOpt = None,
    in_cluster: InClusterOpt = False,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Return TARGET to the release (image, model) promoted before the current one, from the audit trail,
    through the same guard as any promotion. Exit 0 rolled back, 1 refused, 2 nothing to roll back to,
    3 infrastructure.

    Example: llmgate rollback --target production --gitops-repo ../deploy
    """
    from pipeline.promote import audit
    from pipeline.stages.context import PromoteRequest

    ws = state.workspace()
    chosen, backend = target_backend(target, config, gitops_repo, kubeconfig, in_cluster)
    current, previous = audit.current_and_previous(ws.store, target)
    if current is None or previous is None or previous[0] is None:
        raise BadInput(f"no earlier promoted release of {target!r} to roll back to", where="--target")
    run = ws.store.get(previous[0])
    _promote_stage(run, config, PromoteRequest(target=chosen, backend=backend, dry_run=dry_run,
                                               rollback_of=audit.pair_text(current[1])))


@app.command()
@handle_errors
def abort(
    target: TargetOpt,
    gitops_repo: GitopsOpt = None,
    kubeconfig: KubeconfigOpt = None,
    in_cluster: InClusterOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Abort TARGET's in-flight canary and restore what served before, only if that release (image, model)
    still passes the guard for TARGET. Exit 0 aborted (or nothing in flight), 1 refused or the previous
    release is not serving again, 2 bad input, 3 infrastructure.

    Example: llmgate abort --target canary --kubeconfig /run/secrets/kubeconfig
    """
    from pipeline.config import load_config
    from pipeline.stages.promote import abort_target
    from pipeline.supplychain.verdict_log import SEEN_DIR

    chosen, backend = target_backend(target, config, gitops_repo, kubeconfig, in_cluster)
    ws = state.workspace()
    res = abort_target(chosen, backend, ws.store, load_config(config), seen_dir=ws.root / SEEN_DIR)
    out.print(Text.assemble((res.outcome, "bold"), f": {target} ({backend.name})"))
    result = res.result
    if result is not None and result.restored_image:
        out.print(Text(f"restored: {result.restored_image}" + (f", model {result.restored_model_digest}"
                                                                  if result.restored_model_digest else "")))
    if res.guard is not None and res.guard.verdict_run:
        out.print(Text(f"verdict: run {res.guard.verdict_run}, gated "
                       f"{res.guard.verdict_at.isoformat() if res.guard.verdict_at else '?'}"))
    if res.reason:
        out.print(plain(f"reason: {res.reason}"))
    for e in result.events if result is not None else []:
        console.print(plain(f"  {e}"))
    ok = res.outcome == "noop" or (result is not None and result.restored)
    raise typer.Exit(int(ExitCode.PASS if ok else ExitCode.GATE_FAILED))


@app.command("targets")
@handle_errors
def targets_cmd(config: ConfigOpt = None) -> None:
    """The configured promotion targets (targets.yaml): backend, place, trust, and whether the pinned
    floor still matches its policy file. Exit 0; 2 when the file is invalid.

    Example: llmgate targets
    """
    from pipeline.promote.floor import PolicyFloor
    from pipeline.promote.targets import load_targets, targets_path

    targets = load_targets(targets_path(config), workdir=state.workdir)
    out.print(plain(f"targets in {targets.file}:"))
    for t in targets.targets.values():
        c = t.config
        out.print(plain(f"  {t.describe()}"))
        out.print(plain(f"    policies: {', '.join(p[:12] for p in c.accepted_policies) or 'any meeting the floor'}"
                        f"{'; local policies accepted' if c.accept_local_policy else ''}"))
        out.print(plain(f"    keys: {', '.join(c.keys) or ('local key pair (unpinned)' if c.accept_local_key else 'none pinned: refuses every promotion')}"))
        if c.floor is not None:
            loaded = PolicyFloor(t).loaded
            out.print(plain(f"    floor: {c.floor.policy}" + (f" ({loaded})" if isinstance(loaded, str) else
                                                               f" (sha256 {loaded.sha256[:12]}, matches)")))
