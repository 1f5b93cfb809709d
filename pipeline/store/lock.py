"""One promotion per target at a time, across processes and machines that share the store.

A leased row (`promotion_locks`, primary key = target), the same on SQLite and PostgreSQL. Inserting
it is the atomic test-and-set: the database refuses a second row for the target. Chosen over a
PostgreSQL session advisory lock because the lock must name its holder and since when (an advisory
lock only has a backend pid), must outlive a dropped connection during an hour-long canary (an
advisory lock dies with its connection, and connection poolers in transaction mode do not keep
session state), and must behave the same on SQLite.

The lease is short (`DEFAULT_LEASE_S`) and a heartbeat thread renews it while the promotion runs, so a
long canary keeps its lock and a crashed promoter's lock frees itself soon. A lock may be taken over
only when its holder cannot be promoting any more: its lease expired (no heartbeat for a whole lease;
times come from the database's clock, the one clock all runners share) and, when it ran on this host,
its process is gone. A live holder on this host is never taken over, whatever its lease says. A
takeover is a compare-and-swap on the holder's token, so of two processes racing to take over exactly
one wins, and the winner learns whose lock it was.

Fencing: `fence` grows by one each time the lock changes hands (the row stays after a release, its
token emptied, so the number never goes back). A backend calls `check()` before each write: it
raises `LockLost` once the row names another holder, the lease ran out, or the heartbeat failed,
so a promoter that lost its lock (paused, partitioned) stops before writing over its successor.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from pipeline.errors import GateFailed, LlmgateError
from pipeline.process import pid_alive
from pipeline.store.schema import LockRow
from pipeline.store.views import LockInfo, aware

if TYPE_CHECKING:
    from pipeline.store.store import Store

# Shorter than any rollout timeout on purpose: the heartbeat renews it every third of a lease.
DEFAULT_LEASE_S = 120.0
HEARTBEAT_FRACTION = 3
_ATTEMPTS = 5
RELEASED = ""  # the token of a row nobody holds


class LockHeld(GateFailed):
    """Another promotion of this target is in progress: refused (exit 1), nothing changed."""


class LockLost(LockHeld):
    """This promoter's lock is no longer its own (lease expired and taken over, or not renewable):
    every write after this is refused."""


def lock_info(row: LockRow) -> LockInfo:
    return LockInfo(target=row.target, holder=row.holder, host=row.host, pid=row.pid,
                    acquired_at=aware(row.acquired_at), expires_at=aware(row.expires_at), fence=row.fence or 0)


def stale_reason(info: LockInfo, now: datetime) -> str | None:
    """Why a lock may be taken over, or None while its holder may still be promoting. A holder on this
    host whose process lives is never stale; one elsewhere is stale once its lease expired (its
    heartbeat stopped for a whole lease)."""
    local = info.host == socket.gethostname()
    if local and not pid_alive(info.pid):
        return f"its holder process {info.pid} on {info.host} is gone"
    if local:
        return None
    if info.expires_at <= now:
        return f"its lease expired at {info.expires_at.isoformat()} (no heartbeat since)"
    return None


class PromotionLock:
    """The promotion lock of one target, for one holder. `acquire` refuses with `LockHeld` naming the
    holder; after a takeover, `took_over` says whose lock it was and `takeover_reason` why. `fence` is
    this holding's fencing token; `check()` is the backend's test before each write."""

    def __init__(self, store: Store, target: str, *, holder: str = "", lease_s: float = DEFAULT_LEASE_S) -> None:
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self.store = store
        self.target = target
        self.holder = holder
        self.lease_s = lease_s
        self.token = uuid.uuid4().hex
        self.fence = 0
        self.took_over: LockInfo | None = None
        self.takeover_reason: str | None = None
        self.lost: str | None = None  # why the heartbeat could not renew the lease
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def where(self) -> str:
        return f"promotion lock {self.target}"

    def _values(self, now: datetime, fence: int) -> dict[str, object]:
        return {"token": self.token, "holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(),
                "acquired_at": now, "expires_at": now + timedelta(seconds=self.lease_s), "fence": fence}

    def acquire(self) -> PromotionLock:
        for _ in range(_ATTEMPTS):
            now = self.store.db_now()
            try:
                with self.store.session(write=True) as s:
                    s.add(LockRow(target=self.target, **self._values(now, 1)))
                self.fence = 1
                return self
            except IntegrityError:
                pass  # a row exists: held, stale, or released
            with self.store.session() as s:
                row = s.get(LockRow, self.target)
                info = None if row is None else lock_info(row)
                token = None if row is None else row.token
            if info is None or token is None:
                continue  # deleted meanwhile: try again
            why = None if token == RELEASED else stale_reason(info, now)
            if token != RELEASED and why is None:
                raise LockHeld(
                    f"a promotion of {self.target!r} is in progress (held by {info.describe()})",
                    where=self.where,
                    hint="wait for it to finish; a holder that died is taken over once its process is gone "
                         "(same host) or its lease ran out without a heartbeat",
                )
            with self.store.session(write=True) as s:
                won = s.execute(
                    update(LockRow).where(LockRow.target == self.target, LockRow.token == token,
                                          LockRow.fence == info.fence)
                    .values(**self._values(now, info.fence + 1))
                ).rowcount == 1
            if won:
                self.fence = info.fence + 1
                if token != RELEASED:
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
        """Extend the lease (the heartbeat calls this; so may a long step)."""
        lease = self.lease_s if lease_s is None else lease_s
        now = self.store.db_now()
        with self.store.session(write=True) as s:
            ok = s.execute(
                update(LockRow).where(LockRow.target == self.target, LockRow.token == self.token,
                                      LockRow.fence == self.fence)
                .values(expires_at=now + timedelta(seconds=lease))
            ).rowcount == 1
        if not ok:
            raise LockLost(f"the promotion lock of {self.target!r} was lost (its lease expired"
                           " or another promoter took it over)", where=self.where)

    def check(self) -> None:
        """The fencing test before a write: this holding (token and fence) still owns the lock and its
        lease has not run out. `LockLost` (exit 1) otherwise, naming who holds it now."""
        if self.lost is not None:
            raise LockLost(f"the promotion lock of {self.target!r} (fence {self.fence}) was lost: {self.lost}; "
                           "stopped before writing", where=self.where)
        now = self.store.db_now()
        with self.store.session() as s:
            row = s.get(LockRow, self.target)
            info = None if row is None else lock_info(row)
            token = None if row is None else row.token
        if info is None or token != self.token or info.fence != self.fence:
            now_held = "nobody" if info is None or token == RELEASED else f"{info.describe()}, fence {info.fence}"
            raise LockLost(f"the promotion lock of {self.target!r} (fence {self.fence}) is no longer ours: held "
                           f"by {now_held}; stopped before writing", where=self.where)
        if info.expires_at <= now:
            raise LockLost(f"the lease of the promotion lock of {self.target!r} (fence {self.fence}) ran out at "
                           f"{info.expires_at.isoformat()}; stopped before writing", where=self.where)

    # -- heartbeat ---------------------------------------------------------------------------------
    def start_heartbeat(self, interval_s: float | None = None) -> None:
        """Renew the lease every `interval_s` (default: a third of the lease) until `release`."""
        if self._beat is not None:
            return
        every = interval_s if interval_s is not None else self.lease_s / HEARTBEAT_FRACTION

        def beat() -> None:
            while not self._stop.wait(every):
                try:
                    self.renew()
                except LlmgateError as exc:
                    self.lost = exc.message
                    return

        self._beat = threading.Thread(target=beat, name=f"llmgate-lock-{self.target}", daemon=True)
        self._beat.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None

    def release(self) -> bool:
        """Give the lock back; False when it was no longer ours (taken over after its lease expired). The
        row stays, its token emptied, so the fence keeps counting."""
        self.stop_heartbeat()
        now = self.store.db_now()
        with self.store.session(write=True) as s:
            return s.execute(
                update(LockRow).where(LockRow.target == self.target, LockRow.token == self.token)
                .values(token=RELEASED, expires_at=now)
            ).rowcount == 1

    def held_by_me(self) -> bool:
        with self.store.session() as s:
            token = s.scalar(select(LockRow.token).where(LockRow.target == self.target))
        return token == self.token


@contextmanager
def promotion_lock(store: Store, target: str, *, holder: str = "", lease_s: float = DEFAULT_LEASE_S,
                   heartbeat: bool = True) -> Iterator[PromotionLock]:
    lock = PromotionLock(store, target, holder=holder, lease_s=lease_s).acquire()
    if heartbeat:
        lock.start_heartbeat()
    try:
        yield lock
    finally:
        lock.release()
