"""The store, on SQLite and on PostgreSQL alike (`store_url`): records survive round trips, the
queries listings, history, baselines, reuse and status rely on answer from the denormalised rows,
and secrets never land."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipeline.errors import BadInput
from pipeline.models import (
    Decision,
    GateStatus,
    GateVerdict,
    GroundTruthRef,
    ImageRef,
    ItemResult,
    ModelRef,
    PolicyRef,
    PromotionRecord,
    RunRecord,
    StageResult,
    StageStatus,
)
from pipeline.redact import register_secret
from pipeline.store import Store
from pipeline.workspace import Workspace
from tests.stage_helpers import record_verdicts

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
M1 = "sha256:" + "a" * 64
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _run(tag: str, digest: str, target: str = "prod", decision: Decision = Decision.PASS,
         at: datetime | None = None) -> RunRecord:
    at = at or datetime.now(UTC)
    run = RunRecord(image=ImageRef(repository="127.0.0.1:5000/llmgate/server", tag=tag, digest=digest), target=target,
                    created_at=at, updated_at=at)
    run.add_stage(
        StageResult(
            stage="eval",
            status=StageStatus.OK,
            started_at=at,
            metrics={"correctness_mean": 0.8},
            items=[ItemResult(item_id="q1", question="What is TTFT?", response="time to first token", scores={"correctness": 0.9})],
        )
    )
    run.decision = decision
    if decision is not Decision.PENDING:  # a pending run has not been gated
        record_verdicts(run, [GateVerdict(name="correctness", source="eval.correctness_mean", status=GateStatus.PASS,
                                          value=0.8, threshold=0.6)])
    run.updated_at = at
    return run


def _stage(name: str, at: datetime, *, key: str | None, status: StageStatus = StageStatus.OK,
           reused_from: str | None = None, value: float = 1.0) -> StageResult:
    res = StageResult(stage=name, status=status, started_at=at, metrics={"m": value}, input_key=key,
                      reused_from=reused_from)
    res.finished_at, res.duration_s = at + timedelta(seconds=3), 3.0
    return res


def test_round_trip_keeps_every_field(store_url):
    store = Store(store_url)
    run = _run("v1", D1)
    run.model = ModelRef(path="/models/good", digest=M1, files=3, bytes=1024)
    run.policy = PolicyRef(name="gates.yaml", files=["gates.yaml"], sha256="b" * 64)
    run.ground_truth = GroundTruthRef(version="2025-01", sha256="c" * 64, n_items=2)
    store.save(run)
    back = store.get(run.run_id)
    assert back == run
    assert store.get(run.run_id[:6]).run_id == run.run_id  # unique prefix
    (summary,) = store.history()
    assert (summary.model_digest, summary.policy_name, summary.policy_sha256, summary.ground_truth_sha256) == (
        M1, "gates.yaml", "b" * 64, "c" * 64)


def test_sqlite_uses_wal(tmp_path):
    store = Store(str(tmp_path / "r.db"))
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_runs_of_a_tag_and_last_promoted(store_url):
    store = Store(store_url)
    old, new = _run("v1", D1, at=T0), _run("v2", D2, at=T0 + timedelta(seconds=5))
    other = _run("v2", D2, target="staging")
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


def test_runs_filter_by_decision_since_and_limit_newest_first(store_url):
    store = Store(store_url)
    runs = [_run(f"v{i}", D1, decision=Decision.PASS if i % 2 else Decision.BLOCKED, at=T0 + timedelta(hours=i))
            for i in range(5)]
    for r in reversed(runs):  # insertion order must not matter
        store.save(r)
    assert [r.run_id for r in store.runs()] == [r.run_id for r in reversed(runs)]
    assert [r.run_id for r in store.runs(decision="blocked")] == [runs[4].run_id, runs[2].run_id, runs[0].run_id]
    assert [r.run_id for r in store.runs(decision=Decision.PASS, limit=1)] == [runs[3].run_id]
    since = (T0 + timedelta(hours=3)).astimezone(timezone(timedelta(hours=2)))  # another offset, same instant
    assert [r.run_id for r in store.runs(since=since)] == [runs[4].run_id, runs[3].run_id]
    assert store.runs(target="staging") == []
    with pytest.raises(BadInput, match="no such decision 'maybe'"):
        store.runs(decision="maybe")


def test_history_is_oldest_first_with_verdicts(store_url):
    store = Store(store_url)
    a, b = _run("v1", D1, at=T0 + timedelta(days=1)), _run("v1", D2, decision=Decision.BLOCKED, at=T0)
    record_verdicts(b, [*b.gates, GateVerdict(name="ttft_p99", source="bench.ttft_p99_s", status=GateStatus.FAIL,
                                              value=0.9, threshold=0.5)])
    b.decision_reason = "ttft_p99 failed " + "x" * 2000  # stored short; the record keeps all of it
    c = _run("v2", D2, target="staging", at=T0 + timedelta(days=2))
    for r in (a, b, c):
        store.save(r)
    hist = store.history(tag="v1")
    assert [h.run_id for h in hist] == [b.run_id, a.run_id]
    assert [(g.name, g.status, g.value) for g in hist[0].gates] == [("correctness", "pass", 0.8),
                                                                     ("ttft_p99", "fail", 0.9)]
    assert hist[0].decision == "blocked" and hist[0].decision_reason.startswith("ttft_p99 failed")
    assert len(hist[0].decision_reason) == 512 and store.get(b.run_id).decision_reason == b.decision_reason
    assert hist[0].created_at == T0 and hist[0].created_at.tzinfo is not None
    assert [h.run_id for h in store.history(target="staging")] == [c.run_id]
    assert [h.run_id for h in store.history()] == [b.run_id, a.run_id, c.run_id]
    assert [g.name for g in store.history(target="staging")[0].gates] == ["correctness"]


def test_reusable_returns_the_newest_ok_result_and_its_origin(store_url):
    store = Store(store_url)
    key, other_key = "k" * 64, "o" * 64
    first, second, failed, reuser = (_run(f"v{i}", D1, at=T0 + timedelta(hours=i)) for i in range(4))
    first.add_stage(_stage("leak", T0, key=key, value=1.0))
    second.add_stage(_stage("leak", T0 + timedelta(hours=1), key=key, value=2.0))
    failed.add_stage(_stage("leak", T0 + timedelta(hours=2), key=key, status=StageStatus.FAILED, value=3.0))
    for r in (first, second, failed):
        store.save(r)
    origin, res = store.reusable("leak", key)
    assert origin == second.run_id and res.metrics == {"m": 2.0}  # newest ok; the failed one never counts
    assert store.reusable("leak", other_key) is None
    assert store.reusable("scan", key) is None
    # A run that reused second's result: the next reuse still names the run that measured it.
    reuser.add_stage(_stage("leak", T0 + timedelta(hours=3), key=key, reused_from=second.run_id, value=2.0))
    store.save(reuser)
    assert store.reusable("leak", key)[0] == second.run_id


def test_save_replaces_stage_rows_of_a_run(store_url):
    store = Store(store_url)
    run = _run("v1", D1, at=T0)
    run.add_stage(_stage("leak", T0, key="a" * 64))
    store.save(run)
    run.add_stage(_stage("leak", T0 + timedelta(minutes=1), key="b" * 64))  # re-run of the stage, new inputs
    store.save(run)
    assert store.reusable("leak", "a" * 64) is None
    assert store.reusable("leak", "b" * 64)[0] == run.run_id


def test_runs_for_digest_pending_and_passing(store_url):
    store = Store(store_url)
    old, new, other = _run("v1", D1, at=T0), _run("v1b", D1, decision=Decision.BLOCKED), _run("v2", D2)
    new.updated_at = T0 + timedelta(days=1)
    pending = _run("v3", D2, decision=Decision.PENDING, at=T0 - timedelta(days=1))
    pending2 = _run("v4", D2, decision=Decision.PENDING, at=T0)
    for r in (old, new, other, pending2, pending):
        store.save(r)
    assert [r.run_id for r in store.runs_for_digest(D1)] == [new.run_id, old.run_id]
    assert [r.run_id for r in store.passing_runs_for_digest(D1)] == [old.run_id]
    assert [r.run_id for r in store.pending_runs()] == [pending.run_id, pending2.run_id]
    pending.decision, pending.interrupted_stage = Decision.INTERRUPTED, "bench"
    store.save(pending)
    assert [r.run_id for r in store.pending_runs()] == [pending2.run_id]
    assert {h.run_id: h.interrupted_stage for h in store.history()}[pending.run_id] == "bench"


def test_target_status_names_digest_since_run_and_previous(store_url):
    store = Store(store_url)
    assert store.target_status("prod") is None
    a, b = _run("v1", D1, at=T0), _run("v2", D2, at=T0 + timedelta(days=1))
    for r in (a, b):
        store.save(r)

    def promo(run, outcome, minutes, mode="gitops"):  # type: ignore[no-untyped-def]
        store.record_promotion(PromotionRecord(target="prod", digest=run.image.digest, mode=mode, outcome=outcome,
                                               who=f"ci-{minutes}", at=T0 + timedelta(minutes=minutes)), run.run_id)

    promo(a, "refused", 1)
    st = store.target_status("prod")
    assert st.digest is None and st.last_attempt.outcome == "refused" and st.last_attempt_run_id == a.run_id
    promo(a, "promoted", 2)
    promo(b, "promoted", 3)
    promo(b, "promoted", 4)  # promoted again: still there since minute 3
    promo(a, "refused", 5)
    st = store.target_status("prod")
    assert (st.digest, st.run_id, st.tag, st.since, st.who, st.mode) == (
        D2, b.run_id, "v2", T0 + timedelta(minutes=3), "ci-3", "gitops")
    assert st.previous_digest == D1
    assert (st.last_attempt.outcome, st.last_attempt_run_id) == ("refused", a.run_id)
    assert st.lock is None
    with store.promotion_lock("prod", holder="release-bot"):
        assert store.target_status("prod").lock.holder == "release-bot"
    assert store.target_status("staging") is None


def test_change_stamp_moves_with_saves_and_promotions(store_url):
    store = Store(store_url)
    s0 = store.change_stamp()
    run = _run("v1", D1, at=T0)
    store.save(run)
    s1 = store.change_stamp()
    run.updated_at = T0 + timedelta(seconds=1)
    store.save(run)
    s2 = store.change_stamp()
    store.record_promotion(PromotionRecord(target="prod", digest=D1, mode="gitops", outcome="refused"), run.run_id)
    assert len({s0, s1, s2, store.change_stamp()}) == 4


def test_unknown_and_ambiguous_run_ids_are_bad_input(store_url):
    store = Store(store_url)
    with pytest.raises(BadInput, match="no run"):
        store.get("nope")
    for rid in ("ab_1", "ab_2", "abX1"):
        r = _run("v1", D1)
        r.run_id = rid
        store.save(r)
    with pytest.raises(BadInput, match="more than one run"):
        store.get("ab")
    assert store.get("ab_1").run_id == "ab_1"
    with pytest.raises(BadInput, match="no run"):
        store.get("ab%")  # LIKE wildcards in a prefix are plain characters


def test_registered_secret_never_reaches_store_or_run_json(tmp_path):
    secret = "tok-3f9a8b7c6d5e4f"
    register_secret(secret)
    run = _run("v1", D1)
    run.stages["eval"].items[0].response = f"here is the token {secret} and AKIAABCDEFGHIJKLMNOP"
    run.decision_reason = f"failed with {secret}"
    ws = Workspace(tmp_path / ".llmgate")
    path = ws.checkpoint(run)
    raw = (tmp_path / ".llmgate" / "results.db").read_bytes() + path.read_bytes()
    assert secret.encode() not in raw
    assert b"AKIAABCDEFGHIJKLMNOP" not in raw
    assert b"[REDACTED]" in path.read_bytes()
    assert ws.store.history()[0].decision_reason == "failed with [REDACTED]"


def test_registered_secret_never_reaches_a_postgres_store(store_url):
    secret = "tok-9e8d7c6b5a4f3e"
    register_secret(secret)
    store = Store(store_url)
    run = _run("v1", D1)
    run.stages["eval"].items[0].response = f"the token is {secret}"
    run.decision_reason = f"failed with {secret}"
    store.save(run)
    store.record_promotion(PromotionRecord(target="prod", digest=D1, mode="gitops", outcome="failed",
                                           detail=f"push said {secret}"), run.run_id)
    with store.session() as s:  # every text column of every table, as the database holds it
        from pipeline.store import Base

        dumped = "".join(str(row) for table in Base.metadata.sorted_tables for row in s.execute(table.select()))
    assert secret not in dumped and "[REDACTED]" in dumped


def test_checkpoint_after_each_stage_survives_a_crash(tmp_path):
    ws = Workspace(tmp_path / ".llmgate")
    run = _run("v1", D1)
    ws.checkpoint(run)
    run.add_stage(StageResult(stage="bench", status=StageStatus.OK, metrics={"ttft_p99_s": 0.2}))
    ws.checkpoint(run)
    # a new process (new Store object) sees both stages
    again = Workspace(tmp_path / ".llmgate").load_run(run.run_id)
    assert set(again.stages) == {"eval", "gate", "bench"}
    assert Workspace(tmp_path / ".llmgate").load_run(None).run_id == run.run_id


def test_workspace_opens_the_store_named_by_the_environment(store_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMGATE_STORE_URL", store_url)
    run = _run("v1", D1)
    Workspace(tmp_path / "a").checkpoint(run)
    other = Workspace(tmp_path / "b")  # another work dir, the same store
    assert other.load_run(None).run_id == run.run_id
    assert not (tmp_path / "b" / "results.db").exists()
    if "@" in store_url:
        assert store_url.split(":")[2].split("@")[0] not in other.store_url  # the password is hidden


def test_dashboard_index_from_the_store_equals_the_index_from_records(store_url):
    from pipeline.report.site import heads_from_store
    from pipeline.report.views import build_heatmap, heads_from_runs

    store = Store(store_url)
    runs = [_run("v1", D1, at=T0), _run("v1", D2, decision=Decision.BLOCKED, at=T0 + timedelta(hours=1)),
            _run("v2", D2, at=T0 + timedelta(hours=2)), _run("v3", D1, at=T0 + timedelta(hours=3))]
    record_verdicts(runs[1], [*runs[1].gates, GateVerdict(name="ttft_p99", source="bench.ttft_p99_s",
                                                          status=GateStatus.FAIL, value=0.9, threshold=0.5,
                                                          baseline=0.4)])
    for r in runs:
        store.save(r)
    a, b = build_heatmap(heads_from_runs(runs)), build_heatmap(heads_from_store(store))
    assert [(r.tag, r.run_id, r.statuses, str(r.cells)) for r in a.rows] == [
        (r.tag, r.run_id, r.statuses, str(r.cells)) for r in b.rows]
    assert a.totals == b.totals and a.totals["fail"] == 1


WRITER = """
import sys
from datetime import UTC, datetime
from pipeline.models import Decision, ImageRef, PromotionRecord, RunRecord
from pipeline.store import Store

store, who = Store(sys.argv[1]), sys.argv[2]
sys.stdin.readline()  # start together
for i in range(15):
    run = RunRecord(run_id=f"{who}-{i}", image=ImageRef(repository="r", tag=who), decision=Decision.PASS)
    store.save(run)
    run.labels = {"saved": "twice"}
    store.save(run)  # an update: read the row, then write it
    store.record_promotion(PromotionRecord(target=who, digest="sha256:" + "0" * 64, mode="dry-run",
                                           outcome="noop"), run.run_id)
    store.history(tag=who)
print("done", flush=True)
"""


def test_runners_writing_one_store_at_once_all_land(store_url):
    import subprocess
    import sys
    from pathlib import Path

    Store(store_url)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, store_url, f"w{i}"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1]) for i in range(3)]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    store = Store(store_url)
    assert len(store.runs()) == 45 and all(r.labels == {"saved": "twice"} for r in store.runs())
    assert len(store.promotions()) == 45


def test_gate_baseline_is_chosen_from_the_store(store_url):
    """The gate engine's baseline query (last promoted run of the target, on the same ground truth)
    against a real store: the most recently promoted run on this ground truth, not a newer one on another."""
    from pipeline.gates.baseline import BaselineKind, find_baseline

    store = Store(store_url)
    gt1 = GroundTruthRef(version="v1", sha256="1" * 64, n_items=1)
    gt2 = GroundTruthRef(version="v2", sha256="2" * 64, n_items=1)
    old, older = _run("a", D1, at=T0), _run("b", D1, at=T0 - timedelta(days=1))
    newer = _run("c", D2, at=T0 + timedelta(days=1))
    for run, gt, minutes in ((old, gt1, 10), (older, gt1, 5), (newer, gt2, 20)):
        run.ground_truth = gt
        run.promotion = PromotionRecord(target="prod", digest=run.image.digest, mode="gitops", outcome="promoted",
                                        at=T0 + timedelta(minutes=minutes))
        run.updated_at = T0 + timedelta(minutes=minutes)
        store.save(run)
    blocked = _run("d", D2, at=T0 + timedelta(days=2))
    blocked.ground_truth = gt1
    blocked.promotion = PromotionRecord(target="prod", digest=D2, mode="gitops", outcome="refused")
    store.save(blocked)

    candidate = _run("e", D2, decision=Decision.PENDING, at=T0 + timedelta(days=3))
    candidate.ground_truth = gt1
    base = find_baseline(candidate, store, rescore=None)
    assert (base.kind, base.run_id) == (BaselineKind.SAME, old.run_id)
    candidate.ground_truth = GroundTruthRef(version="v1", sha256="f" * 64, n_items=1)  # edited in place
    base = find_baseline(candidate, store, rescore=None)
    assert base.kind is BaselineKind.INCOMPARABLE and not base.items_comparable
    elsewhere = candidate.model_copy(update={"target": "staging"})
    assert find_baseline(elsewhere, store, rescore=None).kind is BaselineKind.NONE


def test_regating_an_older_promoted_run_never_makes_it_the_baseline(store_url):
    """#26 C: the target serves the run promoted last. Saving an older promoted run again (as `gate --run`
    does, which moves its updated_at) must not make it the baseline of new runs; the audit trail's
    promotion time decides, and a rollback (a newer promotion of the older run) does make it the baseline."""
    store = Store(store_url)
    gt = GroundTruthRef(version="v1", sha256="1" * 64, n_items=1)
    first, second = _run("a", D1, at=T0), _run("b", D2, at=T0 + timedelta(days=1))
    for run, day in ((first, 1), (second, 2)):
        run.ground_truth = gt
        run.promotion = PromotionRecord(target="prod", digest=run.image.digest, mode="gitops", outcome="promoted",
                                        at=T0 + timedelta(days=day))
        store.save(run)
        store.record_promotion(run.promotion, run.run_id)
    assert store.last_promoted("prod").run_id == second.run_id
    first.updated_at = T0 + timedelta(days=30)  # re-gated long after
    store.save(first)
    assert store.last_promoted("prod").run_id == second.run_id
    assert store.last_promoted("prod", ground_truth_version="v1").run_id == second.run_id
    store.record_promotion(PromotionRecord(target="prod", digest=D1, mode="gitops", outcome="promoted",
                                           at=T0 + timedelta(days=3)), first.run_id)  # rollback to it
    assert store.last_promoted("prod").run_id == first.run_id


def test_a_run_gated_as_a_first_release_stays_one_when_gated_again(store_url):
    """#26 C: `gate --run <an older promoted run>` compares it with nothing newer: it was its target's first
    release when it was gated, so it stays one (and keeps its decision), however many releases came after."""
    from pipeline.gates.baseline import BaselineKind, find_baseline
    from pipeline.schemas.gate import BaselineInfo, GateDetails

    store = Store(store_url)
    gt = GroundTruthRef(version="v1", sha256="1" * 64, n_items=1)
    first, later = _run("a", D1, at=T0), _run("b", D2, at=T0 + timedelta(days=1))
    first.ground_truth = later.ground_truth = gt
    first.add_stage(StageResult(stage="gate", status=StageStatus.OK, details=GateDetails(
        policy_name="gates.yaml", policy_files=["gates.yaml"], policy_sha256="a" * 64, decision="pass", reason="",
        baseline=BaselineInfo(kind=BaselineKind.NONE.value, reason="first release"))))
    for run, day in ((first, 1), (later, 2)):
        run.promotion = PromotionRecord(target="prod", digest=run.image.digest, mode="gitops", outcome="promoted",
                                        at=T0 + timedelta(days=day))
        store.save(run)
    regated = find_baseline(store.get(first.run_id), store, rescore=None)
    assert regated.kind is BaselineKind.NONE and regated.run is None
    fresh = _run("c", D2, decision=Decision.PENDING, at=T0 + timedelta(days=3))
    fresh.ground_truth = gt
    assert find_baseline(fresh, store, rescore=None).run_id == later.run_id


def test_a_record_stored_with_two_copies_of_its_verdicts_loads_and_is_saved_with_one(tmp_path):
    """Records written before schema 3 hold `gates` beside the gate payload: they load unchanged in meaning,
    and the next save keeps only the gate payload's copy."""
    import json
    import sqlite3

    ws = Workspace(tmp_path / ".llmgate")
    run = _run("v1", D1, decision=Decision.BLOCKED)
    ws.checkpoint(run)
    db = tmp_path / ".llmgate" / "results.db"
    with sqlite3.connect(db) as c:
        doc = json.loads(c.execute("SELECT record_json FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()[0])
        assert "gates" not in doc
        doc |= {"schema_version": 2, "gates": doc["stages"]["gate"]["details"]["verdicts"]}
        c.execute("UPDATE runs SET record_json = ? WHERE run_id = ?", (json.dumps(doc), run.run_id))
    old = Workspace(tmp_path / ".llmgate").load_run(run.run_id)
    assert [(g.name, g.status) for g in old.gates] == [("correctness", GateStatus.PASS)]
    ws.checkpoint(old)
    with sqlite3.connect(db) as c:
        doc = json.loads(c.execute("SELECT record_json FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()[0])
    assert "gates" not in doc and doc["schema_version"] == 3
    assert [g["name"] for g in doc["stages"]["gate"]["details"]["verdicts"]] == ["correctness"]
