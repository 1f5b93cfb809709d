"""The store: records survive round trips, queries answer per tag and per target, secrets never land."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipeline.errors import BadInput
from pipeline.models import (
    Decision,
    GateStatus,
    GateVerdict,
    ImageRef,
    ItemResult,
    PromotionRecord,
    RunRecord,
    StageResult,
    StageStatus,
)
from pipeline.redact import register_secret
from pipeline.store import Store
from pipeline.workspace import Workspace

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def _run(tag: str, digest: str, target: str = "prod", decision: Decision = Decision.PASS) -> RunRecord:
    run = RunRecord(image=ImageRef(repository="127.0.0.1:5000/llmgate/server", tag=tag, digest=digest), target=target)
    run.add_stage(
        StageResult(
            stage="eval",
            status=StageStatus.OK,
            metrics={"correctness_mean": 0.8},
            items=[ItemResult(item_id="q1", question="What is TTFT?", response="time to first token", scores={"correctness": 0.9})],
        )
    )
    run.gates.append(GateVerdict(name="correctness", source="eval.correctness_mean", status=GateStatus.PASS, value=0.8, threshold=0.6))
    run.decision = decision
    return run


def test_round_trip_keeps_every_field(tmp_path):
    store = Store(str(tmp_path / "r.db"))
    run = _run("v1", D1)
    store.save(run)
    back = store.get(run.run_id)
    assert back == run
    assert store.get(run.run_id[:6]).run_id == run.run_id  # unique prefix


def test_sqlite_uses_wal(tmp_path):
    store = Store(str(tmp_path / "r.db"))
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_runs_per_tag_and_last_promoted(tmp_path):
    store = Store(str(tmp_path / "r.db"))
    old, new, other = _run("v1", D1), _run("v2", D2), _run("v2", D2, target="staging")
    new.created_at = old.created_at + timedelta(seconds=5)
    for r in (old, new, other):
        store.save(r)
    assert {r.run_id for r in store.runs(tag="v2")} == {new.run_id, other.run_id}
    assert store.last_promoted("prod") is None  # passing is not promoted

    old.promotion = PromotionRecord(target="prod", digest=D1, mode="gitops", outcome="promoted")
    old.updated_at = old.created_at + timedelta(seconds=1)
    store.save(old)
    assert store.last_promoted("prod").run_id == old.run_id
    new.promotion = PromotionRecord(target="prod", digest=D2, mode="gitops", outcome="refused")
    store.save(new)
    assert store.last_promoted("prod").run_id == old.run_id  # a refused promotion never counts
    assert store.last_promoted("staging") is None


def test_unknown_run_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no run"):
        Store(str(tmp_path / "r.db")).get("nope")


def test_bad_store_url_names_the_option():
    with pytest.raises(BadInput) as exc:
        Store("nosuchdialect://x")
    assert exc.value.where == "--store"


def test_registered_secret_never_reaches_store_or_run_json(tmp_path):
    secret = "tok-3f9a8b7c6d5e4f"
    register_secret(secret)
    run = _run("v1", D1)
    run.stages["eval"].items[0].response = f"here is the token {secret} and AKIAABCDEFGHIJKLMNOP"
    ws = Workspace(tmp_path / ".llmgate")
    path = ws.checkpoint(run)
    raw = (tmp_path / ".llmgate" / "results.db").read_bytes() + path.read_bytes()
    assert secret.encode() not in raw
    assert b"AKIAABCDEFGHIJKLMNOP" not in raw
    assert b"[REDACTED]" in path.read_bytes()


def test_checkpoint_after_each_stage_survives_a_crash(tmp_path):
    ws = Workspace(tmp_path / ".llmgate")
    run = _run("v1", D1)
    ws.checkpoint(run)
    run.add_stage(StageResult(stage="bench", status=StageStatus.OK, metrics={"ttft_p99_s": 0.2}))
    ws.checkpoint(run)
    # a new process (new Store object) sees both stages
    again = Workspace(tmp_path / ".llmgate").load_run(run.run_id)
    assert set(again.stages) == {"eval", "bench"}
    assert Workspace(tmp_path / ".llmgate").load_run(None).run_id == run.run_id
