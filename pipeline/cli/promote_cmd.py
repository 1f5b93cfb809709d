"""`llmgate promote`, `rollback` and `abort`: move a gated release to a target, back, or stop a canary.

The target is always `--target`; the backend is chosen by what is given: `--gitops-repo` (a commit,
pushed when `--remote` is set, optionally watched through Argo CD), or `--kubeconfig` / `--in-cluster`
with `--backend argo-rollouts|kserve`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from pipeline.cli.app import ConfigOpt, app, console, handle_errors, make_runner, out, positive_seconds, state
from pipeline.errors import BadInput, ExitCode

TargetOpt = Annotated[str, typer.Option("--target", help="Environment / overlay, e.g. canary or production.")]
GitopsOpt = Annotated[Path | None, typer.Option("--gitops-repo", help="Git repository holding the overlays.",
                                                metavar="DIR")]
RemoteOpt = Annotated[str | None, typer.Option("--remote", help="Push the promotion commit to this remote "
                                               "(never forced).", metavar="NAME")]
PushBranchOpt = Annotated[str | None, typer.Option("--push-branch", help="Remote branch Argo CD tracks "
                                                   "(default: the remote's default).", metavar="BRANCH")]
ArgoAppOpt = Annotated[str | None, typer.Option("--argocd-app", help="Wait for this Argo CD Application to be "
                                                "Synced and Healthy at the pushed commit.", metavar="NAME")]
KubeconfigOpt = Annotated[Path | None, typer.Option("--kubeconfig", help="Promote in the cluster this kubeconfig "
                                                    "names (a mounted secret file).", metavar="FILE")]
InClusterOpt = Annotated[bool, typer.Option("--in-cluster", help="Use the pod's service account.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="In-cluster backend.", metavar="argo-rollouts|kserve")]
ContextOpt = Annotated[str | None, typer.Option("--context", help="kubeconfig context.")]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help="Namespace (default: the target's).")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", callback=positive_seconds,
                                           help="Seconds to wait for the canary before aborting.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print exactly what would change; change nothing.")]


def _backend(target: str, gitops_repo: Path | None, remote: str | None, push_branch: str | None,
             argocd_app: str | None, kubeconfig: Path | None, in_cluster: bool, backend: str, context: str | None,
             namespace: str | None, timeout: float) -> Any:
    """The backend the flags name. With --gitops-repo, a kubeconfig (or --in-cluster) is only for watching
    the Argo CD Application; without it, it names the cluster to promote in."""
    cluster = kubeconfig is not None or in_cluster
    if gitops_repo is None and not cluster:
        raise BadInput("give --gitops-repo DIR, or --kubeconfig FILE / --in-cluster",
                       where="--gitops-repo/--kubeconfig")
    if kubeconfig is not None and in_cluster:
        raise BadInput("give --kubeconfig FILE or --in-cluster, not both", where="--kubeconfig/--in-cluster")
    if argocd_app is not None and not (gitops_repo is not None and cluster):
        raise BadInput("--argocd-app needs --gitops-repo and the cluster Argo CD runs in (--kubeconfig or "
                       "--in-cluster)", where="--argocd-app")
    api = None
    if cluster:
        from pipeline.adapters.kube_api import KubernetesApi

        api = KubernetesApi.from_kubeconfig(kubeconfig, context)
    if gitops_repo is not None:
        from pipeline.promote.gitops import GitopsBackend

        apps: dict[str, Any] = {}
        if argocd_app is not None:
            from pipeline.promote.argocd import ArgoCdApp

            apps[target] = ArgoCdApp(api=api, name=argocd_app, timeout_s=timeout)  # type: ignore[arg-type]
        return GitopsBackend(repo=gitops_repo, remote=remote, push_branch=push_branch, argocd=apps)
    namespaces = {target: namespace} if namespace else {}
    if backend == "kserve":
        from pipeline.promote.kserve import KServeBackend

        return KServeBackend(api=api, namespaces=namespaces, timeout_s=timeout)  # type: ignore[arg-type]
    if backend != "argo-rollouts":
        raise BadInput(f"unknown backend {backend!r}; known: argo-rollouts, kserve", where="--backend")
    from pipeline.promote.cluster import ArgoRolloutsBackend

    return ArgoRolloutsBackend(api=api, namespaces=namespaces, timeout_s=timeout)  # type: ignore[arg-type]


def _print(details: Any) -> None:
    out.print(Text.assemble((details.outcome, "bold"), f": {details.image} -> {details.target} ({details.mode})"))
    if details.model_digest:
        out.print(Text(f"model: {details.model_digest}"))
    for label, value in (("previous", details.previous), ("reason", details.reason)):
        if value:
            out.print(Text(f"{label}: {value}"))
    if details.branch and details.outcome != "refused":
        out.print(Text(f"branch: {details.branch}" + (f" commit {details.commit}" if details.commit else "")))
    if details.diff:
        out.print(Text(details.diff), end="")
    if details.patch and details.outcome == "dry-run":
        out.print(Text(json.dumps(details.patch, indent=2)))
    for e in details.events:
        console.print(Text(f"  {e}"))


def _exit(outcome: str) -> None:
    raise typer.Exit(int(ExitCode.PASS if outcome in ("promoted", "noop", "dry-run") else ExitCode.GATE_FAILED))


@app.command()
@handle_errors
def promote(
    target: TargetOpt,
    run_ref: Annotated[str | None, typer.Option("--run", help="Run id (or unique prefix) in the store.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="The newest run of this tag.")] = None,
    gitops_repo: GitopsOpt = None,
    remote: RemoteOpt = None,
    push_branch: PushBranchOpt = None,
    argocd_app: ArgoAppOpt = None,
    kubeconfig: KubeconfigOpt = None,
    in_cluster: InClusterOpt = False,
    backend: BackendOpt = "argo-rollouts",
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    timeout: TimeoutOpt = 3600.0,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Promote a gated release: its image digest and model digest, only on a valid signature and a signed
    passing verdict for exactly that pair. Exit 0 promoted (or already there), 1 refused or aborted,
    2 bad input, 3 infrastructure.

    Example: llmgate promote --target canary --run 3f2a9c1b7d4e --gitops-repo ../deploy --remote origin
    """
    from pipeline.models import Stage
    from pipeline.stages.context import PromoteRequest

    if (run_ref is None) == (tag is None):
        raise BadInput("say which release: give exactly one of --run RUN_ID or --tag TAG", where="--run/--tag")
    ws = state.workspace()
    run = ws.load_run(run_ref, tag=tag)
    chosen = _backend(target, gitops_repo, remote, push_branch, argocd_app, kubeconfig, in_cluster, backend, context,
                      namespace, timeout)
    runner = make_runner(config, run_plan=run.labels.get("llmgate.plan"),
                         promote=PromoteRequest(target=target, backend=chosen, dry_run=dry_run))
    res = runner.run_stage(run, Stage.PROMOTE)
    details = res.details
    _print(details)
    _exit(details.outcome)


@app.command()
@handle_errors
def rollback(
    target: TargetOpt,
    gitops_repo: GitopsOpt = None,
    remote: RemoteOpt = None,
    push_branch: PushBranchOpt = None,
    argocd_app: ArgoAppOpt = None,
    kubeconfig: KubeconfigOpt = None,
    in_cluster: InClusterOpt = False,
    backend: BackendOpt = "argo-rollouts",
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    timeout: TimeoutOpt = 3600.0,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Return TARGET to the release promoted before the current one (from the audit trail), through the
    same guard as any promotion. Exit 0 rolled back, 1 refused, 2 nothing to roll back to, 3 infrastructure.

    Example: llmgate rollback --target production --gitops-repo ../deploy --remote origin
    """
    from pipeline.models import Stage
    from pipeline.promote import audit
    from pipeline.stages.context import PromoteRequest

    ws = state.workspace()
    current, previous = audit.current_and_previous(ws.store, target)
    if current is None or previous is None or previous[0] is None:
        raise BadInput(f"no earlier promoted release of {target!r} to roll back to", where="--target")
    run = ws.store.get(previous[0])
    chosen = _backend(target, gitops_repo, remote, push_branch, argocd_app, kubeconfig, in_cluster, backend, context,
                      namespace, timeout)
    runner = make_runner(config, run_plan=run.labels.get("llmgate.plan"),
                         promote=PromoteRequest(target=target, backend=chosen, dry_run=dry_run,
                                                rollback_of=current[1].digest))
    res = runner.run_stage(run, Stage.PROMOTE)
    _print(res.details)
    _exit(res.details.outcome)


@app.command()
@handle_errors
def abort(
    target: TargetOpt,
    gitops_repo: GitopsOpt = None,
    remote: RemoteOpt = None,
    push_branch: PushBranchOpt = None,
    argocd_app: ArgoAppOpt = None,
    kubeconfig: KubeconfigOpt = None,
    in_cluster: InClusterOpt = False,
    backend: BackendOpt = "argo-rollouts",
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Abort TARGET's in-flight canary and restore what served before. Exit 0 aborted (or nothing in
    flight), 1 the previous release is not serving again, 2 bad input, 3 infrastructure.

    Example: llmgate abort --target canary --kubeconfig /run/secrets/kubeconfig
    """
    from pipeline.models import PromotionRecord
    from pipeline.promote import audit

    chosen = _backend(target, gitops_repo, remote, push_branch, argocd_app, kubeconfig, in_cluster, backend, context,
                      namespace, 3600.0)
    ws = state.workspace()
    result = chosen.abort(target)
    out.print(Text.assemble((result.outcome, "bold"), f": {target} ({chosen.name})"))
    if result.restored_image:
        out.print(Text(f"restored: {result.restored_image}" + (f", model {result.restored_model_digest}"
                                                                  if result.restored_model_digest else "")))
    if result.reason:
        out.print(Text(f"reason: {result.reason}"))
    for e in result.events:
        console.print(Text(f"  {e}"))
    if result.outcome == "aborted":
        from pipeline.models import ImageRef

        digest = ImageRef.parse(result.restored_image).digest if result.restored_image else None
        audit.record(ws.store, PromotionRecord(target=target, digest=digest or "unknown", mode=chosen.name,
                                               outcome="aborted", detail=result.reason), None)
    raise typer.Exit(int(ExitCode.PASS if result.outcome == "noop" or result.restored else ExitCode.GATE_FAILED))
