"""The audit trail: every promotion attempt, whatever its outcome, as a row in the store."""

from __future__ import annotations

import getpass
import os
import socket

from pipeline.models import PromotionRecord
from pipeline.store import Store

PROMOTED = "promoted"


def actor() -> str:
    """Who is promoting: LLMGATE_ACTOR (CI sets it to the pipeline/user), else user@host."""
    explicit = os.environ.get("LLMGATE_ACTOR")
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def record(store: Store, rec: PromotionRecord, run_id: str | None) -> PromotionRecord:
    if not rec.who:
        rec.who = actor()
    store.record_promotion(rec, run_id)
    return rec


def promoted_history(store: Store, target: str) -> list[tuple[str | None, PromotionRecord]]:
    """Successful promotions of `target`, oldest first (rollbacks that succeeded included)."""
    return [(rid, r) for rid, r in store.promotions(target) if r.outcome == PROMOTED]


def pair_of(rec: PromotionRecord) -> tuple[str, str | None]:
    """A release is the pair (image digest, model digest): a weights-only promotion is a release."""
    return rec.digest, rec.model_digest


def pair_text(rec: PromotionRecord) -> str:
    return f"(image {rec.digest}, model {rec.model_digest or 'unknown'})"


def current_and_previous(store: Store, target: str) -> tuple[tuple[str | None, PromotionRecord] | None,
                                                              tuple[str | None, PromotionRecord] | None]:
    """The release pair promoted last, and the last different pair promoted before it."""
    hist = promoted_history(store, target)
    if not hist:
        return None, None
    current = hist[-1]
    for item in reversed(hist[:-1]):
        if pair_of(item[1]) != pair_of(current[1]):
            return current, item
    return current, None
