"""Durable store of run records: SQLite (one machine) or PostgreSQL (runners sharing one store).

The full record is kept as JSON, the source of truth, so a rerun of the gate engine sees exactly what
was measured; the fields listings, dashboards and baselines query are denormalised into columns and
tables on every `save`. Everything written passes through `redact` first: a secret never reaches the
store. All SQL of the project lives in this package.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, delete, func, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import BadInput
from pipeline.models import SCHEMA_VERSION, Decision, PromotionRecord, RunRecord, StageResult, StageStatus
from pipeline.redact import redact
from pipeline.store.engine import BEGIN_IMMEDIATE, check_sqlite_file, make_engine, translate
from pipeline.store.location import StoreLocation, location_of
from pipeline.store.lock import DEFAULT_LEASE_S, RELEASED, PromotionLock, lock_info, stale_reason
from pipeline.store.migrate import upgrade_to_head
from pipeline.store.schema import (
    REASON,
    GateRow,
    LockRow,
    LogCheckpointRow,
    LogEntryRow,
    PromotionRow,
    RunRow,
    StageRunRow,
)
from pipeline.store.views import GateCell, LockInfo, RunSummary, StoredLog, TargetStatus, aware

DEFAULT_STORE = ".llmgate/results.db"
PROMOTED = "promoted"


def _utc(dt: datetime) -> datetime:
    # SQLite keeps datetimes as text without an offset: everything written is UTC.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _short(value: Any, width: int) -> str | None:
    return value[:width] if isinstance(value, str) and value else None


class UnreadableRecord(BadInput):
    """A stored run record this llmgate cannot read: corrupt JSON, a field that fails validation, or a
    record written by a newer llmgate (a higher schema version). Names the run; listings skip it."""

    def __init__(self, run_id: str, why: str) -> None:
        self.run_id, self.why = run_id, why
        super().__init__(f"its stored record cannot be read: {why}", where=f"run {run_id}",
                         hint="`llmgate runs list` names every unreadable run; the other runs are unaffected")


def read_record(run_id: str, raw: str) -> RunRecord:
    """The record stored as `raw`; UnreadableRecord naming `run_id` when it cannot be read as one."""
    try:
        rec = RunRecord.model_validate_json(raw)
    except ValidationError as exc:
        if exc.error_count() and exc.errors()[0]["type"] == "json_invalid":
            raise UnreadableRecord(run_id, "not valid JSON") from None
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(root)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        newer = _schema_of(raw)
        if newer is not None and newer > SCHEMA_VERSION:
            raise UnreadableRecord(run_id, f"written by a newer llmgate (record schema {newer}; this one reads up "
                                           f"to {SCHEMA_VERSION})") from None
        raise UnreadableRecord(run_id, f"{loc}: {first['msg']}{more}") from None
    if rec.schema_version > SCHEMA_VERSION:
        raise UnreadableRecord(run_id, f"written by a newer llmgate (record schema {rec.schema_version}; this one "
                                       f"reads up to {SCHEMA_VERSION})")
    return rec


def _schema_of(raw: str) -> int | None:
    try:
        value = json.loads(raw).get("schema_version")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, int) else None


class Store:
    """A store at `location`: a resolved `StoreLocation`, a SQLite path, or a database URL.

    Opening it upgrades its schema to the current revision."""

    def __init__(self, location: str | Path | StoreLocation = DEFAULT_STORE) -> None:
        self.location = location_of(location)
        check_sqlite_file(self.location)
        self.engine: Engine = make_engine(self.location)
        try:
            self.migrated = upgrade_to_head(self.engine, where=self.location.shown)
        except DBAPIError as exc:
            self.engine.dispose()
            raise translate(exc, self.location) from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite: a transaction that reads and then writes would fail at once (not wait) when another
        # process wrote in between; writers take the write lock at BEGIN and queue on the busy timeout.
        self._write_session = sessionmaker(self.engine.execution_options(**{BEGIN_IMMEDIATE: True}),
                                           expire_on_commit=False)
        # run id -> why its record could not be read, for every row a listing has skipped so far
        self.unreadable: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Store({self.location.shown!r})"

    def _readable(self, rows: Any) -> list[RunRecord]:
        """Records of (run_id, record_json) rows; an unreadable one is left out and named in `unreadable`,
        so one bad row cannot hide every other run from a listing."""
        out: list[RunRecord] = []
        for run_id, raw in rows:
            try:
                out.append(read_record(run_id, raw))
            except UnreadableRecord as exc:
                self.unreadable[run_id] = exc.why
        return out

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction (`write=True` when it will write). A unique-key conflict propagates as
        IntegrityError (the lock relies on it); any other database failure becomes BadInput/InfraError
        naming the store, password hidden."""
        try:
            with (self._write_session if write else self._session).begin() as s:
                yield s
        except IntegrityError:
            raise
        except DBAPIError as exc:
            raise translate(exc, self.location) from None

    def db_now(self) -> datetime:
        """The database's clock (PostgreSQL: the server's, shared by every runner); UTC."""
        if self.dialect == "postgresql":
            with self.session() as s:
                return aware(s.execute(text("SELECT clock_timestamp()")).scalar_one())
        return datetime.now(UTC)

    # -- runs -------------------------------------------------------------------------------------
    def save(self, run: RunRecord) -> None:
        """Upsert the whole record and its denormalised rows (called after every stage)."""
        data = redact(json.loads(run.model_dump_json()))
        model, policy, gt = data.get("model") or {}, data.get("policy") or {}, data.get("ground_truth") or {}
        image = data["image"]
        with self.session(write=True) as s:
            row = s.get(RunRow, run.run_id)
            if row is None:
                row = RunRow(run_id=run.run_id)
                s.add(row)
            row.repository = image["repository"]
            row.tag = image.get("tag")
            row.digest = image.get("digest")
            row.target = data["target"]
            row.created_at = _utc(run.created_at)
            row.updated_at = _utc(run.updated_at)
            row.decision = run.decision.value
            row.decision_reason = _short(data.get("decision_reason"), REASON)
            row.promoted = run.promotion is not None and run.promotion.outcome == PROMOTED
            row.ground_truth_version = gt.get("version")
            row.ground_truth_sha256 = gt.get("sha256")
            row.model_digest = model.get("digest")
            row.policy_name = _short(policy.get("name"), 256)
            row.policy_sha256 = policy.get("sha256")
            row.interrupted_stage = _short(data.get("interrupted_stage"), 32)
            row.record_json = json.dumps(data)
            s.flush()
            s.execute(delete(GateRow).where(GateRow.run_id == run.run_id))
            s.execute(delete(StageRunRow).where(StageRunRow.run_id == run.run_id))
            # one multi-row insert per table: a save runs after every stage
            if run.gates:
                s.execute(insert(GateRow), [
                    {"run_id": run.run_id, "name": g.name, "status": g.status.value, "value": g.value,
                     "threshold": g.threshold, "baseline": g.baseline} for g in run.gates])
            if run.stages:
                s.execute(insert(StageRunRow), [
                    {"run_id": run.run_id, "stage": str(name), "status": res.status.value, "input_key": res.input_key,
                     "reused_from": res.reused_from, "started_at": _utc(res.started_at),
                     "finished_at": _utc(res.finished_at) if res.finished_at else None, "duration_s": res.duration_s}
                    for name, res in run.stages.items()])

    def get(self, run_id: str) -> RunRecord:
        with self.session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                # Accept unambiguous prefixes, as people copy short ids from tables.
                rows = s.scalars(select(RunRow).where(RunRow.run_id.startswith(run_id, autoescape=True))
                                 .limit(2)).all()
                if not rows:
                    raise BadInput(f"no run with id {run_id!r} in the store", where="--run")
                if len(rows) > 1:
                    raise BadInput(f"run id prefix {run_id!r} matches more than one run; give more of it",
                                   where="--run")
                row = rows[0]
            return read_record(row.run_id, row.record_json)

    def runs(
        self,
        *,
        tag: str | None = None,
        target: str | None = None,
        decision: Decision | str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first, filtered by tag, target, decision and creation time (`since` inclusive)."""
        q = select(RunRow.run_id, RunRow.record_json).where(
            *self._filters(tag=tag, target=target, decision=decision, since=since))
        q = q.order_by(RunRow.created_at.desc(), RunRow.run_id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self.session() as s:
            return self._readable(s.execute(q).all())

    @staticmethod
    def _filters(*, tag: str | None = None, target: str | None = None, decision: Decision | str | None = None,
                 since: datetime | None = None) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if tag is not None:
            where.append(RunRow.tag == tag)
        if target is not None:
            where.append(RunRow.target == target)
        if decision is not None:
            try:
                where.append(RunRow.decision == Decision(decision).value)
            except ValueError:
                raise BadInput(f"no such decision {decision!r} (one of {', '.join(d.value for d in Decision)})",
                               where="decision") from None
        if since is not None:
            where.append(RunRow.created_at >= _utc(since))
        return where

    def history(self, tag: str | None = None, target: str | None = None) -> list[RunSummary]:
        """Verdicts over time, oldest first: each run's identity, decision and gate verdicts, read from
        the denormalised tables (no record is parsed)."""
        q = select(RunRow).where(*self._filters(tag=tag, target=target))
        q = q.order_by(RunRow.created_at.asc(), RunRow.run_id.asc())
        with self.session() as s:
            rows = s.scalars(q).all()
            gates: dict[str, list[GateCell]] = {}
            gq = select(GateRow.run_id, GateRow.name, GateRow.status, GateRow.value, GateRow.threshold,
                        GateRow.baseline).order_by(GateRow.id)
            if tag is not None or target is not None:
                gq = gq.join(RunRow, RunRow.run_id == GateRow.run_id).where(*self._filters(tag=tag, target=target))
            for run_id, name, status, value, threshold, baseline in s.execute(gq):
                gates.setdefault(run_id, []).append(
                    GateCell(name=name, status=status, value=value, threshold=threshold, baseline=baseline))
        return [
            RunSummary(
                run_id=r.run_id, created_at=aware(r.created_at), updated_at=aware(r.updated_at), target=r.target,
                repository=r.repository, tag=r.tag, digest=r.digest, model_digest=r.model_digest,
                policy_name=r.policy_name, policy_sha256=r.policy_sha256,
                ground_truth_version=r.ground_truth_version, ground_truth_sha256=r.ground_truth_sha256,
                decision=r.decision, decision_reason=r.decision_reason, interrupted_stage=r.interrupted_stage,
                promoted=bool(r.promoted), gates=gates.get(r.run_id, []),
            )
            for r in rows
        ]

    def latest(self) -> RunRecord | None:
        return self.newest()

    def newest(self, *, tag: str | None = None) -> RunRecord | None:
        """The newest run (of `tag`); an unreadable one is an UnreadableRecord naming it, never passed
        over for an older run the caller did not mean."""
        q = select(RunRow.run_id, RunRow.record_json).where(*self._filters(tag=tag))
        with self.session() as s:
            row = s.execute(q.order_by(RunRow.created_at.desc(), RunRow.run_id.desc()).limit(1)).first()
        return None if row is None else read_record(row.run_id, row.record_json)

    def last_promoted(self, target: str, *, ground_truth_version: str | None = None) -> RunRecord | None:
        """The run whose release `target` received last, by promotion time (the audit trail's, else the
        record's own): re-gating or re-saving an older promoted run never makes it the newest, and a
        rollback makes the run it went back to the newest."""
        q = select(RunRow.run_id, RunRow.record_json).where(RunRow.target == target, RunRow.promoted.is_(True))
        if ground_truth_version is not None:
            q = q.where(RunRow.ground_truth_version == ground_truth_version)
        audit = (select(PromotionRow.run_id, func.max(PromotionRow.at))
                 .where(PromotionRow.target == target, PromotionRow.outcome == PROMOTED,
                        PromotionRow.run_id.is_not(None))
                 .group_by(PromotionRow.run_id))
        with self.session() as s:
            rows = s.execute(q).all()
            promoted_at = {rid: aware(at) for rid, at in s.execute(audit)}
        runs: list[RunRecord] = []
        unreadable: list[UnreadableRecord] = []
        for run_id, raw in rows:
            try:
                runs.append(read_record(run_id, raw))
            except UnreadableRecord as exc:
                unreadable.append(exc)

        def when(r: RunRecord) -> tuple[datetime, datetime]:
            at = promoted_at.get(r.run_id) or (_utc(r.promotion.at) if r.promotion else _utc(r.updated_at))
            return at, _utc(r.updated_at)

        newest = max(runs, key=when) if runs else None
        last = datetime.max.replace(tzinfo=UTC)  # no audit row: it may be the newest
        for exc in sorted(unreadable, key=lambda e: promoted_at.get(e.run_id) or last, reverse=True):
            # one that may be the newest is an error naming it, never a silent fall-back to an older baseline
            at = promoted_at.get(exc.run_id)
            if newest is None or at is None or at >= when(newest)[0]:
                raise exc
            self.unreadable[exc.run_id] = exc.why
        return newest

    def runs_for_digest(self, digest: str) -> list[RunRecord]:
        """Every run of this image digest, most recently updated first."""
        q = select(RunRow.run_id, RunRow.record_json).where(RunRow.digest == digest)
        with self.session() as s:
            rows = s.execute(q.order_by(RunRow.updated_at.desc(), RunRow.run_id.desc())).all()
        return [read_record(run_id, raw) for run_id, raw in rows]

    def passing_runs_for_digest(self, digest: str) -> list[RunRecord]:
        q = select(RunRow.run_id, RunRow.record_json).where(RunRow.digest == digest,
                                                            RunRow.decision == Decision.PASS.value)
        with self.session() as s:
            rows = s.execute(q.order_by(RunRow.updated_at.desc(), RunRow.run_id.desc())).all()
        return [read_record(run_id, raw) for run_id, raw in rows]

    def pending_runs(self) -> list[RunRecord]:
        """Runs with no decision yet, oldest first: in progress, or left behind by a process that died
        (the caller tells which and marks those interrupted)."""
        q = select(RunRow.run_id, RunRow.record_json).where(RunRow.decision == Decision.PENDING.value)
        with self.session() as s:
            rows = s.execute(q.order_by(RunRow.created_at.asc(), RunRow.run_id.asc())).all()
        return self._readable(rows)

    def reusable(self, stage: str, input_key: str) -> tuple[str, StageResult] | None:
        """The newest `ok` result of `stage` computed from the same inputs (same `input_key`), as
        (the run that computed it, the result); None when there is none. A result that was itself
        reused names the run it came from, so the returned run id is always the one that measured."""
        q = (
            select(StageRunRow.run_id, StageRunRow.reused_from)
            .where(StageRunRow.stage == str(stage), StageRunRow.input_key == input_key,
                   StageRunRow.status == StageStatus.OK.value)
            .order_by(func.coalesce(StageRunRow.finished_at, StageRunRow.started_at).desc(), StageRunRow.id.desc())
            .limit(1)
        )
        with self.session() as s:
            found = s.execute(q).first()
            if found is None:
                return None
            raw = s.scalar(select(RunRow.record_json).where(RunRow.run_id == found.run_id))
        try:
            result = None if raw is None else read_record(found.run_id, raw).stages.get(str(stage))
        except UnreadableRecord:
            return None  # nothing to reuse from a record that cannot be read: the stage runs again
        if result is None:
            return None
        return found.reused_from or found.run_id, result

    def change_stamp(self) -> tuple[object, ...]:
        """Changes whenever a run is saved or a promotion recorded (the dashboard regenerates on it)."""
        with self.session() as s:
            return (s.scalar(select(func.max(RunRow.updated_at))), s.scalar(select(func.count(RunRow.run_id))),
                    s.scalar(select(func.count(PromotionRow.id))))

    # -- promotions (audit trail) -----------------------------------------------------------------
    def record_promotion(self, rec: PromotionRecord, run_id: str | None) -> None:
        data = redact(rec.model_dump())
        with self.session(write=True) as s:
            s.add(PromotionRow(run_id=run_id, target=data["target"], digest=data["digest"], mode=data["mode"],
                               outcome=data["outcome"], who=data["who"], at=_utc(rec.at), detail=data["detail"],
                               previous_digest=data["previous_digest"], model_digest=data["model_digest"],
                               verdict_run_id=data["verdict_run_id"],
                               verdict_at=_utc(rec.verdict_at) if rec.verdict_at else None))

    def promotions(self, target: str | None = None) -> list[tuple[str | None, PromotionRecord]]:
        """The audit trail, oldest first."""
        q = select(PromotionRow).order_by(PromotionRow.at.asc(), PromotionRow.id.asc())
        if target is not None:
            q = q.where(PromotionRow.target == target)
        with self.session() as s:
            return [
                (r.run_id, PromotionRecord(target=r.target, digest=r.digest, mode=r.mode, outcome=r.outcome,
                                           who=r.who, at=aware(r.at), detail=r.detail,
                                           previous_digest=r.previous_digest, model_digest=r.model_digest,
                                           verdict_run_id=r.verdict_run_id,
                                           verdict_at=aware(r.verdict_at) if r.verdict_at else None))
                for r in s.scalars(q)
            ]

    def target_status(self, target: str, *, lock_key: str | None = None) -> TargetStatus | None:
        """What is promoted to `target`: the release pair (image digest, model digest) of the newest
        successful promotion, since when it has been there (the first of the promotions of that pair in a
        row), by which run and whom, and the signed verdict that authorised it; None when the store has no
        promotion attempt and no lock for this target. A weights-only promotion is a release of its own."""
        trail = self.promotions(target)
        lock = self.lock_holder(lock_key or target)
        if not trail and lock is None:
            return None
        last_run, last = trail[-1] if trail else (None, None)
        promoted = [(rid, rec) for rid, rec in trail if rec.outcome == PROMOTED]
        if not promoted:
            return TargetStatus(target=target, last_attempt=last, last_attempt_run_id=last_run, lock=lock)
        run_id, current = promoted[-1]
        pair = (current.digest, current.model_digest)
        first_run, first = run_id, current
        previous: PromotionRecord | None = None
        for rid, rec in reversed(promoted[:-1]):
            if (rec.digest, rec.model_digest) != pair:
                previous = rec
                break
            first_run, first = rid, rec
        tag = None
        if first_run is not None:
            with self.session() as s:
                tag = s.scalar(select(RunRow.tag).where(RunRow.run_id == first_run))
        return TargetStatus(target=target, digest=current.digest, model_digest=current.model_digest, run_id=first_run,
                            tag=tag, since=first.at, who=first.who, mode=first.mode,
                            verdict_run_id=current.verdict_run_id, verdict_at=current.verdict_at,
                            previous_digest=previous.digest if previous else None,
                            previous_model_digest=previous.model_digest if previous else None,
                            last_attempt=last, last_attempt_run_id=last_run, lock=lock)

    # -- promotion lock ---------------------------------------------------------------------------
    def promotion_lock(self, target: str, holder: str = "", lease_s: float = DEFAULT_LEASE_S,
                       heartbeat: bool = True) -> AbstractContextManager[PromotionLock]:
        """Hold the promotion lock of `target` for the `with` block, its lease renewed by a heartbeat;
        `LockHeld` (exit 1) naming the holder and since when if another promoter has it; a dead holder's
        lock is taken over (see `PromotionLock.takeover_note`)."""
        from pipeline.store.lock import promotion_lock

        return promotion_lock(self, target, holder=holder, lease_s=lease_s, heartbeat=heartbeat)

    def lock_holder(self, target: str) -> LockInfo | None:
        """The live holder of `target`'s promotion lock (None when free, released or stale)."""
        with self.session() as s:
            row = s.get(LockRow, target)
            info = None if row is None or row.token == RELEASED else lock_info(row)
        if info is None or stale_reason(info, self.db_now()) is not None:
            return None
        return info

    # -- the verdict log (its meaning: pipeline/supplychain/verdict_log.py) ------------------------------
    def verdict_log(self, origin: str) -> StoredLog:
        """Every stored entry of the log `origin` by index, and its newest checkpoint note. What is read
        here is checked against the signed checkpoint before anything trusts it."""
        with self.session() as s:
            entries = [(int(i), str(leaf)) for i, leaf in s.execute(
                select(LogEntryRow.idx, LogEntryRow.leaf).where(LogEntryRow.origin == origin)
                .order_by(LogEntryRow.idx.asc()))]
            note = s.scalars(select(LogCheckpointRow.note).where(LogCheckpointRow.origin == origin)
                             .order_by(LogCheckpointRow.size.desc()).limit(1)).first()
        return StoredLog(origin=origin, entries=entries, checkpoint=note)

    def append_verdict_log(self, origin: str, index: int, leaf: str, checkpoint: str) -> bool:
        """Add the entry at `index` and the checkpoint over the log including it, in one transaction.
        False when `index` is taken (another gate appended first): the caller reads the log again."""
        try:
            with self.session(write=True) as s:
                s.add(LogEntryRow(origin=origin, idx=index, leaf=leaf))
                s.add(LogCheckpointRow(origin=origin, size=index + 1, note=checkpoint))
        except IntegrityError:
            return False
        return True
