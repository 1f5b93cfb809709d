"""One promotion per target at a time: the leased lock row the store keeps (see pipeline.store.lock)."""

from __future__ import annotations

from pipeline.store.lock import DEFAULT_LEASE_S, LockHeld, PromotionLock, promotion_lock
from pipeline.store.schema import LockRow

__all__ = ["DEFAULT_LEASE_S", "LockHeld", "LockRow", "PromotionLock", "promotion_lock"]
