"""The store's tables: the one `DeclarativeBase` of the project.

`runs.record_json` is the source of truth (the whole record, redacted); every other column and table
is a denormalised copy written by `Store.save` so that listings, dashboards and baselines can query
without parsing records. The schema changes only through a migration in `migrations/versions`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Column widths, shared with the migrations that created them.
ID = 64
DIGEST = 80
SHA256 = 64
REASON = 512


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    repository: Mapped[str] = mapped_column(String(512))
    tag: Mapped[str | None] = mapped_column(String(256), index=True)
    digest: Mapped[str | None] = mapped_column(String(DIGEST), index=True)
    target: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decision: Mapped[str] = mapped_column(String(16), index=True)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    ground_truth_version: Mapped[str | None] = mapped_column(String(32))
    record_json: Mapped[str] = mapped_column(Text)
    # release identity and outcome (migration 0002)
    model_digest: Mapped[str | None] = mapped_column(String(DIGEST), index=True)
    policy_name: Mapped[str | None] = mapped_column(String(256))
    policy_sha256: Mapped[str | None] = mapped_column(String(SHA256))
    ground_truth_sha256: Mapped[str | None] = mapped_column(String(SHA256))
    decision_reason: Mapped[str | None] = mapped_column(String(REASON))
    interrupted_stage: Mapped[str | None] = mapped_column(String(32))


class GateRow(Base):
    __tablename__ = "gate_verdicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    baseline: Mapped[float | None] = mapped_column(Float, nullable=True)


class StageRunRow(Base):
    """One stage of one run: status, timing and the key of its inputs (content-addressed reuse)."""

    __tablename__ = "stage_runs"
    __table_args__ = (Index("ix_stage_runs_stage_input_key", "stage", "input_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    input_key: Mapped[str | None] = mapped_column(String(SHA256), nullable=True)
    reused_from: Mapped[str | None] = mapped_column(String(ID), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)


class PromotionRow(Base):
    __tablename__ = "promotions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(String(ID), index=True)
    target: Mapped[str] = mapped_column(String(128), index=True)
    digest: Mapped[str] = mapped_column(String(DIGEST))
    mode: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    who: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    detail: Mapped[str] = mapped_column(Text)
    previous_digest: Mapped[str | None] = mapped_column(String(DIGEST), nullable=True)
    # the release pair and the signed verdict that authorised it (migration 0003)
    model_digest: Mapped[str | None] = mapped_column(String(DIGEST), nullable=True)
    verdict_run_id: Mapped[str | None] = mapped_column(String(ID), nullable=True)
    verdict_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LockRow(Base):
    """A leased promotion lock, one row per target. `token` is empty while nobody holds it; `fence`
    grows by one each time the lock changes hands (migration 0003)."""

    __tablename__ = "promotion_locks"
    target: Mapped[str] = mapped_column(String(128), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    holder: Mapped[str] = mapped_column(String(256))
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class _PerOrigin:
    """A row of one origin's verdict log (migration 0004 creates both tables alike). These columns come
    first, in the migration's order."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, sort_order=-2)
    origin: Mapped[str] = mapped_column(String(512), sort_order=-1)


class LogEntryRow(_PerOrigin, Base):
    """One entry of an append-only verdict log (pipeline/supplychain/verdict_log.py); `idx` counts from 0."""

    __tablename__ = "verdict_log"
    __table_args__ = (UniqueConstraint("origin", "idx", name="uq_verdict_log_origin_idx"),)
    idx: Mapped[int] = mapped_column(Integer)
    leaf: Mapped[str] = mapped_column(Text)


class LogCheckpointRow(_PerOrigin, Base):
    """A signed checkpoint (C2SP tlog-checkpoint note) of a verdict log at `size` entries."""

    __tablename__ = "verdict_log_checkpoints"
    __table_args__ = (UniqueConstraint("origin", "size", name="uq_verdict_log_checkpoints_origin_size"),)
    size: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text)
