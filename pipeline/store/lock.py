"""One promotion per target at a time, across processes and machines that share the store.

A leased row (`promotion_locks`, primary key = target), the same on SQLite and PostgreSQL. Inserting
it is the atomic test-and-set: the database refuses a second row for the target. Chosen over a
PostgreSQL session advisory lock because the lock must name its holder and since when (an advisory
lock only has a backend pid), must outlive a dropped connection during an hour-long canary (an
advisory lock dies with its connection, and connection poolers in transaction mode do not keep
session state), and must behave the same on SQLite.

A lock is stale when its lease has expired (times come from the database's clock, the one clock all
runners share) or when its holder ran on this host and that process is gone. A stale lock is taken
over by a compare-and-swap on its token, so of two processes racing to take it over exactly one wins,
and the winner learns whose lock it was.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.errors import GateFailed
from pipeline.process import pid_alive
from pipeline.store.schema import LockRow
from pipeline.store.views import LockInfo, aware

if TYPE_CHECKING:
    from pipeline.store.store import Store

DEFAULT_LEASE_S = 3600.0
_ATTEMPTS = 5


class LockHeld(GateFailed):
    """Another promotion of this target is in progress: refused (exit 1), nothing changed."""


def lock_info(row: LockRow) -> LockInfo:
    return LockInfo(target=row.target, holder=row.holder, host=row.host, pid=row.pid,
                    acquired_at=aware(row.acquired_at), expires_at=aware(row.expires_at))


def stale_reason(info: LockInfo, now: datetime) -> str | None:
    """Why a lock may be taken over, or None while its holder may still be promoting."""
    if info.expires_at <= now:
        return f"its lease expired at {info.expires_at.isoformat()}"
    if info.host == socket.gethostname() and not pid_alive(info.pid):
        return f"its holder process {info.pid} on {info.host} is gone"
    return None


class PromotionLock:
    """The promotion lock of one target, for one holder. `acquire` refuses with `LockHeld` naming the
    holder; after a takeover, `took_over` says whose lock it was and `takeover_reason` why."""

    def __init__(self, store: Store, target: str, *, holder: str = "", lease_s: float = DEFAULT_LEASE_S) -> None:
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self.store = store
        self.target = target
        self.holder = holder
        self.lease_s = lease_s
        self.token = uuid.uuid4().hex
        self.took_over: LockInfo | None = None
        self.takeover_reason: str | None = None

    @property
    def where(self) -> str:
        return f"promotion lock {self.target}"

    def _values(self, now: datetime) -> dict[str, object]:
        return {"token": self.token, "holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(),
                "acquired_at": now, "expires_at": now + timedelta(seconds=self.lease_s)}

    def acquire(self) -> PromotionLock:
        for _ in range(_ATTEMPTS):
            now = self.store.db_now()
            try:
                with self.store.session(write=True) as s:
                    s.add(LockRow(target=self.target, **self._values(now)))
                return self
            except IntegrityError:
                pass  # a row exists: held, or stale
            with self.store.session() as s:
                row = s.get(LockRow, self.target)
                info = None if row is None else lock_info(row)
            if info is None or row is None:
                continue  # released meanwhile: try again
            why = stale_reason(info, now)
            if why is None:
                raise LockHeld(
                    f"a promotion of {self.target!r} is in progress (held by {info.describe()})",
                    where=self.where,
                    hint="wait for it to finish; a lock whose holder died is taken over when its lease expires",
                )
            with self.store.session(write=True) as s:
                won = s.execute(
                    update(LockRow).where(LockRow.target == self.target, LockRow.token == row.token)
                    .values(**self._values(now))
                ).rowcount == 1
            if won:
                self.took_over, self.takeover_reason = info, why
                return self
        raise LockHeld(f"could not take the promotion lock of {self.target!r}: other promoters keep taking it",
                       where=self.where)

    @property
    def takeover_note(self) -> str | None:
        """A line for the log after a takeover: whose lock this was and why it was free."""
        if self.took_over is None:
            return None
        return (f"took over the promotion lock of {self.target!r} from {self.took_over.describe()}: "
                f"{self.takeover_reason}")

    def renew(self, lease_s: float | None = None) -> None:
        """Extend the lease (a long promotion calls this so that its lock is not taken over)."""
        lease = self.lease_s if lease_s is None else lease_s
        now = self.store.db_now()
        with self.store.session(write=True) as s:
            ok = s.execute(
                update(LockRow).where(LockRow.target == self.target, LockRow.token == self.token)
                .values(expires_at=now + timedelta(seconds=lease))
            ).rowcount == 1
        if not ok:
            raise LockHeld(f"the promotion lock of {self.target!r} was lost (its lease expired and another "
                           "promoter took it over)", where=self.where)

    def release(self) -> bool:
        """Give the lock back; False when it was no longer ours (taken over after its lease expired)."""
        with self.store.session(write=True) as s:
            return s.execute(
                delete(LockRow).where(LockRow.target == self.target, LockRow.token == self.token)
            ).rowcount == 1

    def held_by_me(self) -> bool:
        with self.store.session() as s:
            token = s.scalar(select(LockRow.token).where(LockRow.target == self.target))
        return token == self.token


@contextmanager
def promotion_lock(store: Store, target: str, *, holder: str = "",
                   lease_s: float = DEFAULT_LEASE_S) -> Iterator[PromotionLock]:
    lock = PromotionLock(store, target, holder=holder, lease_s=lease_s).acquire()
    try:
        yield lock
    finally:
        lock.release()
