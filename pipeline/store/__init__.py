"""The results store: run records, the promotion audit trail and the promotion lock, on SQLite or
PostgreSQL through one SQLAlchemy schema migrated by Alembic. All SQL of the project lives here.

`resolve_store` decides which store a command opens (`--store` path, `LLMGATE_STORE_URL`,
`LLMGATE_STORE_URL_FILE`, or the work dir's results.db).
"""

from pipeline.store.location import ENV_URL, ENV_URL_FILE, StoreLocation, hide_password, resolve_store
from pipeline.store.lock import DEFAULT_LEASE_S, LockHeld, PromotionLock, promotion_lock
from pipeline.store.schema import Base, GateRow, LockRow, PromotionRow, RunRow, StageRunRow
from pipeline.store.store import DEFAULT_STORE, Store, UnreadableRecord, read_record
from pipeline.store.views import GateCell, LockInfo, RunSummary, TargetStatus

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_STORE",
    "ENV_URL",
    "ENV_URL_FILE",
    "Base",
    "GateCell",
    "GateRow",
    "LockHeld",
    "LockInfo",
    "LockRow",
    "PromotionLock",
    "PromotionRow",
    "RunRow",
    "RunSummary",
    "StageRunRow",
    "Store",
    "StoreLocation",
    "TargetStatus",
    "UnreadableRecord",
    "hide_password",
    "promotion_lock",
    "read_record",
    "resolve_store",
]
