"""Stage "promote": move a release (image digest + model digest) to a target, only on signed facts;
and `abort_target`, the same guard for putting back what served before.

The target is its configuration (`pipeline.promote.targets`), the backend built from it. Refused
(outcome `refused`, exit 1) unless, for exactly this (image, model) pair:
- the weights still at the run's model path hash to the gated digest (weights swapped after the
  verdict are another release);
- the key the target trusts (pinned, or for a non-production target the local key pair) verifies
  a valid image signature and a signed passing verdict gated for this target, under a policy the
  target accepts and that meets its floor (`pipeline.supplychain.guard`); the store's decision
  column and any file are never trusted.
The guard runs under the promotion lock (a lease in the store, per place, renewed by a heartbeat while
the promotion runs), so nothing can change between the check and the move; the backend checks the
lock's fence before each write. Every attempt that is not a dry run is written to the audit trail with
the pair and the verdict that authorised it; only a promotion that happened changes the run record
(`RunRecord.promotion`), and nothing here ever changes a run's decision.

The backend (Argo Rollouts, GitOps with Argo CD, KServe) does the moving; see `pipeline.promote.backend`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.adapters.bundle import Adapters
from pipeline.adapters.signer import Signer
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput, GateFailed, LlmgateError
from pipeline.manifests.check import measured_load_time
from pipeline.models import ImageRef, PromotionRecord, RunRecord, Stage, StageResult, StageStatus
from pipeline.progress import NULL_REPORTER, Reporter
from pipeline.promote import audit, evidence
from pipeline.promote.backend import AbortResult, Backend, Evidence, PromotionResult
from pipeline.promote.targets import Target
from pipeline.promote.trust import TrustedKey, target_policy, trusted_key
from pipeline.schemas.promote import GuardSummary, PromoteDetails
from pipeline.stages.context import StageContext
from pipeline.stages.spec import StageSpec
from pipeline.store import Store
from pipeline.supplychain.guard import GuardResult, PromotionRefused, check_promotable
from pipeline.supplychain.model_digest import weights_manifest
from pipeline.supplychain.verdict_log import SEEN_DIR, VerdictLog

DONE = ("promoted", "noop", "dry-run")


def _weights_unchanged(run: RunRecord) -> None:
    """The weights the run was gated with must still be the ones at its model path."""
    assert run.model is not None
    path = Path(run.model.path)
    if not path.is_dir():
        return  # weights served from elsewhere (a volume in the cluster): the pod's readiness check proves them
    now = weights_manifest(path).digest
    if now != run.model.digest:
        raise PromotionRefused(f"the weights at {path} changed since the verdict: they are {now} now, the verdict "
                               f"is about {run.model.digest}; gate them as a new release",
                               where=f"(image {run.image.by_digest}, model {run.model.digest})")


def check_pair(image: ImageRef, model_digest: str, target: Target, cfg: PipelineConfig, store: Store, *,
               signer: Signer, seen_dir: Path | None = None) -> tuple[GuardResult, TrustedKey]:
    """The guard for one (image, model) pair at `target`, with the key the target trusts; the verdict log
    is `store`'s, checked against the checkpoint this work dir saw last (`seen_dir`)."""
    where = f"(image {image.by_digest if image.digest else image.by_tag}, model {model_digest})"
    key = trusted_key(target, cfg.sign, where=where)
    log = VerdictLog(store, key.key.key, seen_dir=seen_dir)
    checked = check_promotable(image, model_digest, target_policy(target), key.key, signer=signer,
                               log=log)
    return checked, key


def guard(run: RunRecord, ctx: StageContext, target: Target) -> tuple[GuardResult, TrustedKey]:
    """Every check a promotion of `run` to `target` must pass; `PromotionRefused` says which failed."""
    shown = run.image.by_digest if run.digest else run.image.by_tag
    if run.model is None:
        raise PromotionRefused("the run names no weights (model digest): what it would serve is unproven",
                               where=f"(image {shown}, model unknown)")
    _weights_unchanged(run)
    return check_pair(run.image, run.model.digest, target, ctx.cfg, ctx.ws.store, signer=ctx.signer(),
                      seen_dir=ctx.ws.root / SEEN_DIR)


def guard_summary(checked: GuardResult, key: TrustedKey, fence: int) -> GuardSummary:
    v = checked.verdict
    return GuardSummary(verdict_run=v.run_id, verdict_at=v.created, signature=checked.signature_reason,
                        verdict=checked.verdict_reason, policy=v.policy.name if v.policy else None, key=key.how,
                        fence=fence)


def _apply(details: PromoteDetails, result: PromotionResult) -> None:
    details.outcome = result.outcome
    details.previous = result.previous_image
    details.branch, details.commit, details.diff = result.branch, result.commit, result.diff
    details.patch = [p if isinstance(p, dict) else {"patch": p} for p in result.patches]
    details.events = list(result.events)
    details.reason = result.reason


def promotion_record(details: PromoteDetails) -> PromotionRecord:
    return PromotionRecord(
        target=details.target, digest=ImageRef.parse(details.image).digest or details.image, mode=details.mode,
        outcome=details.outcome, who=audit.actor(),
        detail=(f"rollback of {details.rollback_of}; " if details.rollback_of else "")
        + (f"model {details.model_digest}; " if details.model_digest else "")
        + (details.reason or details.branch or ""),
        previous_digest=ImageRef.parse(details.previous).digest if details.previous else None,
        model_digest=details.model_digest, verdict_run_id=details.guard.verdict_run,
        verdict_at=details.guard.verdict_at,
    )


def promote_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    req = ctx.options.promote
    if req is None:
        raise BadInput("no promotion target given", where="--target")
    target, backend = req.target, req.backend
    details = PromoteDetails(target=target.name, mode=backend.name, dry_run=req.dry_run,
                             image=run.image.by_digest if run.digest else run.image.by_tag,
                             model_digest=run.model.digest if run.model else None, outcome="refused",
                             rollback_of=req.rollback_of)
    taken_over = None
    try:
        with ctx.ws.store.promotion_lock(target.lock_key, holder=audit.actor(),
                                         lease_s=ctx.cfg.promote.lock_lease_s) as lock:
            taken_over = lock.takeover_note
            checked, key = guard(run, ctx, target)  # under the lock: nothing moves between the check and the write
            details.guard = guard_summary(checked, key, lock.fence)
            load_time, _ = measured_load_time(run)
            proof = Evidence(summary=evidence.summary(run, checked, key=key.how), run_id=run.run_id,
                             load_time_s=load_time)
            assert run.model is not None  # the guard refuses a run without one
            _apply(details, backend.promote(target.name, run.image.by_digest, run.model.digest, proof,
                                            dry_run=req.dry_run, reporter=ctx.reporter, fence=lock))
    except GateFailed as exc:
        details.outcome, details.reason = "refused", exc.render()
    except LlmgateError as exc:
        details.outcome, details.reason = "failed", exc.render()
        if not req.dry_run:
            audit.record(ctx.ws.store, promotion_record(details), run.run_id)
        raise
    if taken_over:
        details.events.insert(0, taken_over)
    if not req.dry_run:
        audit.record(ctx.ws.store, promotion_record(details), run.run_id)
    ctx.reporter.step(f"promote {target.name}: {details.outcome}" + (f" ({details.reason})" if details.reason else ""))
    ok = details.outcome in DONE
    return StageResult(stage=Stage.PROMOTE, status=StageStatus.OK if ok else StageStatus.FAILED,
                       reason=None if ok else f"{details.outcome}: {details.reason}",
                       metrics={"promoted": 1.0 if details.outcome == "promoted" else 0.0}, details=details)


# -- abort: put back what served before, through the same guard --------------------------------------
@dataclass
class AbortOutcome:
    target: str
    mode: str
    outcome: str  # aborted | noop | refused
    reason: str = ""
    result: AbortResult | None = None
    guard: GuardSummary | None = None


def abort_target(target: Target, backend: Backend, store: Store, cfg: PipelineConfig, *,
                 reporter: Reporter = NULL_REPORTER, seen_dir: Path | None = None,
                 adapters: Adapters | None = None) -> AbortOutcome:
    """Stop `target`'s in-flight promotion and restore the release that served before, under the
    promotion lock, only if that (image, model) pair passes the guard for `target` now: a release whose
    newest signed verdict is blocked is never written back. A refusal writes nothing and is audited."""
    out = AbortOutcome(target=target.name, mode=backend.name, outcome="refused")
    restoring: tuple[str | None, str | None] = (None, None)
    try:
        with store.promotion_lock(target.lock_key, holder=audit.actor(), lease_s=cfg.promote.lock_lease_s) as lock:
            plan = backend.restore_plan(target.name)
            restoring = (plan.image, plan.model_digest)
            if not plan.in_flight:
                out.outcome, out.reason = "noop", plan.reason
                return out
            if plan.image is not None:
                image = ImageRef.parse(plan.image)
                if not plan.model_digest:
                    raise PromotionRefused("the release to restore names no model digest: what it would serve is "
                                           "unproven", where=f"(image {plan.image}, model unknown)")
                signer = (adapters or Adapters()).signing(cfg.sign.timeout_s)
                checked, key = check_pair(image, plan.model_digest, target, cfg, store, signer=signer,
                                          seen_dir=seen_dir)
                out.guard = guard_summary(checked, key, lock.fence)
            out.result = backend.abort(target.name, reporter=reporter, fence=lock)
            out.outcome, out.reason = out.result.outcome, out.result.reason
    except GateFailed as exc:
        out.outcome, out.reason = "refused", exc.render()
    image, model = restoring
    digest = ImageRef.parse(image).digest if image else None
    if out.outcome != "noop":
        audit.record(store, PromotionRecord(
            target=target.name, digest=digest or "unknown", mode=backend.name, outcome=out.outcome,
            detail=(f"abort; restore model {model}; " if model else "abort; ") + out.reason, model_digest=model,
            verdict_run_id=out.guard.verdict_run if out.guard else None,
            verdict_at=out.guard.verdict_at if out.guard else None), None)
    return out


SPEC = StageSpec(
    stage=Stage.PROMOTE, run=promote_stage, details=PromoteDetails, on_request=True, event="promoted",
    requested=lambda options: options.promote is not None,
    credentials=("cosign_public_key", "kubeconfig", "store_url"),
    doc="the digest pair into the canary rollout, only on a signed passing verdict that is the newest for the "
        "pair in the verdict log",
)
