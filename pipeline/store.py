"""Durable store of run records (SQLAlchemy; SQLite in WAL mode by default).

The full record is kept as JSON (the source of truth, so a rerun of the gate engine sees exactly
what was measured) and the fields dashboards query are denormalised into columns and tables.
Everything written passes through `redact` first: a secret never reaches the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from pipeline.errors import BadInput, InfraError
from pipeline.models import Decision, PromotionRecord, RunRecord
from pipeline.redact import redact

DEFAULT_STORE = ".llmgate/results.db"


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    repository: Mapped[str] = mapped_column(String(512))
    tag: Mapped[str | None] = mapped_column(String(256), index=True)
    digest: Mapped[str | None] = mapped_column(String(80), index=True)
    target: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decision: Mapped[str] = mapped_column(String(16))
    promoted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    ground_truth_version: Mapped[str | None] = mapped_column(String(32))
    record_json: Mapped[str] = mapped_column(Text)


class GateRow(Base):
    __tablename__ = "gate_verdicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    baseline: Mapped[float | None] = mapped_column(Float, nullable=True)


class PromotionRow(Base):
    __tablename__ = "promotions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(128), index=True)
    digest: Mapped[str] = mapped_column(String(80))
    mode: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    who: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    detail: Mapped[str] = mapped_column(Text)
    previous_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)


def _url(store: str) -> str:
    if "://" in store:
        return store
    path = Path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class Store:
    def __init__(self, store: str = DEFAULT_STORE) -> None:
        url = _url(store)
        try:
            self.engine: Engine = create_engine(url, future=True)
        except (ArgumentError, ImportError) as exc:
            raise BadInput(f"cannot use store URL: {exc}", where="--store") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            Base.metadata.create_all(self.engine)
        except OperationalError as exc:
            raise InfraError(f"store unreachable: {exc.orig}", where=self.engine.url.render_as_string()) from exc
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session.begin() as s:
            yield s

    # -- runs ---------------------------------------------------------------------------------
    def save(self, run: RunRecord) -> None:
        """Upsert the whole record (called after every stage)."""
        data = redact(json.loads(run.model_dump_json()))
        with self.session() as s:
            row = s.get(RunRow, run.run_id)
            if row is None:
                row = RunRow(run_id=run.run_id)
                s.add(row)
            row.repository = run.image.repository
            row.tag = run.image.tag
            row.digest = run.image.digest
            row.target = run.target
            row.created_at = run.created_at
            row.updated_at = run.updated_at
            row.decision = run.decision.value
            row.promoted = run.promotion is not None and run.promotion.outcome == "promoted"
            row.ground_truth_version = run.ground_truth.version if run.ground_truth else None
            row.record_json = json.dumps(data)
            s.flush()
            s.execute(delete(GateRow).where(GateRow.run_id == run.run_id))
            for g in run.gates:
                s.add(
                    GateRow(
                        run_id=run.run_id,
                        name=g.name,
                        status=g.status.value,
                        value=g.value,
                        threshold=g.threshold,
                        baseline=g.baseline,
                    )
                )

    def get(self, run_id: str) -> RunRecord:
        with self.session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                # Accept unambiguous prefixes, as people copy short ids from tables.
                rows = s.scalars(select(RunRow).where(RunRow.run_id.startswith(run_id))).all()
                if len(rows) != 1:
                    raise BadInput(f"no run with id {run_id!r} in the store", where="--run")
                row = rows[0]
            return RunRecord.model_validate_json(row.record_json)

    def runs(self, *, tag: str | None = None, target: str | None = None, limit: int | None = None) -> list[RunRecord]:
        q = select(RunRow).order_by(RunRow.created_at.desc())
        if tag is not None:
            q = q.where(RunRow.tag == tag)
        if target is not None:
            q = q.where(RunRow.target == target)
        if limit is not None:
            q = q.limit(limit)
        with self.session() as s:
            return [RunRecord.model_validate_json(r.record_json) for r in s.scalars(q)]

    def runs_per_tag(self) -> dict[str, list[RunRecord]]:
        out: dict[str, list[RunRecord]] = {}
        for run in self.runs():
            out.setdefault(run.image.tag or "(untagged)", []).append(run)
        return out

    def latest(self) -> RunRecord | None:
        runs = self.runs(limit=1)
        return runs[0] if runs else None

    def last_promoted(self, target: str, *, ground_truth_version: str | None = None) -> RunRecord | None:
        q = (
            select(RunRow)
            .where(RunRow.target == target, RunRow.promoted.is_(True))
            .order_by(RunRow.updated_at.desc())
        )
        if ground_truth_version is not None:
            q = q.where(RunRow.ground_truth_version == ground_truth_version)
        with self.session() as s:
            row = s.scalars(q.limit(1)).first()
            return None if row is None else RunRecord.model_validate_json(row.record_json)

    def passing_runs_for_digest(self, digest: str) -> list[RunRecord]:
        q = select(RunRow).where(RunRow.digest == digest, RunRow.decision == Decision.PASS.value)
        with self.session() as s:
            return [RunRecord.model_validate_json(r.record_json) for r in s.scalars(q)]

    # -- promotions (audit trail) ---------------------------------------------------------------
    def record_promotion(self, rec: PromotionRecord, run_id: str | None) -> None:
        data = redact(rec.model_dump())
        with self.session() as s:
            s.add(
                PromotionRow(
                    run_id=run_id,
                    target=data["target"],
                    digest=data["digest"],
                    mode=data["mode"],
                    outcome=data["outcome"],
                    who=data["who"],
                    at=rec.at,
                    detail=data["detail"],
                    previous_digest=data["previous_digest"],
                )
            )

    def promotions(self, target: str | None = None) -> list[tuple[str | None, PromotionRecord]]:
        q = select(PromotionRow).order_by(PromotionRow.at.asc(), PromotionRow.id.asc())
        if target is not None:
            q = q.where(PromotionRow.target == target)
        with self.session() as s:
            return [
                (
                    r.run_id,
                    PromotionRecord(
                        target=r.target,
                        digest=r.digest,
                        mode=r.mode,
                        outcome=r.outcome,
                        who=r.who,
                        at=r.at,
                        detail=r.detail,
                        previous_digest=r.previous_digest,
                    ),
                )
                for r in s.scalars(q)
            ]


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the dashboard read while a run writes; busy_timeout avoids spurious lock errors.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
