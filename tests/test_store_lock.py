"""The promotion lock across processes and work dirs sharing one store, on SQLite and PostgreSQL:
one promoter at a time per target, the refused one told who holds it and since when; a lease renewed by
a heartbeat while its holder lives, a live holder on this host never taken over, an expired (no
heartbeat) or orphaned lease taken over with the name of its former holder; and a fencing token that
grows with every change of hands, so a superseded holder's `check()` refuses before it writes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.errors import ExitCode
from pipeline.store import LockHeld, PromotionLock, Store
from pipeline.store.lock import LockLost

REPO = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "5" * 64

# A promoter in its own work dir: takes the target's lock, records its promotion in the audit trail,
# and (with "hold") keeps the lock until told to go on. A refusal is recorded too, and ends the
# process the way the CLI does: the error's one-line render and its exit code.
PROMOTER = """
import sys
from pipeline.errors import LlmgateError
from pipeline.models import PromotionRecord
from pipeline.workspace import Workspace

workdir, who, mode = sys.argv[1], sys.argv[2], sys.argv[3]
store = Workspace(workdir).store
rec = lambda outcome, detail="": PromotionRecord(target="canary", digest=sys.argv[4], mode="gitops",
                                                 outcome=outcome, who=who, detail=detail)
sys.stdin.readline() if mode == "race" else None
try:
    with store.promotion_lock("canary", holder=who):
        store.record_promotion(rec("promoted"), None)
        print("promoted", flush=True)
        if mode in ("hold", "race"):
            sys.stdin.readline()
except LlmgateError as exc:
    store.record_promotion(rec("refused", exc.message), None)
    print(exc.render(), flush=True)
    sys.exit(int(exc.exit_code))
"""


def _promoter(store_url: str, workdir: Path, who: str, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LLMGATE_STORE_URL": store_url}
    env.pop("LLMGATE_STORE_URL_FILE", None)
    return subprocess.Popen([sys.executable, "-c", PROMOTER, str(workdir), who, mode, DIGEST], cwd=REPO, env=env,
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_promoters_in_two_work_dirs_one_promotes_the_other_is_refused(store_url: str, tmp_path: Path) -> None:
    a = _promoter(store_url, tmp_path / "wd-a", "promoter-a", "hold")
    try:
        assert a.stdout is not None and a.stdout.readline().strip() == "promoted"
        b = _promoter(store_url, tmp_path / "wd-b", "promoter-b", "once")
        out_b, err_b = b.communicate(timeout=120)
        assert b.returncode == ExitCode.GATE_FAILED, err_b
        assert "a promotion of 'canary' is in progress" in out_b
        assert f"held by promoter-a pid {a.pid} on {socket.gethostname()} since " in out_b
        assert "Traceback" not in err_b
    finally:
        assert a.stdin is not None
        a.stdin.write("done\n")
        a.stdin.flush()
        a.communicate(timeout=120)
    assert a.returncode == 0
    b2 = _promoter(store_url, tmp_path / "wd-b", "promoter-b", "once")  # the lock is free again
    assert b2.communicate(timeout=120)[0].strip() == "promoted"
    trail = Store(store_url).promotions("canary")
    assert [(r.who, r.outcome) for _, r in trail] == [("promoter-a", "promoted"), ("promoter-b", "refused"),
                                                      ("promoter-b", "promoted")]
    assert Store(store_url).lock_holder("canary") is None


def test_racing_promoters_exactly_one_wins(store_url: str, tmp_path: Path) -> None:
    Store(store_url)  # migrated up front: the race is for the lock, not for the schema
    procs = [_promoter(store_url, tmp_path / f"wd-{i}", f"racer-{i}", "race") for i in range(5)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    # The winner holds the lock until told; every other racer must be refused meanwhile.
    deadline = time.monotonic() + 120
    while sum(p.poll() is not None for p in procs) < len(procs) - 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    running = [p for p in procs if p.poll() is None]
    assert len(running) == 1, [p.communicate(timeout=5) for p in procs if p.poll() is not None]
    winner = procs.index(running[0])
    assert running[0].stdin is not None
    running[0].stdin.write("done\n")
    running[0].stdin.flush()
    outs = [p.communicate(timeout=120) for p in procs]
    assert outs[winner][0].strip() == "promoted" and procs[winner].returncode == 0
    for i, p in enumerate(procs):
        if i != winner:
            assert p.returncode == ExitCode.GATE_FAILED, outs[i]
            assert f"held by racer-{winner} pid {procs[winner].pid}" in outs[i][0]
    trail = [(r.who, r.outcome) for _, r in Store(store_url).promotions("canary")]
    assert [w for w, o in trail if o == "promoted"] == [f"racer-{winner}"]
    assert len([o for _, o in trail if o == "refused"]) == len(procs) - 1


def _elsewhere(store: Store, target: str, host: str = "build-7.example") -> None:
    """Make the row look like another machine's: its liveness is then its lease alone."""
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE promotion_locks SET host = :h WHERE target = :t"), {"h": host, "t": target})


def test_expired_lease_of_another_host_is_taken_over_and_names_its_holder(store_url: str) -> None:
    store = Store(store_url)
    old = PromotionLock(store, "canary", holder="stuck-runner", lease_s=0.3).acquire()
    _elsewhere(store, "canary")
    with pytest.raises(LockHeld, match="held by stuck-runner"):
        PromotionLock(store, "canary", holder="me").acquire()
    time.sleep(0.5)
    new = PromotionLock(store, "canary", holder="me").acquire()
    assert new.took_over is not None and new.took_over.holder == "stuck-runner"
    assert new.takeover_note is not None and "from stuck-runner pid" in new.takeover_note
    assert "lease expired" in new.takeover_note and "no heartbeat" in new.takeover_note
    assert new.fence == old.fence + 1
    assert new.held_by_me() and not old.held_by_me()
    assert old.release() is False  # a lock taken over is not released by its former holder
    with pytest.raises(LockLost, match="was lost"):
        old.renew()
    with pytest.raises(LockLost, match=f"fence {old.fence}.*no longer ours.*held by me"):
        old.check()  # the fencing test a backend makes before each write
    new.check()
    assert new.held_by_me() and store.lock_holder("canary").holder == "me"
    assert new.release() is True and store.lock_holder("canary") is None


def test_renewed_lease_is_not_taken_over(store_url: str) -> None:
    store = Store(store_url)
    lock = PromotionLock(store, "canary", holder="long-canary", lease_s=0.3).acquire()
    _elsewhere(store, "canary")
    lock.renew(600)
    time.sleep(0.5)
    with pytest.raises(LockHeld, match="held by long-canary"):
        PromotionLock(store, "canary").acquire()
    lock.release()


def test_heartbeat_keeps_the_lease_of_a_long_promotion_and_its_end_frees_it(store_url: str) -> None:
    store = Store(store_url)
    lock = PromotionLock(store, "canary", holder="long-canary", lease_s=0.6).acquire()
    _elsewhere(store, "canary")  # only the lease speaks for it now
    lock.start_heartbeat(0.15)
    time.sleep(1.5)  # more than two leases
    with pytest.raises(LockHeld, match="held by long-canary"):
        PromotionLock(store, "canary", holder="other").acquire()
    lock.check()
    lock.stop_heartbeat()  # the promoter hangs: no more renewals
    time.sleep(0.8)
    with pytest.raises(LockLost, match="ran out"):
        lock.check()  # its next write is refused even before anyone takes over
    taker = PromotionLock(store, "canary", holder="other").acquire()
    assert taker.took_over is not None and taker.fence == lock.fence + 1
    taker.release()


def test_the_store_lock_renews_itself_while_held(store_url: str) -> None:
    store = Store(store_url)
    with store.promotion_lock("canary", holder="ctx", lease_s=0.6) as lock:
        _elsewhere(store, "canary")
        time.sleep(1.5)
        lock.check()
        with pytest.raises(LockHeld, match="held by ctx"):
            PromotionLock(store, "canary").acquire()
    assert store.lock_holder("canary") is None


def test_fence_grows_with_every_change_of_hands(store_url: str) -> None:
    store = Store(store_url)
    fences = []
    for _ in range(3):
        with store.promotion_lock("canary", holder="me", heartbeat=False) as lock:
            fences.append(lock.fence)
    assert fences == [1, 2, 3]
    other = PromotionLock(store, "production").acquire()
    assert other.fence == 1  # per lock key
    other.release()


HOLD_NO_HEARTBEAT = """
import sys
from pipeline.store import PromotionLock, Store
PromotionLock(Store(sys.argv[1]), "canary", holder="alive-but-quiet", lease_s=0.2).acquire()
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_live_holder_on_this_host_is_never_taken_over(store_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_NO_HEARTBEAT, store_url], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        time.sleep(0.5)  # its lease expired, but its process lives here
        with pytest.raises(LockHeld, match=f"held by alive-but-quiet pid {proc.pid}"):
            PromotionLock(Store(store_url), "canary").acquire()
    finally:
        proc.kill()
        proc.wait()


HOLD_AND_DIE = """
import sys
from pipeline.store import Store
held = Store(sys.argv[1]).promotion_lock("canary", holder="doomed")
held.__enter__()  # and never leaves: the process is killed holding it
print("held", flush=True)
sys.stdin.readline()
"""


def test_lock_of_a_dead_process_on_this_host_is_taken_over(store_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_AND_DIE, store_url], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    store = Store(store_url)
    with pytest.raises(LockHeld, match=f"held by doomed pid {proc.pid}"):
        PromotionLock(store, "canary").acquire()
    with store.promotion_lock("production", holder="me"):  # other targets are independent
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with store.promotion_lock("canary", holder="me") as lock:
        assert lock.took_over is not None and lock.took_over.pid == proc.pid
        assert f"holder process {proc.pid}" in (lock.takeover_reason or "")

