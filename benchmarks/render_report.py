"""Render the dashboard index (heatmap) for 1,000 tags x 30 gates; target: under 2 s on the reference machine.

Timed separately: (a) from records in memory, (b) from the store (SQLite, the denormalised
runs/gate_verdicts tables), (c) the whole site without run pages from the store, for context.
Synthetic runs come from pipeline.report.sample_data (a fixture generator).

    python benchmarks/render_report.py [--tags 1000] [--gates 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.report.sample_data import GATES, make_run
from pipeline.report.site import heads_from_store, render_compare, render_index
from pipeline.report.views import heads_from_runs
from pipeline.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--gates", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    gates = GATES[: args.gates]
    from datetime import UTC, datetime, timedelta

    t0 = time.perf_counter()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    runs = [
        make_run(f"v{i // 100}.{i % 100}.0", seed=i, gates=gates, created_at=start + timedelta(hours=i),
                 n_requests=60, n_items=20, quality=0.5 if i % 9 == 0 else 1.0, latency=2.5 if i % 13 == 0 else 1.0)
        for i in range(args.tags)
    ]
    print(f"generated {len(runs)} runs x {len(gates)} gates in {time.perf_counter() - t0:.1f}s")

    def timed(label: str, fn) -> float:  # type: ignore[no-untyped-def]
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        print(f"{label:<48} best {min(times):.3f}s  median {statistics.median(times):.3f}s  ({len(out) / 1e6:.1f} MB)")
        return min(times)

    mem = timed("index from records in memory", lambda: render_index(heads_from_runs(runs)))
    with tempfile.TemporaryDirectory() as d:
        store = Store(str(Path(d) / "results.db"))
        t = time.perf_counter()
        for r in runs:
            store.save(r)
        print(f"stored {len(runs)} runs in {time.perf_counter() - t:.1f}s")
        st = timed("index from the store (query + render)", lambda: render_index(heads_from_store(store)))
        timed("compare page from records in memory", lambda: render_compare(runs))
        timed("load all records from the store (for run pages)", lambda: store.runs())
    ok = max(mem, st) < 2.0
    print(f"target < 2 s for {args.tags} tags x {args.gates} gates: {'met' if ok else 'MISSED'}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
