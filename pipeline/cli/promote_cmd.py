"""`llmgate promote`, `llmgate rollback` and `llmgate manifests check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import RunOpt, app, console, handle_errors, out, save_run, state
from pipeline.errors import BadInput, ExitCode

manifests_app = typer.Typer(help="Deployment manifests (kustomize overlays).", no_args_is_help=True)
app.add_typer(manifests_app, name="manifests")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="llmgate.yaml (default: ./llmgate.yaml if present).")]
GitopsOpt = Annotated[Path | None, typer.Option("--gitops-repo", help="Git repository holding the overlays.")]
KubeconfigOpt = Annotated[Path | None, typer.Option("--kubeconfig", help="Promote in the cluster this kubeconfig names.")]
InClusterOpt = Annotated[bool, typer.Option("--in-cluster", help="Use the pod's service account instead of a kubeconfig.")]
ContextOpt = Annotated[str | None, typer.Option("--context", help="kubeconfig context.")]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help="Rollout namespace (default: the overlay's).")]
RolloutOpt = Annotated[str, typer.Option("--rollout", help="Rollout name.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the canary before aborting.")]
OverlayRootOpt = Annotated[str, typer.Option("--overlay-root", help="Overlays directory inside the GitOps repo.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print exactly what would change; change nothing.")]


def _targets(gitops_repo: Path | None, kubeconfig: Path | None, in_cluster: bool, context: str | None,
             namespace: str | None, rollout: str, timeout: float, overlay_root: str):  # type: ignore[no-untyped-def]
    from pipeline.stages.promote import ClusterTarget, GitopsTarget

    chosen = sum([gitops_repo is not None, kubeconfig is not None, in_cluster])
    if chosen != 1:
        raise BadInput("give exactly one of --gitops-repo PATH, --kubeconfig PATH, --in-cluster",
                       where="--gitops-repo/--kubeconfig")
    if gitops_repo is not None:
        return GitopsTarget(gitops_repo, overlay_root=overlay_root), None
    return None, ClusterTarget(kubeconfig, context=context, namespace=namespace, rollout=rollout, timeout_s=timeout)


def _print(details: dict) -> None:  # type: ignore[type-arg]
    import json

    out.print(f"[bold]{details['outcome']}[/]: {details['image']} -> {details['target']} ({details['mode']})",
              highlight=False, soft_wrap=True)
    if details.get("previous"):
        out.print(f"previous: {details['previous']}", highlight=False, soft_wrap=True)
    if details.get("reason"):
        out.print(f"reason: {details['reason']}", highlight=False, soft_wrap=True)
    if details.get("branch") and details["outcome"] != "refused":
        out.print(f"branch: {details['branch']}" + (f" commit {details['commit']}" if details.get("commit") else ""),
                  highlight=False, soft_wrap=True)
    if details.get("diff"):
        out.print(details["diff"], highlight=False, markup=False, end="", soft_wrap=True)
    if details.get("patch") and details["outcome"] == "dry-run":
        out.print(json.dumps(details["patch"], indent=2), highlight=False, markup=False, soft_wrap=True)
    for e in details.get("events") or []:
        console.print(f"  {e}", highlight=False, markup=False, soft_wrap=True)


def _exit(outcome: str) -> None:
    raise typer.Exit(int(ExitCode.GATE_FAILED if outcome in ("refused", "aborted") else ExitCode.PASS))


@app.command()
@handle_errors
def promote(
    target: Annotated[str, typer.Option("--target", help="Overlay / environment, e.g. canary or production.")],
    run_ref: RunOpt = None,
    gitops_repo: GitopsOpt = None,
    kubeconfig: KubeconfigOpt = None,
    in_cluster: InClusterOpt = False,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    rollout: RolloutOpt = "llmgate-server",
    timeout: TimeoutOpt = 3600.0,
    overlay_root: OverlayRootOpt = "manifests/overlays",
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Promote a run's digest. Exit 0 promoted (or already there), 1 refused or aborted, 2 bad input, 3 infra."""
    from pipeline.config import load_config
    from pipeline.progress import PrintReporter
    from pipeline.stages.promote import promote_stage

    cfg = load_config(config)
    gitops, cluster = _targets(gitops_repo, kubeconfig, in_cluster, context, namespace, rollout, timeout, overlay_root)
    ws = state.workspace()
    run = ws.load_run(run_ref)
    res = promote_stage(run, cfg, ws, PrintReporter(), target=target, gitops=gitops, cluster=cluster, dry_run=dry_run)
    if not dry_run:
        run.add_stage(res)
        save_run(ws, run, run_ref)
    _print(res.details)
    _exit(res.details["outcome"])


@app.command()
@handle_errors
def rollback(
    target: Annotated[str, typer.Argument(help="Overlay / environment to return to its previous promoted digest.")],
    gitops_repo: GitopsOpt = None,
    kubeconfig: KubeconfigOpt = None,
    in_cluster: InClusterOpt = False,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    rollout: RolloutOpt = "llmgate-server",
    timeout: TimeoutOpt = 3600.0,
    overlay_root: OverlayRootOpt = "manifests/overlays",
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Return TARGET to the digest promoted before the current one (from the audit trail)."""
    from pipeline.config import load_config
    from pipeline.progress import PrintReporter
    from pipeline.stages.promote import rollback_stage

    cfg = load_config(config)
    gitops, cluster = _targets(gitops_repo, kubeconfig, in_cluster, context, namespace, rollout, timeout, overlay_root)
    res = rollback_stage(cfg, state.workspace(), PrintReporter(), target=target, gitops=gitops, cluster=cluster,
                         dry_run=dry_run)
    _print(res.details)
    _exit(res.details["outcome"])


@manifests_app.command("check")
@handle_errors
def manifests_check(
    run_ref: RunOpt = None,
    overlay: Annotated[str, typer.Option("--overlay", help="Overlay under MANIFESTS/overlays.")] = "canary",
    manifests_dir: Annotated[Path, typer.Option("--manifests", help="kustomize tree (base + overlays).")] = Path(
        "manifests"
    ),
    k8s_version: Annotated[str, typer.Option("--k8s-version", help="Kubernetes schema version.")] = "1.33",
) -> None:
    """Render OVERLAY with the run's digest, validate the schemas, apply the policy. Exit 1 on any violation."""
    from pipeline.config import load_config
    from pipeline.progress import PrintReporter
    from pipeline.stages.manifests import manifests_stage

    ws = state.workspace()
    run = ws.load_run(run_ref)
    res = manifests_stage(run, load_config(None), ws, PrintReporter(), overlay=overlay, manifests_dir=manifests_dir,
                          k8s_version=k8s_version)
    run.add_stage(res)
    save_run(ws, run, run_ref)
    if res.status.value == "skipped":
        console.print(f"[yellow]{res.reason}[/]")
        raise typer.Exit(int(ExitCode.GATE_FAILED))
    d = res.details
    for p in d["schema_errors"] + d["violations"]:
        out.print(f"[red]✗[/] {p['object']} {p['path']}: {p['message']} [{p['rule']}]", highlight=False, soft_wrap=True)
    if d.get("load_time_s") is not None:
        out.print(f"measured load time: {d['load_time_s']:.1f} s ({d.get('load_time_source')})", highlight=False, soft_wrap=True)
    for line in d["rollout_estimates"]:
        out.print(f"expected rollout: {line}", highlight=False, soft_wrap=True)
    n = int(res.metrics["violations"] or 0)
    out.print(f"{overlay}: {len(d['objects'])} objects, {n} violation(s)", highlight=False, soft_wrap=True)
    raise typer.Exit(int(ExitCode.GATE_FAILED if n else ExitCode.PASS))
