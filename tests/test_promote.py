"""Promotion safety: refusal (decision, the real supply-chain guard), audit trail, lock, rollback, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig, SignConfig
from pipeline.models import Decision, ImageRef
from pipeline.promote import audit
from pipeline.promote.lock import LockHeld, LockRow, PromotionLock, promotion_lock
from pipeline.stages.promote import GitopsTarget, promote_stage, rollback_stage
from pipeline.workspace import Workspace
from tests.doubles import fake_cosign
from tests.promote_helpers import REPOSITORY, digest, git, gitops_repo, make_run, snapshot

KFILE = "manifests/overlays/canary/kustomization.yaml"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A workspace, a GitOps repo, a config whose public key exists, and the cosign double on PATH."""
    bin_dir = tmp_path / "bin"
    fake_cosign.install(bin_dir, bad_digests=[digest("unsigned")])
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LLMGATE_ACTOR", "ci-bot")
    pub = tmp_path / "cosign.pub"
    pub.write_text("-----BEGIN PUBLIC KEY-----\nnot a real key; the cosign double ignores it\n-----END PUBLIC KEY-----\n")
    cfg = PipelineConfig(sign=SignConfig(public_key=str(pub)))
    return Workspace(tmp_path / ".llmgate"), gitops_repo(tmp_path), cfg, bin_dir


def promote(ws: Workspace, repo: Path, cfg: PipelineConfig, run, **kw):  # type: ignore[no-untyped-def]
    ws.checkpoint(run)
    res = promote_stage(run, cfg, ws, target="canary", gitops=GitopsTarget(repo), **kw)
    run.add_stage(res)
    ws.checkpoint(run)
    return res.details


# -- refusals ---------------------------------------------------------------------------------------
def test_guard_passes_a_scanned_signed_digest(env) -> None:  # type: ignore[no-untyped-def]
    ws, repo, cfg, bin_dir = env
    d = promote(ws, repo, cfg, make_run("a"))
    assert d["outcome"] == "promoted" and d["guard"]["verify_reason"] == "signature verified"
    (verify,) = fake_cosign.calls(bin_dir)
    assert verify[0] == "verify" and verify[-1] == f"{REPOSITORY}@{digest('a')}"
    msg = git(repo, "log", "-1", "--format=%B", d["commit"])
    assert "Scan: ok critical=0 high=0 medium=2" in msg and "Signature: ok verified=1" in msg
    assert "pass    ttft_p99: bench.ttft_p99_s = 0.21 (max 0.5)" in msg


@pytest.mark.parametrize(
    ("run_kw", "seed", "reason"),
    [
        ({"decision": Decision.BLOCKED}, "a", "decision is blocked, not pass"),
        ({"tag": "v1"}, "by-tag", "refusing to promote an image given by tag"),
        ({"passing_scan": False}, "a", "no passing scan recorded"),
        ({}, "unsigned", "signature does not verify"),
    ],
    ids=["decision", "tag", "scan", "signature"],
)
def test_refusals_change_nothing_and_are_audited(env, run_kw, seed, reason) -> None:  # type: ignore[no-untyped-def]
    ws, repo, cfg, _ = env
    run = make_run(seed, **run_kw)
    if seed == "by-tag":
        run.image = ImageRef(repository=REPOSITORY, tag="v1")
    before = snapshot(repo)
    d = promote(ws, repo, cfg, run)
    assert d["outcome"] == "refused" and reason in d["reason"]
    assert snapshot(repo) == before
    (rid, rec), = ws.store.promotions("canary")
    assert (rid, rec.outcome, rec.who, rec.mode) == (run.run_id, "refused", "ci-bot", "gitops")
    assert ws.store.get(run.run_id).stage("promote").status.value == "failed"  # type: ignore[union-attr]


def test_refused_retry_does_not_hide_an_earlier_promotion(env) -> None:  # type: ignore[no-untyped-def]
    ws, repo, cfg, _ = env
    run = make_run("a")
    assert promote(ws, repo, cfg, run)["outcome"] == "promoted"
    with promotion_lock(ws.store, "canary", holder="other"):
        assert promote(ws, repo, cfg, run)["outcome"] == "refused"
    assert ws.store.get(run.run_id).promotion.outcome == "promoted"  # type: ignore[union-attr]
    assert [r.outcome for _, r in ws.store.promotions("canary")] == ["promoted", "refused"]


def test_identical_rerun_is_a_noop_and_audited_as_such(env) -> None:  # type: ignore[no-untyped-def]
    ws, repo, cfg, _ = env
    run = make_run("a")
    first = promote(ws, repo, cfg, run)
    refs = git(repo, "for-each-ref")
    second = promote(ws, repo, cfg, run)
    assert (first["outcome"], second["outcome"]) == ("promoted", "noop") and second["commit"] == first["commit"]
    assert git(repo, "for-each-ref") == refs
    assert [r.outcome for _, r in ws.store.promotions("canary")] == ["promoted", "noop"]


# -- rollback ---------------------------------------------------------------------------------------
def test_rollback_returns_to_the_previous_promoted_digest(env) -> None:  # type: ignore[no-untyped-def]
    ws, repo, cfg, _ = env
    a, b = make_run("a"), make_run("b")
    da = promote(ws, repo, cfg, a)
    git(repo, "merge", "-q", "--ff-only", da["branch"])  # scratch repo: the promotion PR is merged
    db = promote(ws, repo, cfg, b)
    git(repo, "merge", "-q", "--ff-only", db["branch"])
    assert audit.current_and_previous(ws.store, "canary")[0][1].digest == digest("b")  # type: ignore[index]
    before = snapshot(repo)
    dry = rollback_stage(cfg, ws, target="canary", gitops=GitopsTarget(repo), dry_run=True).details
    assert dry["outcome"] == "dry-run" and f"-  digest: {digest('b')}\n+  digest: {digest('a')}" in dry["diff"]
    assert snapshot(repo) == before
    res = rollback_stage(cfg, ws, target="canary", gitops=GitopsTarget(repo)).details
    assert res["outcome"] == "promoted" and res["rollback_of"] == digest("b")
    assert res["branch"].startswith("llmgate/rollback/canary/")
    assert f"digest: {digest('a')}" in git(repo, "show", f"{res['commit']}:{KFILE}")
    hist = ws.store.promotions("canary")
    assert [(r.digest, r.outcome) for _, r in hist][-1] == (digest("a"), "promoted")
    assert hist[-1][0] == a.run_id and hist[-1][1].detail.startswith(f"rollback of {digest('b')}")


def test_rollback_without_history_is_bad_input(env) -> None:  # type: ignore[no-untyped-def]
    from pipeline.errors import BadInput

    ws, repo, cfg, _ = env
    with pytest.raises(BadInput, match="no earlier promoted digest"):
        rollback_stage(cfg, ws, target="canary", gitops=GitopsTarget(repo))


# -- lock -------------------------------------------------------------------------------------------
HOLD = """
import sys, time
from pipeline.store import Store
from pipeline.promote.lock import PromotionLock
lock = PromotionLock(Store(sys.argv[1]), "canary", holder="other-process")
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
lock.release() if sys.argv[3] == "release" else None
"""


def test_lock_excludes_another_process_then_frees(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".llmgate")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, ws.store_url, "30", "release"], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"held by other-process pid {proc.pid}"):
            PromotionLock(ws.store, "canary").acquire()
        with promotion_lock(ws.store, "production"):  # other targets are independent
            pass
    finally:
        proc.kill()
        proc.wait()
    # The holder died without releasing: its lock is stale (same host, pid gone) and is taken over.
    lock = PromotionLock(ws.store, "canary", holder="me")
    lock.acquire()
    assert lock.held_by_me()
    lock.release()
    assert not lock.held_by_me()


def test_expired_lease_is_taken_over_and_live_one_is_not(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".llmgate")
    old = PromotionLock(ws.store, "canary", holder="remote", lease_s=3600)
    old.acquire()
    with ws.store.session() as s:  # pretend it was taken on another machine two hours ago
        row = s.get(LockRow, "canary")
        row.host, row.acquired_at = "other-host", datetime.now(UTC) - timedelta(hours=2)
        row.expires_at = datetime.now(UTC) - timedelta(hours=1)
    new = PromotionLock(ws.store, "canary", holder="me")
    new.acquire()
    assert new.held_by_me() and not old.held_by_me()
    old.release()  # releasing a lock someone else now holds does nothing
    assert new.held_by_me()
    with pytest.raises(LockHeld):
        PromotionLock(ws.store, "canary").acquire()
    new.release()


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_promote_dry_run_refusal_and_exit_codes(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ws, repo, cfg, _ = env
    (tmp_path / "llmgate.yaml").write_text(f"sign:\n  public_key: {cfg.sign.public_key}\n")
    good, blocked = make_run("a"), make_run("b", decision=Decision.BLOCKED)
    ws.checkpoint(good)
    ws.checkpoint(blocked)
    base = [sys.executable, "-m", "pipeline", "--workdir", str(ws.root), "promote", "--target", "canary", "--gitops-repo", str(repo),
            "--config", str(tmp_path / "llmgate.yaml")]
    before = snapshot(repo)
    dry = subprocess.run([*base, "--run", good.run_id, "--dry-run"], capture_output=True, text=True, check=False)
    assert dry.returncode == 0, dry.stderr
    assert f"+  digest: {digest('a')}" in dry.stdout and "dry-run" in dry.stdout
    assert snapshot(repo) == before and ws.store.promotions("canary") == []
    refused = subprocess.run([*base, "--run", blocked.run_id], capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "decision is blocked" in refused.stdout
    ok = subprocess.run([*base, "--run", good.run_id], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ws.store.get(good.run_id).promotion.outcome == "promoted"  # type: ignore[union-attr]
    both = subprocess.run([*base[:-4], "--kubeconfig", "x", "--gitops-repo", str(repo)], capture_output=True, text=True, check=False)
    assert both.returncode == 2
