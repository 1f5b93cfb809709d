"""Promotion guard: the last check before the promote stage moves a digest to an environment.

It refuses (exit 1, `PromotionRefused`) an image given by tag, a digest with no passing scan
recorded in the store, and a digest whose signature does not verify against the configured key.
Kargo-style promotion without this check would happily move an unsigned image.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from pipeline.adapters.cosign import COSIGN_NOT_FOUND, Cosign
from pipeline.config import PipelineConfig
from pipeline.errors import GateFailed
from pipeline.models import ImageRef, RunRecord, StageStatus
from pipeline.store import RunRow, Store


class PromotionRefused(GateFailed):
    """The guard refused the promotion; `where` names the image reference."""


@dataclass
class GuardResult:
    ref: str
    scan_run_id: str
    verify_reason: str


def passing_scan(store: Store, digest: str) -> RunRecord | None:
    """The newest run of this digest whose scan ran and passed its policy."""
    with store.session() as s:
        rows = s.scalars(select(RunRow).where(RunRow.digest == digest).order_by(RunRow.updated_at.desc())).all()
        runs = [RunRecord.model_validate_json(r.record_json) for r in rows]
    for run in runs:
        scan = run.stage("scan")
        if scan is None or scan.status is not StageStatus.OK:
            continue
        verdict = scan.details.get("verdict") or {}
        if verdict.get("passed") is True and not scan.details.get("not_run") and scan.metrics.get("blocking") == 0:
            return run
    return None


def check_promotable(
    image: str | ImageRef,
    store: Store,
    cfg: PipelineConfig,
    *,
    cosign: Cosign | None = None,
) -> GuardResult:
    ref = image if isinstance(image, ImageRef) else ImageRef.parse(image)
    shown = ref.by_tag if ref.digest is None else ref.by_digest
    if ref.digest is None:
        raise PromotionRefused(
            "refusing to promote an image given by tag; promote the digest that was scanned and signed",
            where=shown, hint=f"use {ref.repository}@sha256:<digest>",
        )
    run = passing_scan(store, ref.digest)
    if run is None:
        raise PromotionRefused(f"no passing scan recorded in the store for {ref.digest}", where=shown,
                               hint="run `llmgate scan` on this digest first")
    from pipeline.stages.sign import cosign_options, verify_image

    cosign = cosign or Cosign.discover(cosign_options(cfg.sign, ref.by_digest))
    if cosign is None:
        raise PromotionRefused(f"signature cannot be verified: {COSIGN_NOT_FOUND}", where=shown)
    result = verify_image(cosign, ref.by_digest, cfg.sign)
    if not result.verified:
        raise PromotionRefused(f"signature does not verify: {result.reason}", where=shown)
    return GuardResult(ref=ref.by_digest, scan_run_id=run.run_id, verify_reason=result.reason)
