"""The dashboard as a person sees it: the generated pages opened in real headless Chromium (Debian's).

Reads the DOM after scripts ran (--dump-dom) and saves screenshots under $LLMGATE_ARTIFACTS
(default: artifacts/report-screenshots/, ignored by git). Skips when Chromium is absent, except in CI
(LLMGATE_REQUIRE_BROWSER=1), where a missing browser fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from pipeline.report.sample_data import make_history
from pipeline.report.site import write_site_from_store
from pipeline.report.views import failing_gates
from pipeline.store import Store

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        if os.environ.get("LLMGATE_REQUIRE_BROWSER") == "1":
            pytest.fail("required in CI: chromium (apt-get install chromium)")
        pytest.skip("chromium not installed")
    return binary


@pytest.fixture(scope="module")
def artifacts() -> Path:
    d = Path(os.environ.get("LLMGATE_ARTIFACTS", REPO / "artifacts")) / "report-screenshots"
    d.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {d}")
    return d


def _browse(binary: str, url: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory(prefix="llmgate-chromium-") as profile:
        proc = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def dump_dom(binary: str, url: str) -> str:
    return _browse(binary, url, "--dump-dom", "--virtual-time-budget=3000")


def screenshot(binary: str, url: str, out: Path, size: str = "1400,1000") -> Path:
    _browse(binary, url, f"--screenshot={out}", f"--window-size={size}")
    assert out.is_file() and out.stat().st_size > 10_000, out  # a blank page compresses to a few kB
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("site")
    runs, promos = make_history(10)
    store = Store(str(d / "results.db"))
    for r in runs:
        store.save(r)
    for run_id, rec in promos:
        store.record_promotion(rec, run_id)
    write_site_from_store(store, d / "site")
    return d / "site", runs


def test_heatmap_in_chromium_shows_every_run_with_right_cells(chromium, site, artifacts) -> None:  # type: ignore[no-untyped-def]
    root, runs = site
    dom = dump_dom(chromium, (root / "index.html").as_uri())
    gates = re.findall(r'<th class="gh" data-gate="([^"]+)"', dom)
    rows = {m.group(1): re.findall(r'<td class="c (\w+)"', m.group(2))
            for m in re.finditer(r'<tr data-tag="([^"]+)"[^>]*>(.*?)</tr>', dom, re.DOTALL)}
    assert set(rows) == {r.image.tag for r in runs}
    for r in runs:
        by_name = {g.name: g.status.value for g in r.gates}
        assert rows[r.image.tag] == [by_name.get(g, "absent") for g in gates], r.image.tag
    assert sum(c == "fail" for cells in rows.values() for c in cells) == sum(
        g.status.value == "fail" for r in runs for g in r.gates)
    screenshot(chromium, (root / "index.html").as_uri(), artifacts / "index.png", "1400,800")


def test_run_page_in_chromium_lists_failing_gates(chromium, site, artifacts) -> None:  # type: ignore[no-untyped-def]
    root, runs = site
    blocked = next(r for r in runs if r.image.tag == "v1.0.3")
    url = (root / "runs" / blocked.run_id / "report.html").as_uri()
    dom = dump_dom(chromium, url)
    box = re.search(r'<div class="callout" id="failing">(.*?)</div>', dom, re.DOTALL)
    assert box, "no failing-gates box"
    listed = re.findall(r"<li><strong>([^<]+)</strong>", box.group(1))
    assert listed and set(listed) == {g.name for g in failing_gates(blocked)}
    table = dict(re.findall(r'<tr class="[^"]*" data-gate="([^"]+)" data-status="(\w+)"', dom))
    assert table == {g.name: g.status.value for g in blocked.gates}
    assert dom.count("<svg") >= 5
    screenshot(chromium, url, artifacts / "run-blocked.png", "1300,6200")
    passed = next(r for r in runs if r.decision.value == "pass")
    screenshot(chromium, (root / "runs" / passed.run_id / "report.html").as_uri(), artifacts / "run-pass.png",
               "1300,1400")


def test_compare_and_promotions_in_chromium(chromium, site, artifacts) -> None:  # type: ignore[no-untyped-def]
    root, runs = site
    a, b = runs[3], runs[2]
    url = (root / "compare.html").as_uri() + f"?a={a.image.tag}&b={b.image.tag}"
    dom = dump_dom(chromium, url)
    # the inline script re-rendered the table for the pair in the URL
    row = re.search(r'<tr data-metric="eval.correctness_mean">(.*?)</tr>', dom, re.DOTALL).group(1)
    cells = re.findall(r'<td class="num ?(\w*)">([^<]*)</td>', row)
    assert cells[0][1] == f"{b.metric('eval.correctness_mean'):.4g}" and cells[1][1] == f"{a.metric('eval.correctness_mean'):.4g}"
    assert cells[2][0] == "worse"  # quality dropped from B to A
    screenshot(chromium, url, artifacts / "compare.png", "1300,1300")
    dom = dump_dom(chromium, (root / "promotions.html").as_uri())
    assert dom.count('data-outcome="promoted"') == sum(r.decision.value == "pass" for r in runs)
    screenshot(chromium, (root / "promotions.html").as_uri(), artifacts / "promotions.png", "1300,900")
