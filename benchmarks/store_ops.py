"""What the store costs a command: opening (migrating a new store, opening one at head), saving runs,
and the queries listings and the dashboard make, on SQLite and (when LLMGATE_TEST_POSTGRES_URL names
one, e.g. from scripts/throwaway-postgres.sh) on PostgreSQL.

    python benchmarks/store_ops.py [--runs 300] [--gates 30]

Each PostgreSQL measurement runs in its own schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.models import Decision, GateStatus, GateVerdict, ImageRef, RunRecord, StageResult, StageStatus
from pipeline.store import Store


def _runs(n: int, gates: int) -> list[RunRecord]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        at = start + timedelta(minutes=i)
        run = RunRecord(image=ImageRef(repository="127.0.0.1:5000/llmgate/server", tag=f"v{i % 50}",
                                       digest="sha256:" + f"{i:064x}"), created_at=at, updated_at=at,
                        decision=Decision.PASS if i % 3 else Decision.BLOCKED)
        for stage in ("build", "leak", "scan", "sign", "boot", "bench", "eval"):
            res = StageResult(stage=stage, status=StageStatus.OK, started_at=at, metrics={"m": float(i)},
                              input_key=hashlib.sha256(f"{stage}{i % 10}".encode()).hexdigest())
            res.finished_at, res.duration_s = at + timedelta(seconds=5), 5.0
            run.stages[stage] = res
        run.gates = [GateVerdict(name=f"gate_{g}", source=f"eval.m{g}", status=GateStatus.PASS, value=float(g),
                                 threshold=1.0) for g in range(gates)]
        out.append(run)
    return out


def _timed(what: str, fn: Callable[[], Any], *, per: int | None = None) -> Any:
    t0 = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t0
    extra = f"  ({dt / per * 1000:.2f} ms each)" if per else ""
    print(f"  {what:<44} {dt * 1000:9.1f} ms{extra}")
    return result


@contextmanager
def _postgres_schema(base_url: str) -> Iterator[str]:
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(base_url).set(drivername="postgresql")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    conninfo = base.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _lock_cycle(store: Store) -> None:
    with store.promotion_lock("bench", holder="benchmark"):
        pass


def bench(url: str, runs: list[RunRecord]) -> None:
    store = _timed("open a new store (migrate to head)", lambda: Store(url))
    store.close()
    store = _timed("open a store at head", lambda: Store(url))
    _timed(f"save {len(runs)} runs", lambda: [store.save(r) for r in runs], per=len(runs))
    _timed("history() of every run, with verdicts", store.history)
    _timed("runs(limit=20)", lambda: store.runs(limit=20))
    _timed("runs(tag=...)", lambda: store.runs(tag="v7"))
    _timed("reusable(stage, key)", lambda: store.reusable("eval", hashlib.sha256(b"eval3").hexdigest()))
    _timed("promotion_lock: take and give back", lambda: _lock_cycle(store))
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--gates", type=int, default=30)
    args = ap.parse_args()
    runs = _runs(args.runs, args.gates)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"SQLite ({args.runs} runs x {args.gates} gates x 7 stages)")
        bench(str(Path(tmp) / "results.db"), runs)
    pg = os.environ.get("LLMGATE_TEST_POSTGRES_URL")
    if pg:
        with _postgres_schema(pg) as url:
            print(f"PostgreSQL ({args.runs} runs x {args.gates} gates x 7 stages)")
            bench(url, runs)
    else:
        print("PostgreSQL: skipped (set LLMGATE_TEST_POSTGRES_URL, e.g. from scripts/throwaway-postgres.sh)")


if __name__ == "__main__":
    main()
