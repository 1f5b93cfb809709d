"""Stage "promote": move a gated digest to a target, through GitOps or the cluster's Argo Rollouts.

Refuses (outcome `refused`, exit 1 at the CLI) unless the run's decision is `pass` and the
supply-chain guard passes (digest, passing scan in the store, verified signature). A lock makes
concurrent promotions of one target refuse instead of racing. Every attempt that is not a dry run is
written to the audit trail, whatever its outcome. `rollback_stage` promotes the previous promoted
digest of a target again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import PipelineConfig
from pipeline.errors import BadInput, GateFailed, LlmgateError
from pipeline.manifests.check import measured_load_time
from pipeline.manifests.validate import DEFAULT_K8S_VERSION
from pipeline.models import Decision, ImageRef, PromotionRecord, RunRecord, StageResult, StageStatus
from pipeline.progress import NullReporter, Reporter
from pipeline.promote import audit, evidence
from pipeline.promote.cluster import RolloutRef, api_client, promote_cluster
from pipeline.promote.gitops import DEFAULT_OVERLAY_ROOT, branch_name, promote_gitops, short_commit
from pipeline.promote.lock import promotion_lock
from pipeline.store import Store
from pipeline.workspace import Workspace

# Guard contract (pipeline/supplychain/guard.py): raise GateFailed to refuse, return evidence otherwise.
Guard = Callable[[ImageRef, Store, PipelineConfig], Any]

# Namespaces the shipped overlays deploy to; a target not listed deploys to a namespace of its name.
TARGET_NAMESPACES = {"canary": "llmgate-canary", "production": "llmgate", "deployment": "llmgate"}


@dataclass
class ClusterTarget:
    kubeconfig: Path | None
    context: str | None = None
    namespace: str | None = None
    rollout: str = "llmgate-server"
    container: str = "server"
    timeout_s: float = 3600
    poll_s: float = 5

    def ref(self, target: str) -> RolloutRef:
        return RolloutRef(self.namespace or TARGET_NAMESPACES.get(target, target), self.rollout, self.container)


@dataclass
class GitopsTarget:
    repo: Path
    overlay_root: str = DEFAULT_OVERLAY_ROOT
    base_ref: str = "HEAD"
    k8s_version: str = DEFAULT_K8S_VERSION


class PromoteDetails(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str
    mode: str  # gitops | cluster
    dry_run: bool = False
    image: str
    outcome: str  # promoted | aborted | refused | noop | failed | dry-run
    reason: str = ""
    previous: str | None = None
    branch: str | None = None
    commit: str | None = None
    diff: str = ""  # gitops: the kustomization diff
    patch: list[dict[str, Any]] = Field(default_factory=list)  # cluster: the JSON patch
    events: list[str] = Field(default_factory=list)
    guard: dict[str, Any] = Field(default_factory=dict)
    rollback_of: str | None = None


def default_guard(image: ImageRef, store: Store, cfg: PipelineConfig) -> Any:
    from pipeline.supplychain.guard import check_promotable

    return check_promotable(image, store, cfg)


def _result(details: PromoteDetails) -> StageResult:
    ok = details.outcome in ("promoted", "noop", "dry-run")
    res = StageResult(stage="promote", status=StageStatus.OK if ok else StageStatus.FAILED,
                      reason=None if ok else f"{details.outcome}: {details.reason}")
    res.metrics = {"promoted": 1.0 if details.outcome == "promoted" else 0.0}
    res.details = details.model_dump(mode="json")
    return res.finish()


def _record(ws: Workspace, run: RunRecord | None, details: PromoteDetails, run_id: str | None = None) -> None:
    if details.dry_run:
        return
    rec = PromotionRecord(target=details.target, digest=ImageRef.parse(details.image).digest or details.image,
                          mode=details.mode, outcome=details.outcome,
                          detail=(f"rollback of {details.rollback_of}; " if details.rollback_of else "")
                          + (details.reason or details.branch or ""),
                          previous_digest=ImageRef.parse(details.previous).digest if details.previous else None)
    audit.record(ws.store, rec, run.run_id if run else run_id)
    # A refused retry must not hide that this run was promoted before (the gate engine's baseline).
    if run is not None and (details.outcome == "promoted" or run.promotion is None
                            or run.promotion.outcome != "promoted"):
        run.promotion = rec


def _execute(
    details: PromoteDetails,
    image: ImageRef,
    *,
    evidence_text: str,
    load_time_s: float | None,
    gitops: GitopsTarget | None,
    cluster: ClusterTarget | None,
    ws: Workspace,
    reporter: Reporter,
    branch: str | None = None,
) -> None:
    with promotion_lock(ws.store, details.target, holder=audit.actor()):
        if gitops is not None:
            g = promote_gitops(gitops.repo, details.target, image, evidence=evidence_text, load_time_s=load_time_s,
                               overlay_root=gitops.overlay_root, base_ref=gitops.base_ref,
                               dry_run=details.dry_run, k8s_version=gitops.k8s_version, reporter=reporter,
                               branch=branch)
            details.outcome, details.branch, details.commit = g.outcome, g.branch, g.commit
            details.previous, details.diff = g.previous_ref, g.diff
            details.events = g.notes + (g.report.rollout_estimates if g.report else [])
            details.reason = "; ".join(g.notes)
        else:
            assert cluster is not None
            c = promote_cluster(api_client(cluster.kubeconfig, cluster.context), cluster.ref(details.target),
                                image.by_digest, timeout_s=cluster.timeout_s, poll_s=cluster.poll_s,
                                dry_run=details.dry_run, reporter=reporter)
            details.outcome, details.previous, details.patch = c.outcome, c.previous_image, c.patch
            details.events, details.reason = c.events, c.reason
            if c.outcome == "aborted" and not c.restored:
                details.reason += "; the stable image was written back but the rollout was not Healthy in time"


def promote_stage(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    target: str,
    gitops: GitopsTarget | None = None,
    cluster: ClusterTarget | None = None,
    dry_run: bool = False,
    guard: Guard = default_guard,
) -> StageResult:
    if (gitops is None) == (cluster is None):
        raise BadInput("promote needs exactly one of a GitOps repository or a cluster", where="--gitops-repo/--kubeconfig")
    shown = run.image.by_digest if run.digest else run.image.by_tag
    details = PromoteDetails(target=target, mode="gitops" if gitops else "cluster", dry_run=dry_run, image=shown,
                             outcome="refused")
    try:
        if run.decision is not Decision.PASS:
            raise GateFailed(f"run {run.run_id} decision is {run.decision.value}, not pass"
                             + (f" ({run.decision_reason})" if run.decision_reason else ""), where="run.decision")
        verdict = guard(run.image, ws.store, cfg)
        details.guard = {k: v for k, v in vars(verdict).items()} if hasattr(verdict, "__dict__") else {}
        load_time, _ = measured_load_time(run)
        _execute(details, run.image, evidence_text=evidence.summary(run), load_time_s=load_time, gitops=gitops,
                 cluster=cluster, ws=ws, reporter=reporter)
    except GateFailed as exc:
        details.outcome, details.reason = "refused", exc.render()
    except LlmgateError as exc:
        details.outcome, details.reason = "failed", exc.render()
        _record(ws, run, details)
        raise
    _record(ws, run, details)
    reporter.step(f"promote {target}: {details.outcome}" + (f" ({details.reason})" if details.reason else ""))
    return _result(details)


def rollback_stage(
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    target: str,
    gitops: GitopsTarget | None = None,
    cluster: ClusterTarget | None = None,
    dry_run: bool = False,
) -> StageResult:
    """Promote the target's previous promoted digest again (it passed the guard when first promoted)."""
    if (gitops is None) == (cluster is None):
        raise BadInput("rollback needs exactly one of a GitOps repository or a cluster", where="--gitops-repo/--kubeconfig")
    current, previous = audit.current_and_previous(ws.store, target)
    if current is None or previous is None:
        raise BadInput(f"no earlier promoted digest of {target!r} to roll back to", where="store promotions")
    run_id, rec = previous
    original = None
    if run_id:
        try:
            original = ws.store.get(run_id)
        except BadInput:
            original = None
    if original is None:
        raise BadInput(f"cannot tell the repository of {rec.digest} (run {run_id} is not in the store)",
                       where="store runs")
    image = ImageRef(repository=original.image.repository, digest=rec.digest)
    load_time, _ = measured_load_time(original)
    details = PromoteDetails(target=target, mode="gitops" if gitops else "cluster", dry_run=dry_run,
                             image=image.by_digest, outcome="failed", rollback_of=current[1].digest)
    text = (f"Rollback of {target}: {current[1].digest} -> {rec.digest}\n"
            f"Returns to the digest promoted by run {run_id} at {rec.at.isoformat()} (by {rec.who}).")
    branch = None
    if gitops is not None:
        # Not the original promotion branch (it pins the same digest on an older base): a new one.
        base = short_commit(gitops.repo, gitops.base_ref)
        branch = branch_name(target, rec.digest).replace("llmgate/promote/", "llmgate/rollback/") + f"-on-{base}"
    try:
        _execute(details, image, evidence_text=text, load_time_s=load_time, gitops=gitops, cluster=cluster, ws=ws,
                 reporter=reporter, branch=branch)
    except GateFailed as exc:
        details.outcome, details.reason = "refused", exc.render()
    except LlmgateError as exc:
        details.outcome, details.reason = "failed", exc.render()
        _record(ws, None, details, run_id)
        raise
    # Audit only: the rolled-back-to run's own record keeps the promotion it had.
    _record(ws, None, details, run_id)
    return _result(details)
