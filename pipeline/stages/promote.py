"""Stage "promote": move a release (image digest + model digest) to a target, only on signed facts.

Refused (outcome `refused`, exit 1) unless, for exactly this (image, model) pair:
- the weights still at the run's model path hash to the gated digest (weights swapped after the
  verdict are another release);
- the promotion guard finds a valid image signature and a signed passing verdict made under a policy
  the target accepts (`pipeline.supplychain.guard`); the store's decision column and any file are
  never trusted.
A lease in the store makes concurrent promotions of one target refuse instead of racing, across
machines sharing the store. Every attempt that is not a dry run is written to the audit trail; only a
promotion that happened changes the run record (`RunRecord.promotion`), so a refused attempt leaves
the record as it was.

The backend (Argo Rollouts, GitOps with Argo CD, KServe) does the moving; see `pipeline.promote.backend`.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import GateFailed, LlmgateError
from pipeline.manifests.check import measured_load_time
from pipeline.models import ImageRef, PromotionRecord, RunRecord, Stage, StageResult, StageStatus
from pipeline.promote import audit, evidence
from pipeline.promote.backend import Backend, Evidence, PromotionResult
from pipeline.schemas.promote import PromoteDetails
from pipeline.stages.context import StageContext
from pipeline.supplychain.guard import GuardResult, PromotionRefused, TargetPolicy, check_promotable
from pipeline.supplychain.model_digest import weights_manifest
from pipeline.supplychain.signing import default_signer, load_public_key
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


def guard(run: RunRecord, ctx: StageContext, target: str) -> GuardResult:
    """Every check a promotion of `run` to `target` must pass; `PromotionRefused` says which failed."""
    shown = run.image.by_digest if run.digest else run.image.by_tag
    if run.model is None:
        raise PromotionRefused("the run names no weights (model digest): what it would serve is unproven",
                               where=f"(image {shown}, model unknown)")
    _weights_unchanged(run)
    accepted = ctx.cfg.promote.accepted_policies.get(target)
    public_key = load_public_key(ctx.cfg.sign.public_key)
    log = VerdictLog(ctx.ws.store, public_key.key, seen_dir=ctx.ws.root / SEEN_DIR)
    return check_promotable(run.image, run.model.digest, TargetPolicy.for_target(target, accepted),
                            public_key, signer=default_signer(), log=log)


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
    )


def promote_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    req = ctx.options.promote
    if req is None:
        from pipeline.errors import BadInput

        raise BadInput("no promotion target given", where="--target")
    backend: Backend = req.backend
    details = PromoteDetails(target=req.target, mode=backend.name, dry_run=req.dry_run,
                             image=run.image.by_digest if run.digest else run.image.by_tag,
                             model_digest=run.model.digest if run.model else None, outcome="refused",
                             rollback_of=req.rollback_of)
    try:
        checked = guard(run, ctx, req.target)
        details.guard = {"verdict_run": checked.verdict.run_id, "signature": checked.signature_reason,
                         "verdict": checked.verdict_reason, "policy": checked.verdict.policy.name
                         if checked.verdict.policy else None}
        load_time, _ = measured_load_time(run)
        proof = Evidence(summary=evidence.summary(run, checked), run_id=run.run_id, load_time_s=load_time)
        with ctx.ws.store.promotion_lock(req.target, holder=audit.actor(),
                                         lease_s=ctx.cfg.promote.lock_lease_s) as lock:
            taken_over = lock.takeover_note
            _apply(details, backend.promote(req.target, run.image.by_digest, run.model.digest if run.model else None,
                                            proof, dry_run=req.dry_run, reporter=ctx.reporter))
        if taken_over:
            details.events.insert(0, taken_over)
    except GateFailed as exc:
        details.outcome, details.reason = "refused", exc.render()
    except LlmgateError as exc:
        details.outcome, details.reason = "failed", exc.render()
        if not req.dry_run:
            audit.record(ctx.ws.store, promotion_record(details), run.run_id)
        raise
    if not req.dry_run:
        audit.record(ctx.ws.store, promotion_record(details), run.run_id)
    ctx.reporter.step(f"promote {req.target}: {details.outcome}" + (f" ({details.reason})" if details.reason else ""))
    ok = details.outcome in DONE
    return StageResult(stage=Stage.PROMOTE, status=StageStatus.OK if ok else StageStatus.FAILED,
                       reason=None if ok else f"{details.outcome}: {details.reason}",
                       metrics={"promoted": 1.0 if details.outcome == "promoted" else 0.0}, details=details)
