"""The dashboard index (heatmap) for 1,000 tags x 30 gates: time to render the page in Python, and time
to first render in real headless Chromium. Target: first render in Chromium under 2 s.

Timed: (a) the index from records in memory, (b) from the store (SQLite, the denormalised
runs/gate_verdicts tables), (c) the compare page and loading every record, for context, and
(d) the written index.html opened in Chromium (Debian's `chromium`): first contentful paint and the
load event, read from the page's own Paint and Navigation Timing entries over the DevTools protocol,
each a fresh tab, `--repeat` times. Synthetic runs come from tests.sample_data (a fixture
generator).

    python benchmarks/render_report.py [--tags 1000] [--gates 30] [--repeat 3] [--chromium PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from websockets.sync.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.report.site import heads_from_store, render_compare, render_index
from pipeline.report.views import heads_from_runs
from pipeline.stages.registry import CATALOGUE  # noqa: F401  (installs the metric catalogue the reports read)
from pipeline.store import Store
from tests.sample_data import GATES, make_run

TARGET_S = 2.0
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--window-size=1400,900"]
TIMING_JS = """JSON.stringify((() => {
  const paint = Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]));
  const nav = performance.getEntriesByType('navigation')[0] || {};
  return {fcp: paint['first-contentful-paint'] ?? null, fp: paint['first-paint'] ?? null,
          dcl: nav.domContentLoadedEventEnd ?? null, load: nav.loadEventEnd ?? null,
          rows: document.querySelectorAll('#heatmap tbody tr').length};
})())"""


class DevTools:
    """The few DevTools-protocol calls the measurement needs, over one page target's websocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._id = 0

    def call(self, method: str, **params: object) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def wait_event(self, name: str, timeout_s: float = 120) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            msg = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            if msg.get("method") == name:
                return
        raise TimeoutError(name)


def start_chromium(binary: str, profile: Path) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"  # Chromium writes the port it chose here
    for _ in range(300):
        if port_file.is_file() and port_file.read_text().strip():
            return proc, int(port_file.read_text().split()[0])
        if proc.poll() is not None:
            raise SystemExit(f"chromium exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("chromium did not open its DevTools port")


def first_render(binary: str, url: str, repeat: int) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="llmgate-bench-chromium-") as profile:
        proc, port = start_chromium(binary, Path(profile))
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(repeat):
                target = httpx.put(f"{base}/json/new?about:blank", timeout=30).json()
                with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
                    tab = DevTools(ws)
                    tab.call("Page.enable")
                    tab.call("Page.navigate", url=url)
                    tab.wait_event("Page.loadEventFired")
                    timing: dict = {}
                    for _ in range(50):  # the paint entry can land just after the load event
                        timing = json.loads(tab.call("Runtime.evaluate", expression=TIMING_JS,
                                                     returnByValue=True)["result"]["value"])
                        if timing["fcp"] is not None and timing["load"]:
                            break
                        time.sleep(0.1)
                    results.append(timing)
                httpx.get(f"{base}/json/close/{target['id']}", timeout=30)
        finally:
            proc.terminate()
            proc.wait(30)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--gates", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                    help="Chromium binary (default: chromium on PATH)")
    args = ap.parse_args()
    gates = GATES[: args.gates]

    t0 = time.perf_counter()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    runs = [
        make_run(f"v{i // 100}.{i % 100}.0", seed=i, gates=gates, created_at=start + timedelta(hours=i),
                 n_requests=60, n_items=20, quality=0.5 if i % 9 == 0 else 1.0, latency=2.5 if i % 13 == 0 else 1.0)
        for i in range(args.tags)
    ]
    print(f"generated {len(runs)} runs x {len(gates)} gates in {time.perf_counter() - t0:.1f}s")

    def timed(label: str, fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
        times, out = [], None
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        size = f"  ({len(out) / 1e6:.1f} MB)" if isinstance(out, str) else f"  ({len(out)} records)"  # type: ignore[arg-type]
        print(f"{label:<52} best {min(times):.3f}s  median {statistics.median(times):.3f}s{size}")
        return min(times), out

    timed("python: index from records in memory", lambda: render_index(heads_from_runs(runs)))
    with tempfile.TemporaryDirectory(prefix="llmgate-bench-render-") as d:
        store = Store(str(Path(d) / "results.db"))
        t = time.perf_counter()
        for r in runs:
            store.save(r)
        print(f"stored {len(runs)} runs in {time.perf_counter() - t:.1f}s")
        _, html = timed("python: index from the store (query + render)", lambda: render_index(heads_from_store(store)))
        timed("python: compare page from records in memory", lambda: render_compare(runs))
        timed("python: load all records from the store (run pages)", lambda: store.runs())
        index = Path(d) / "index.html"
        index.write_text(str(html))
        if not args.chromium:
            print("chromium not found: first render in a browser not measured (give --chromium PATH)")
            raise SystemExit(2)
        results = first_render(args.chromium, index.as_uri(), args.repeat)
    fcp = [r["fcp"] / 1000 for r in results]
    load = [r["load"] / 1000 for r in results]
    rows = {r["rows"] for r in results}
    print(f"{'chromium: first contentful paint of index.html':<52} best {min(fcp):.3f}s  median "
          f"{statistics.median(fcp):.3f}s  ({rows.pop() if len(rows) == 1 else rows} heatmap rows)")
    print(f"{'chromium: load event of index.html':<52} best {min(load):.3f}s  median {statistics.median(load):.3f}s")
    ok = statistics.median(fcp) < TARGET_S
    print(f"target first render < {TARGET_S:g} s for {args.tags} tags x {args.gates} gates in Chromium: "
          f"{'met' if ok else 'MISSED'} (median {statistics.median(fcp):.3f}s)")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
