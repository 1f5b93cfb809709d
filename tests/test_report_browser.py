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
from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.report.site import write_site_from_store
from pipeline.report.units import fmt_value, unit_of
from pipeline.report.views import failing_gates, significance
from pipeline.store import Store
from tests.sample_data import make_history, make_run

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
    # a re-run of v1.0.3 that reused the content-addressed stages and ran without trivy's vulnerability DB
    rerun = make_run("v1.0.3", seed=31, created_at=runs[-1].created_at + timedelta(days=1),
                     reused_from=runs[3].run_id, vuln_not_run="vulnerability DB not downloaded (offline)")
    store = Store(str(d / "results.db"))
    for r in [*runs, rerun]:
        store.save(r)
    for run_id, rec in promos:
        store.record_promotion(rec, run_id)
    write_site_from_store(store, d / "site")
    return d / "site", [*runs, rerun]


def test_heatmap_in_chromium_shows_every_run_with_right_cells(chromium, site, artifacts) -> None:  # type: ignore[no-untyped-def]
    root, runs = site
    latest = {r.image.tag: r for r in sorted(runs, key=lambda r: r.created_at)}
    dom = dump_dom(chromium, (root / "index.html").as_uri())
    gates = re.findall(r'<th class="gh" data-gate="([^"]+)"', dom)
    html_rows = {m.group(1): m.group(0) for m in re.finditer(r'<tr data-tag="([^"]+)".*?</tr>', dom, re.DOTALL)}
    rows = {tag: re.findall(r'<td class="c (\w+)"', row) for tag, row in html_rows.items()}
    assert set(rows) == set(latest)
    for tag, r in latest.items():
        by_name = {g.name: g.status.value for g in r.gates}
        assert rows[tag] == [by_name.get(g, "absent") for g in gates], tag
        # release identity and the tag's decisions over time
        assert r.image.digest[7:19] in html_rows[tag] and r.model.digest[7:19] in html_rows[tag]  # type: ignore[index,union-attr]
        assert html_rows[tag].count('<a class="hs ') == sum(x.image.tag == tag for x in runs)
    assert sum(c == "fail" for cells in rows.values() for c in cells) == sum(
        g.status.value == "fail" for r in latest.values() for g in r.gates)
    serving = [r for r in runs if r.promotion and r.promotion.outcome == "promoted"][-1]
    assert re.findall(r'<tr data-tag="([^"]+)"[^>]*data-promoted="current"', dom) == [serving.image.tag]
    screenshot(chromium, (root / "index.html").as_uri(), artifacts / "index.png", "1500,800")


def test_tag_history_page_in_chromium(chromium, site, artifacts) -> None:  # type: ignore[no-untyped-def]
    root, runs = site
    page = next((root / "tags").glob("v1.0.3-*.html"))
    dom = dump_dom(chromium, page.as_uri())
    tag_runs = sorted((r for r in runs if r.image.tag == "v1.0.3"), key=lambda r: r.created_at, reverse=True)
    assert re.findall(r'<tr data-run="(\w+)" data-decision="(\w+)">', dom) == [
        (r.run_id, r.decision.value) for r in tag_runs]
    assert dom.count('class="dec-') == len(tag_runs) and dom.count("<svg") >= 2
    screenshot(chromium, page.as_uri(), artifacts / "tag-history.png", "1300,900")


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


def test_rerun_page_in_chromium_shows_reuse_real_durations_and_the_partial_scan(chromium, site, artifacts) -> None:  # type: ignore[no-untyped-def]
    root, runs = site
    rerun = runs[-1]
    url = (root / "runs" / rerun.run_id / "report.html").as_uri()
    dom = dump_dom(chromium, url)
    rows = {m.group(1): m.group(0) for m in re.finditer(r'<tr data-stage="(\w+)".*?</tr>', dom, re.DOTALL)}
    assert 'data-status="not_run"' in rows["scan"] and "partial: vuln not run" in rows["scan"]
    for name in ("leak", "scan", "sign", "eval"):
        assert f"run {runs[3].run_id}</a>" in rows[name], name
    for name in ("build", "boot", "bench"):
        assert fmt_value(rerun.stages[name].duration_s, "s") in rows[name], name
    assert 'id="scan-not-run"' in dom
    screenshot(chromium, url, artifacts / "run-reused-partial-scan.png", "1300,6400")


def test_compare_and_promotions_in_chromium(chromium, site, artifacts) -> None:  # type: ignore[no-untyped-def]
    root, runs = site
    a = next(r for r in runs if r.image.tag == "v1.0.5")  # the slow server, gated against its baseline
    b = next(r for r in runs if r.run_id == a.baseline_run_id)
    url = (root / "compare.html").as_uri() + f"?a={a.image.tag}&b={b.image.tag}"
    dom = dump_dom(chromium, url)
    # the inline script re-rendered the table for the pair in the URL: values in their unit, and each
    # difference coloured exactly when the gate engine's test said it is real
    rows = {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r'<tr data-metric="([^"]+)" data-sig="(\w*)">(.*?)</tr>', dom, re.DOTALL)}
    source = "eval.correctness_mean"
    cells = re.findall(r'<td class="num ?(\w*)">([^<]*)</td>', rows[source][1])
    assert cells[0][1] == fmt_value(b.metric(source), unit_of(source))
    assert cells[1][1] == fmt_value(a.metric(source), unit_of(source))
    tested = [g for g in a.gates if g.difference is not None]
    assert tested and any(significance(g) for g in tested) and any(not significance(g) for g in tested)
    for g in tested:
        assert rows[g.source][0] == significance(g), g.name
    assert "A was gated against B" in dom
    screenshot(chromium, url, artifacts / "compare.png", "1300,1300")
    other = next(r for r in runs if r.image.tag == "v1.0.0")
    dom = dump_dom(chromium, (root / "compare.html").as_uri() + f"?a={a.image.tag}&b={other.image.tag}")
    assert set(re.findall(r'data-sig="(\w*)"', dom)) == {""} and "no test, differences uncoloured" in dom
    dom = dump_dom(chromium, (root / "promotions.html").as_uri())
    promoted = [r for r in runs if r.promotion and r.promotion.outcome == "promoted"]
    assert dom.count('data-outcome="promoted"') == len(promoted)
    assert f"serves <span class=\"mono\">{promoted[-1].image.digest[7:19]}</span>" in dom  # type: ignore[index]
    screenshot(chromium, (root / "promotions.html").as_uri(), artifacts / "promotions.png", "1300,900")
