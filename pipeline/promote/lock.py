"""One promotion per target at a time, across processes and machines that share the store.

The lock is a row in the store (`promotion_locks`, primary key = target): inserting it is the
atomic test-and-set; the database refuses a second row. A lock left behind by a crashed process is
stale when it has expired (every lock carries a lease) or when its holder ran on this host and that
process is gone; a stale lock is taken over by a compare-and-delete on its token, so two processes
racing to take over cannot both win.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, Integer, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pipeline.errors import GateFailed
from pipeline.store import Store

DEFAULT_LEASE_S = 3600.0


class _Base(DeclarativeBase):
    pass


class LockRow(_Base):
    __tablename__ = "promotion_locks"
    target: Mapped[str] = mapped_column(String(128), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    holder: Mapped[str] = mapped_column(String(256))
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LockHeld(GateFailed):
    """Another promotion of this target is in progress: refused (exit 1), nothing changed."""


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # SQLite returns naive datetimes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class PromotionLock:
    def __init__(self, store: Store, target: str, *, holder: str = "", lease_s: float = DEFAULT_LEASE_S) -> None:
        self.store = store
        self.target = target
        self.holder = holder
        self.lease_s = lease_s
        self.token = uuid.uuid4().hex
        LockRow.metadata.create_all(store.engine)

    def _stale(self, row: LockRow, now: datetime) -> str | None:
        if _aware(row.expires_at) <= now:
            return f"lease expired at {_aware(row.expires_at).isoformat()}"
        if row.host == socket.gethostname() and not _pid_alive(row.pid):
            return f"holder process {row.pid} on {row.host} is gone"
        return None

    def acquire(self) -> None:
        now = datetime.now(UTC)
        for _ in range(3):
            try:
                with self.store.session() as s:
                    s.add(LockRow(target=self.target, token=self.token, holder=self.holder, host=socket.gethostname(),
                                  pid=os.getpid(), acquired_at=now, expires_at=now + timedelta(seconds=self.lease_s)))
                return
            except IntegrityError:
                pass
            with self.store.session() as s:
                row = s.get(LockRow, self.target)
                if row is None:
                    continue  # released meanwhile: try again
                why = self._stale(row, now)
                if why is None:
                    raise LockHeld(
                        f"a promotion of {self.target!r} is in progress (held by {row.holder or '?'} pid {row.pid} "
                        f"on {row.host} since {_aware(row.acquired_at).isoformat()})",
                        where=f"promotion lock {self.target}",
                        hint="wait for it, or remove the lock if that process is known dead",
                    )
                # compare-and-delete on the token: only one contender removes this stale row
                s.execute(delete(LockRow).where(LockRow.target == self.target, LockRow.token == row.token))
        raise LockHeld("could not take the promotion lock (contended)", where=f"promotion lock {self.target}")

    def release(self) -> None:
        with self.store.session() as s:
            s.execute(delete(LockRow).where(LockRow.target == self.target, LockRow.token == self.token))

    def held_by_me(self) -> bool:
        with self.store.session() as s:
            row = s.scalars(select(LockRow).where(LockRow.target == self.target)).first()
            return row is not None and row.token == self.token


@contextmanager
def promotion_lock(store: Store, target: str, *, holder: str = "", lease_s: float = DEFAULT_LEASE_S) -> Iterator[PromotionLock]:
    lock = PromotionLock(store, target, holder=holder, lease_s=lease_s)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
