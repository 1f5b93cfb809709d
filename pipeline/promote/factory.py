"""The promotion backend of a target, built from the target's configuration (`Backend.create`-style).

Where a target is and how a release reaches it (backend, namespace, Rollout or InferenceService name,
GitOps overlay, remote and branch, Argo CD Application, KServe steps and Prometheus) is configuration
(`targets.yaml`). What the command line adds is only how this machine reaches those systems
(`Connections`: a checkout of the GitOps repository, a kubeconfig or the pod's service account). A
connection the target's backend does not use is refused rather than ignored, so a flag can never
suggest that it changed where a release goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.adapters.kube_api import KubeApi
from pipeline.adapters.prometheus import PromQL
from pipeline.errors import BadInput
from pipeline.promote.backend import Backend
from pipeline.promote.targets import Target


@dataclass(frozen=True)
class Connections:
    """How this machine reaches a target's systems (never where the target is)."""

    gitops_repo: Path | None = None
    kubeconfig: Path | None = None
    in_cluster: bool = False

    @property
    def cluster(self) -> bool:
        return self.kubeconfig is not None or self.in_cluster


def _kube(target: Target, conn: Connections, kube: KubeApi | None, what: str) -> KubeApi:
    if kube is not None:
        return kube
    if conn.kubeconfig is not None and conn.in_cluster:
        raise BadInput("give --kubeconfig FILE or --in-cluster, not both", where="--kubeconfig/--in-cluster")
    if not conn.cluster:
        raise BadInput(f"target {target.name} {what}: give --kubeconfig FILE or --in-cluster",
                       where="--kubeconfig/--in-cluster")
    from pipeline.adapters.kube_api import KubernetesApi

    return KubernetesApi.from_kubeconfig(conn.kubeconfig, target.config.cluster or None)


def create_backend(target: Target, conn: Connections, *, kube: KubeApi | None = None,
                   prometheus: PromQL | None = None) -> Backend:
    """The backend `target`'s configuration names, connected through `conn` (or the given clients)."""
    cfg = target.config
    namespaces = {target.name: cfg.namespace}
    if cfg.backend == "gitops":
        if conn.gitops_repo is None:
            raise BadInput(f"target {target.name} is promoted through GitOps: give --gitops-repo DIR (a checkout of "
                           "the repository holding its overlay)", where="--gitops-repo")
        from pipeline.promote.gitops import GitopsBackend

        apps = {}
        if cfg.gitops.argocd_app is not None:
            from pipeline.promote.argocd import ArgoCdApp

            api = _kube(target, conn, kube, f"waits for Argo CD Application {cfg.gitops.argocd_app}")
            apps[target.name] = ArgoCdApp(api=api, name=cfg.gitops.argocd_app, namespace=cfg.gitops.argocd_namespace,
                                          timeout_s=cfg.timeout_s)
        elif conn.cluster:
            raise BadInput(f"target {target.name} is promoted through GitOps and names no Argo CD Application to "
                           "watch: a cluster connection is not used", where="--kubeconfig/--in-cluster")
        return GitopsBackend(repo=conn.gitops_repo, remote=cfg.gitops.remote, push_branch=cfg.gitops.push_branch,
                             argocd=apps, overlays={target.name: target.overlay}, namespaces=namespaces)
    if conn.gitops_repo is not None:
        raise BadInput(f"target {target.name} is promoted in the cluster ({cfg.backend}), not through GitOps: "
                       "--gitops-repo is not used", where="--gitops-repo")
    api = _kube(target, conn, kube, f"is promoted in the cluster ({cfg.backend})")
    if cfg.backend == "kserve":
        from pipeline.promote.kserve import KServeBackend

        if prometheus is None and cfg.kserve.prometheus_url:
            from pipeline.adapters.prometheus import PrometheusHttp

            prometheus = PrometheusHttp(cfg.kserve.prometheus_url)
        return KServeBackend(api=api, service=cfg.kserve.service, namespaces=namespaces,
                             steps=tuple(cfg.kserve.steps), prometheus=prometheus,
                             analysis_checks=cfg.kserve.analysis_checks,
                             analysis_interval_s=cfg.kserve.analysis_interval_s, timeout_s=cfg.timeout_s)
    from pipeline.promote.cluster import ArgoRolloutsBackend

    return ArgoRolloutsBackend(api=api, rollout=cfg.rollout.name, container=cfg.rollout.container,
                               namespaces=namespaces, timeout_s=cfg.timeout_s)
