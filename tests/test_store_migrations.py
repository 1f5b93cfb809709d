"""Schema migrations: a store made before migrations existed upgrades in place with every record
intact; new stores on SQLite and PostgreSQL end at the same schema as `pipeline.store.schema`;
runners opening one store at once migrate it once.

tests/data/store-pre-alembic.db was written by the store as it was before Alembic (its `Store.save`,
`Store.record_promotion` and the promotion lock of that time), with three runs (passed and promoted,
blocked, pending without a digest), three promotion audit rows and the lock table. The records and
audit rows as they were saved are in tests/data/store-pre-alembic.json.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.errors import BadInput
from pipeline.models import PromotionRecord, RunRecord
from pipeline.store import Store
from pipeline.store.migrate import HEAD, REVISIONS, alembic_config

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "results.db"
    shutil.copyfile(DATA / "store-pre-alembic.db", path)
    return path


def _raw(path: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_revisions_listed_in_code_are_the_scripts() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    walked = [s.revision for s in reversed(list(scripts.walk_revisions()))]
    assert tuple(walked) == REVISIONS and scripts.get_current_head() == HEAD


def test_pre_alembic_store_upgrades_in_place_with_every_record_intact(old_store: Path) -> None:
    expected = json.loads((DATA / "store-pre-alembic.json").read_text())
    tables = {r[0] for r in _raw(old_store, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "alembic_version" not in tables and "promotion_locks" in tables  # really the old layout
    raw_before = _raw(old_store, "SELECT run_id, record_json FROM runs ORDER BY run_id")
    gates_sql = "SELECT run_id, name, status, value, threshold, baseline FROM gate_verdicts ORDER BY id"
    gates_before = _raw(old_store, gates_sql)

    store = Store(str(old_store))
    assert store.migrated
    assert _raw(old_store, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    # the source of truth is untouched, byte for byte, and reads back as the records that were saved
    assert _raw(old_store, "SELECT run_id, record_json FROM runs ORDER BY run_id") == raw_before
    assert _raw(old_store, gates_sql) == gates_before
    for rec in expected["runs"]:
        assert store.get(rec["run_id"]) == RunRecord.model_validate(rec)
    assert [r.run_id for r in store.runs()] == ["pc0000000003", "pb0000000002", "pa0000000001"]
    # the old store handed audit times back naive (SQLite drops the offset); they were UTC, and now say so
    assert [(rid, p) for rid, p in store.promotions()] == [
        (rid, PromotionRecord.model_validate({**p, "at": p["at"] + "+00:00"})) for rid, p in expected["promotions"]]
    # the new columns and stage rows were filled from the records
    hist = {h.run_id: h for h in store.history()}
    assert hist["pb0000000002"].decision_reason == "ttft_p99 failed"
    assert hist["pa0000000001"].ground_truth_sha256 == "e" * 64 and hist["pa0000000001"].model_digest is None
    assert hist["pc0000000003"].decision == "pending" and hist["pc0000000003"].ground_truth_sha256 is None
    assert [len(hist[r].gates) for r in ("pa0000000001", "pb0000000002", "pc0000000003")] == [3, 3, 0]
    stages = _raw(old_store, "SELECT stage, status, duration_s FROM stage_runs WHERE run_id = 'pb0000000002' "
                             "ORDER BY stage")
    assert stages == [("bench", "failed", 60.0), ("build", "ok", 41.5), ("eval", "ok", 18.25), ("scan", "ok", 23.75)]
    st = store.target_status("prod")
    assert (st.digest, st.run_id, st.who) == ("sha256:" + "a1" * 32, "pa0000000001", "ci@example")
    # and the upgraded store works as a new one does
    with store.promotion_lock("prod", holder="after-upgrade"):
        assert store.lock_holder("prod").holder == "after-upgrade"
    run = store.get("pa0000000001")
    run.run_id, run.labels = "pd0000000004", {"after": "upgrade"}
    store.save(run)
    assert store.get("pd0000000004").labels == {"after": "upgrade"}
    assert not Store(str(old_store)).migrated  # the second open finds it at head


def test_pre_alembic_store_that_never_took_a_lock_upgrades(old_store: Path) -> None:
    with sqlite3.connect(old_store) as conn:  # the lock table was created on first use only
        conn.execute("DROP TABLE promotion_locks")
    store = Store(str(old_store))
    with store.promotion_lock("prod", holder="first"):
        assert store.lock_holder("prod").holder == "first"
    assert len(store.runs()) == 3


def test_migrated_schema_is_the_declared_schema(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from pipeline.store import Base

    store = Store(store_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_fills_new_columns_on_postgres_too(store_url: str) -> None:
    """A store at revision 0001 holding a record is upgraded by opening it, on either database."""
    from alembic import command
    from sqlalchemy import create_engine

    from pipeline.store.location import location_of

    engine = create_engine(location_of(store_url).url)
    rec = json.loads((DATA / "store-pre-alembic.json").read_text())["runs"][1]
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(text("INSERT INTO runs (run_id, repository, tag, digest, target, created_at, updated_at, "
                          "decision, promoted, ground_truth_version, record_json) VALUES (:id, 'r', 'v2', NULL, "
                          "'prod', :at, :at, 'blocked', :f, '2025-01', :j)"),
                     {"id": rec["run_id"], "at": "2025-03-05 10:00:00", "f": False, "j": json.dumps(rec)})
    engine.dispose()
    store = Store(store_url)
    assert store.migrated
    (h,) = store.history()
    assert (h.decision_reason, h.ground_truth_sha256) == ("ttft_p99 failed", "e" * 64)
    assert store.get(rec["run_id"]) == RunRecord.model_validate(rec)


def test_store_newer_than_the_code_is_refused(store_url: str) -> None:
    store = Store(store_url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    store.close()
    with pytest.raises(BadInput, match="revision '9999', newer than this llmgate knows"):
        Store(store_url)


OPEN = """
import sys
from pipeline.store import Store
sys.stdin.readline()  # start together
print("migrated" if Store(sys.argv[1]).migrated else "at head", flush=True)
"""


def test_runners_opening_a_new_store_at_once_migrate_it_once(store_url: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, store_url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for _ in range(4)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert sorted(out.strip() for out, _ in outs) == ["at head", "at head", "at head", "migrated"]
    store = Store(store_url)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
