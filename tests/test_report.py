"""Reports: static site, run page, report.json, markdown summary, Prometheus export, redaction.

Runs come from tests.sample_data (a synthetic fixture generator) and go through the real
store; scan findings also come from a real trivy report (shared fixtures) parsed by the real parser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import BadInput, InfraError
from pipeline.models import GateStatus, RunRecord, StageResult, StageStatus
from pipeline.redact import MASK, register_secret
from pipeline.report import markdown, prometheus
from pipeline.report.run_page import write_run_report
from pipeline.report.site import heads_from_store, render_index, write_site, write_site_from_store
from pipeline.report.units import fmt_value
from pipeline.report.views import build_heatmap, failing_gates, heads_from_runs, scan_findings, worst_items
from pipeline.store import Store
from tests.sample_data import make_history, make_run
from tests.stage_helpers import record_verdicts

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
REGISTERED = "pl4nted-registry-passw0rd-7731"


@pytest.fixture()
def history() -> tuple[list[RunRecord], list]:
    return make_history(8)


@pytest.fixture()
def store(tmp_path: Path, history) -> Store:  # type: ignore[no-untyped-def]
    runs, promos = history
    st = Store(str(tmp_path / "results.db"))
    for r in runs:
        st.save(r)
    for run_id, rec in promos:
        st.record_promotion(rec, run_id)
    return st


def _cells(html: str) -> dict[str, list[str]]:
    """tag -> cell statuses, read back from the rendered heatmap."""
    out = {}
    for m in re.finditer(r'<tr data-tag="([^"]+)"[^>]*>(.*?)</tr>', html, re.DOTALL):
        out[m.group(1)] = re.findall(r'<td class="c (\w+)"', m.group(2))
    return out


def test_heatmap_cells_match_the_verdicts(history) -> None:  # type: ignore[no-untyped-def]
    runs, _ = history
    html = render_index(heads_from_runs(runs))
    gates = re.findall(r'<th class="gh" data-gate="([^"]+)"', html)
    assert gates == [g.name for g in runs[0].gates]
    cells = _cells(html)
    assert set(cells) == {r.image.tag for r in runs}
    for r in runs:
        assert cells[r.image.tag] == [g.status.value for g in r.gates], r.image.tag
    # the planted regressions are visible as failing cells
    assert "fail" in cells["v1.0.3"] and "fail" in cells["v1.0.4"]
    assert cells["v1.0.6"][[g.name for g in runs[6].gates].index("signature")] == "not_run"
    # newest tag first, value on hover
    assert next(iter(cells)) == "v1.0.7"
    # value, threshold and baseline in the metric's unit (a score is a ratio: shown in %)
    assert re.search(r'title="v1\.0\.3 · correctness: fail · value \d+\.\d% · threshold 70\.0% · baseline \d+\.\d%"', html)


def test_index_from_store_equals_index_from_records(history, store) -> None:  # type: ignore[no-untyped-def]
    runs, _ = history
    a = build_heatmap(heads_from_runs(runs))
    b = build_heatmap(heads_from_store(store))
    assert [(r.tag, r.statuses, str(r.cells)) for r in a.rows] == [(r.tag, r.statuses, str(r.cells)) for r in b.rows]
    assert a.totals == b.totals and a.totals["fail"] > 0


def test_heatmap_uses_latest_run_per_tag() -> None:
    old = make_run("v2", seed=1, quality=0.3)
    new = make_run("v2", seed=2, created_at=old.created_at.replace(day=5))
    assert old.decision.value == "blocked" and new.decision.value == "pass"
    hm = build_heatmap(heads_from_runs([new, old]))
    assert len(hm.rows) == 1 and hm.rows[0].run_id == new.run_id and "fail" not in hm.rows[0].statuses


def test_site_pages_are_self_contained(tmp_path: Path, store: Store, history) -> None:  # type: ignore[no-untyped-def]
    runs, _ = history
    res = write_site_from_store(store, tmp_path / "site")
    assert res.run_pages == len(runs)
    pages = list((tmp_path / "site").rglob("*.html"))
    assert len(pages) == 3 + len(runs) + res.tag_pages and res.tag_pages == len({r.image.tag for r in runs})
    for page in pages:
        text = page.read_text()
        # nothing fetched from anywhere: no external src/href, no @import
        assert not re.search(r'(?:src|href)="(?:https?:)?//', text), page
        assert "@import" not in text and "<link" not in text, page
    blocked = next(r for r in runs if r.image.tag == "v1.0.3")
    page = (tmp_path / "site" / "runs" / blocked.run_id / "report.html").read_text()
    assert "<svg" in page and "TTFT ECDF" in page and "TPOT distribution" in page
    assert "Load-time milestones" in page and "Mean score per dimension" in page
    for g in failing_gates(blocked):
        assert f"<strong>{g.name}</strong>" in page
    # the worst item, with question, response and reference
    worst = worst_items(blocked.stages["eval"].items, 1)[0]
    assert f'data-item="{worst.item_id}"' in page and "It depends on many factors." in page
    promos = (tmp_path / "site" / "promotions.html").read_text()
    assert promos.count('data-outcome="promoted"') == sum(r.decision.value == "pass" for r in runs)
    assert 'data-outcome="refused"' in promos and "<svg" in promos
    # report.json is the record, loadable again
    again = RunRecord.model_validate_json((tmp_path / "site" / "runs" / blocked.run_id / "report.json").read_text())
    assert again.gates == blocked.gates


def test_compare_page_embeds_every_tag_and_renders_the_default_pair(history) -> None:  # type: ignore[no-untyped-def]
    runs, _ = history
    from pipeline.report.site import render_compare

    html = render_compare(runs)
    data = json.loads(re.search(r'<script type="application/json" id="cmpdata">(.*?)</script>', html, re.DOTALL).group(1))
    assert {t["tag"] for t in data["tags"]} == {r.image.tag for r in runs}
    names = [m["name"] for m in data["metrics"]]
    newest = max(runs, key=lambda r: r.created_at)
    tag = next(t for t in data["tags"] if t["tag"] == newest.image.tag)
    assert tag["values"][names.index("eval.correctness_mean")] == pytest.approx(newest.metric("eval.correctness_mean"))
    assert 'data-metric="eval.correctness_mean"' in html  # the server-side default pair


def test_scan_findings_from_a_real_trivy_report(fixtures_dir: Path, tmp_path: Path) -> None:
    from pipeline.schemas import ScanDetails
    from pipeline.schemas.scan import ScanPolicy
    from pipeline.supplychain.scan_policy import evaluate
    from pipeline.supplychain.trivy_report import load_report

    report = load_report(fixtures_dir / "trivy" / "debian-buster.json")
    run = make_run("v9")
    run.stages["scan"].details = ScanDetails(target="debian:buster", scanners=["vuln"], report=report,
                                             verdict=evaluate(report, ScanPolicy()))
    found = scan_findings(run.details_as(ScanDetails))
    assert [f.severity for f in found] == sorted((f.severity for f in found), key=["CRITICAL", "HIGH", "MEDIUM",
                                                                                     "LOW", "UNKNOWN"].index)
    assert {f.id for f in found} == {v.id for v in report.vulnerabilities}
    page = write_run_report(run, tmp_path).html.read_text()
    for v in report.vulnerabilities:
        assert v.id in page and v.pkg in page


def test_redaction_of_planted_secrets_everywhere(tmp_path: Path) -> None:
    register_secret(REGISTERED)
    run = make_run("v-secret", quality=0.3)
    item = run.stages["eval"].items[0]
    item.response = f"Sure: aws key {AWS_KEY} and the registry password {REGISTERED}."
    item.scores = {k: 0.0 for k in item.scores}  # make it the worst item, so the page shows it
    run.stages["boot"].reason = f"server printed {AWS_KEY} at startup"
    run.stages["boot"].status = StageStatus.FAILED
    run.gates[0].reason = f"leak: {REGISTERED}"
    run.decision_reason = f"blocked; saw {AWS_KEY}"

    # straight from memory (as the orchestrator calls it) ...
    paths = write_run_report(run, tmp_path / "direct")
    md = markdown.render_summary(run)
    # ... and through the store and the site
    st = Store(str(tmp_path / "r.db"))
    st.save(run)
    site = write_site_from_store(st, tmp_path / "site")
    prom = prometheus.exposition([run])
    outputs = {
        "report.html": paths.html.read_text(), "report.json": paths.json.read_text(), "markdown": md,
        "site run page": (tmp_path / "site" / "runs" / run.run_id / "report.html").read_text(),
        "site index": site.index.read_text(), "prometheus": prom,
    }
    for name, text in outputs.items():
        assert AWS_KEY not in text, name
        assert REGISTERED not in text, name
    for name in ("report.html", "report.json", "site run page"):
        assert MASK in outputs[name], name
    assert markdown.md_text(MASK) in outputs["markdown"]  # markdown-escaped, rendered as [REDACTED]
    assert f"Sure: aws key {MASK} and the registry password {MASK}." in outputs["report.json"]
    assert f"server printed {MASK} at startup" in outputs["report.html"]


def test_markdown_summary_puts_blocking_gates_first_with_before_after(history) -> None:  # type: ignore[no-untyped-def]
    runs, _ = history
    by_tag = {r.image.tag: r for r in runs}
    run, base = by_tag["v1.0.3"], by_tag["v1.0.2"]
    md = markdown.render_summary(run, base, report_url="https://ci.example/r/1")
    assert md.startswith("## llmgate: BLOCKED · `v1.0.3`")
    rows = [line for line in md.splitlines() if line.startswith("| ") and "gate" not in line]
    blocking = {g.name for g in failing_gates(run)}
    assert len(rows) == len(run.gates)
    first = [r.split("|")[2].strip(" *`") for r in rows[: len(blocking)]]
    assert set(first) == blocking
    corr = next(r for r in rows if "**`correctness`**" in r)
    g = next(g for g in run.gates if g.name == "correctness")
    cols = [c.strip() for c in corr.split("|")]
    assert cols[3] == fmt_value(g.baseline, "ratio") and cols[4] == fmt_value(g.value, "ratio")
    assert cols[5].startswith("-") and cols[5].endswith("pp")  # a drop in score, in percentage points
    assert "[Full report](https://ci.example/r/1)" in md
    passing = markdown.render_summary(by_tag["v1.0.0"])
    assert passing.startswith("## llmgate: PASS") and "❌" not in passing


def test_prometheus_exposition_format(history) -> None:  # type: ignore[no-untyped-def]
    runs, _ = history
    text = prometheus.exposition(runs)
    line_re = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{(?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*\} \S+$')
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or line_re.match(line), line
    for name in prometheus.METRICS:
        assert text.count(f"# TYPE {name} gauge") == 1
    r = next(r for r in runs if r.image.tag == "v1.0.3")
    g = next(g for g in r.gates if g.name == "correctness")
    assert (f'llmgate_gate_value{{tag="v1.0.3",target="default",gate="correctness",source="eval.correctness_mean"}} '
            f"{float(g.value)!r}") in text
    assert 'llmgate_gate_passed{tag="v1.0.3",target="default",gate="correctness",source="eval.correctness_mean"} 0' \
        in text.replace(" 0.0\n", " 0\n")


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, str, str]]] = []
    status = 200

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        type(self).seen.append(("PUT", self.path, self.headers["Content-Type"], body))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"bad" if type(self).status >= 300 else b"")

    def log_message(self, *a) -> None:  # type: ignore[no-untyped-def]
        pass


def test_push_puts_one_group_per_tag_over_http(history) -> None:  # type: ignore[no-untyped-def]
    """A recording HTTP server on loopback (test double for the Pushgateway's HTTP API)."""
    runs, _ = history
    odd = make_run("feature/x+y", seed=3)
    handler = type("H", (_Recorder,), {"seen": [], "status": 200})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        groups = prometheus.push([*runs, odd], url)
        assert len(groups) == len(runs) + 1
        paths = {p for _, p, _, _ in handler.seen}
        assert "/metrics/job/llmgate/tag/v1.0.3" in paths
        assert "/metrics/job/llmgate/tag@base64/ZmVhdHVyZS94K3k=" in paths
        body = next(b for _, p, _, b in handler.seen if p.endswith("/v1.0.3"))
        assert "llmgate_gate_value{" in body and 'tag="' not in body
        handler.status = 400
        with pytest.raises(InfraError):
            prometheus.push(runs[:1], url)
    finally:
        srv.shutdown()
        srv.server_close()
    with pytest.raises(BadInput):
        prometheus.push(runs, "ftp://x")
    with pytest.raises(InfraError):
        prometheus.push(runs[:1], f"http://127.0.0.1:{srv.server_address[1]}", timeout_s=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_push_to_a_real_pushgateway(history, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        if os.environ.get("LLMGATE_REQUIRE_PUSHGATEWAY") == "1":
            pytest.fail("required in CI: prometheus-pushgateway (apt-get install prometheus-pushgateway)")
        pytest.skip("prometheus-pushgateway not installed")
    runs, _ = history
    port = _free_port()
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(url + "/-/ready", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        prometheus.push(runs, url)
        scraped = httpx.get(url + "/metrics", timeout=5).text
        r = next(r for r in runs if r.image.tag == "v1.0.4")
        g = next(g for g in r.gates if g.name == "critical_vulns")
        assert re.search(r'llmgate_gate_value\{[^}]*gate="critical_vulns"[^}]*tag="v1\.0\.4"[^}]*\} '
                         + re.escape(f"{g.value:g}"), scraped), scraped[:2000]
        assert re.search(r'llmgate_gate_passed\{[^}]*gate="critical_vulns"[^}]*tag="v1\.0\.4"[^}]*\} 0', scraped)
    finally:
        proc.terminate()
        proc.wait(10)


def test_grafana_dashboard_plots_exported_metrics_and_serving_metrics() -> None:
    path = Path(__file__).resolve().parents[1] / "manifests" / "monitoring" / "grafana-dashboard.json"
    dash = json.loads(path.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = set(re.findall(r"\b(llmgate_[a-z_]+)", " ".join(exprs)))
    assert used and used <= set(prometheus.METRICS)
    assert any("vllm:time_to_first_token_seconds_bucket" in e for e in exprs)
    assert any("vllm:time_per_output_token_seconds_bucket" in e for e in exprs)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_cli_report_summary_export(tmp_path: Path, store: Store, history) -> None:  # type: ignore[no-untyped-def]
    runs, _ = history
    cli = CliRunner()
    base = ["--workdir", str(tmp_path / "wd"), "--store", str(tmp_path / "results.db")]
    res = cli.invoke(app, [*base, "report", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert _cells((tmp_path / "out" / "index.html").read_text())["v1.0.4"] == [g.status.value for g in runs[4].gates]
    res = cli.invoke(app, [*base, "report", "--run", runs[3].run_id, "--out", str(tmp_path / "one")])
    assert res.exit_code == 0 and (tmp_path / "one" / "report.json").is_file(), res.output
    res = cli.invoke(app, [*base, "summary", "--run", runs[3].run_id])
    assert res.exit_code == 0 and res.output.startswith("## llmgate: BLOCKED · `v1.0.3`"), res.output
    assert "Baseline: `v1.0.2`" in res.output
    res = cli.invoke(app, [*base, "summary", "--run", runs[3].run_id, "--format", "html"])
    assert res.exit_code == 2
    res = cli.invoke(app, [*base, "summary", "--run", "nope"])
    assert res.exit_code == 2
    prom = tmp_path / "m" / "llmgate.prom"
    res = cli.invoke(app, [*base, "export", "prometheus", "--textfile", str(prom)])
    assert res.exit_code == 0 and 'tag="v1.0.7"' in prom.read_text(), res.output
    assert cli.invoke(app, [*base, "export", "prometheus"]).exit_code == 2


def test_serve_dashboard_serves_the_site_and_refreshes(tmp_path: Path, store: Store, history) -> None:  # type: ignore[no-untyped-def]
    from pipeline.report.serve import make_server

    srv = make_server(store, tmp_path / "served", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/"
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and len(_cells(page.text)) == len(history[0])
        store.save(make_run("v9.9.9", seed=99, created_at=history[0][-1].created_at.replace(year=2027)))
        cells = _cells(httpx.get(url + "index.html", timeout=10).text)
        assert next(iter(cells)) == "v9.9.9"
        run_id = history[0][0].run_id
        assert httpx.get(f"{url}runs/{run_id}/report.html", timeout=10).status_code == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_empty_store_and_sparse_run(tmp_path: Path) -> None:
    res = write_site(tmp_path / "s", [], [])
    assert "holds no run yet" in res.index.read_text()
    bare = make_run("v0")
    bare.stages = {"build": StageResult(stage="build", status=StageStatus.ERROR, reason="engine down")}
    record_verdicts(bare, [g.model_copy(update={"status": GateStatus.NOT_RUN, "value": None}) for g in bare.gates[:3]])
    html = write_run_report(bare, tmp_path / "b").html.read_text()
    assert "No bench samples" in html and "No scan stage" in html and "engine down" in html


# -- the dashboard tells the truth ----------------------------------------------------------------
def _rows(html: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in re.finditer(r'<tr data-tag="([^"]+)".*?</tr>', html, re.DOTALL)}


def test_index_shows_release_identity_history_and_the_promoted_marker(tmp_path: Path, history) -> None:  # type: ignore[no-untyped-def]
    runs, promos = history
    again = make_run("v1.0.3", seed=30, created_at=runs[-1].created_at.replace(day=28))
    st = Store(str(tmp_path / "r.db"))
    for r in [*runs, again]:
        st.save(r)
    for run_id, rec in promos:
        st.record_promotion(rec, run_id)
    html = write_site_from_store(st, tmp_path / "site").index.read_text()
    rows = _rows(html)
    serving = [r for r in runs if r.promotion and r.promotion.outcome == "promoted"][-1]
    for r in runs:
        row = rows[r.image.tag]
        if r.image.tag == "v1.0.3":
            r = again  # the tag's newest run names the release on the index
        assert r.image.digest[7:19] in row and r.model.digest[7:19] in row  # type: ignore[index,union-attr]
        marker = re.search(r'data-promoted="(\w*)"', row).group(1)  # type: ignore[union-attr]
        expected = "current" if r is serving else ("earlier" if r.promotion and r.promotion.outcome == "promoted"
                                                   else "")
        assert marker == expected, r.image.tag
    # the tag's decisions over time, oldest first, each linking to its run
    strip = re.findall(r'<a class="hs (\w+)" href="runs/(\w+)/report.html"', rows["v1.0.3"])
    assert strip == [(runs[3].decision.value, runs[3].run_id), (again.decision.value, again.run_id)]
    assert 'href="tags/v1.0.3-' in rows["v1.0.3"]


def test_tag_history_page(tmp_path: Path, history) -> None:  # type: ignore[no-untyped-def]
    runs, promos = history
    again = make_run("v1.0.3", seed=30, created_at=runs[-1].created_at.replace(day=28))
    res = write_site(tmp_path / "s", [*runs, again], promos, run_pages=False)
    page = next((tmp_path / "s" / "tags").glob("v1.0.3-*.html")).read_text()
    table = re.findall(r'<tr data-run="(\w+)" data-decision="(\w+)">', page)
    assert table == [(again.run_id, again.decision.value), (runs[3].run_id, runs[3].decision.value)]  # newest first
    keys = [g.name for g in again.gates if g.key]
    assert re.findall(r"<th>([a-z_0-9]+)</th>", page)[-len(keys):] == keys
    corr = next(g for g in runs[3].gates if g.name == "correctness")
    assert f'<td class="num kv fail">{fmt_value(corr.value, "ratio")}</td>' in page
    assert page.count('class="dec-') == 2 and page.count("<svg") == 1 + len(keys)
    assert res.tag_pages == len({r.image.tag for r in runs})


def test_compare_colours_only_what_the_engine_found_significant(history) -> None:  # type: ignore[no-untyped-def]
    from pipeline.report.site import compare_rows, render_compare
    from pipeline.report.views import compare_data, significance

    runs, _ = history
    data = compare_data(runs)
    by_tag = {r.image.tag: r for r in runs}
    a = by_tag["v1.0.5"]  # slower server, gated against its baseline
    b = next(r for r in runs if r.run_id == a.baseline_run_id)
    rows = {r["name"]: r for r in compare_rows(data, a.image.tag, b.image.tag)}  # type: ignore[arg-type]
    compared = [g for g in a.gates if g.difference is not None]
    assert compared
    for g in compared:
        assert rows[g.source]["cls"] == significance(g), g.name
        assert rows[g.source]["p"] and rows[g.source]["ci"].count("[") == 1
    assert {rows[g.source]["cls"] for g in compared} >= {"worse", ""}  # real regressions and noise, told apart
    for g in compared:  # noise: the interval spans zero and p is large: no colour
        if g.ci_low < 0 < g.ci_high and g.p_value > 0.05:  # type: ignore[operator]
            assert rows[g.source]["cls"] == ""
    # a pair that was never tested against each other: differences shown, nothing coloured
    untested = compare_rows(data, a.image.tag, by_tag["v1.0.0"].image.tag)  # type: ignore[arg-type]
    assert all(r["cls"] == "" and r["ci"] == "" for r in untested) and any(r["delta"] for r in untested)
    html = render_compare(runs)
    assert 'data-sig="worse"' in html or 'data-sig="better"' in html


def test_run_page_shows_real_durations_reuse_and_an_incomplete_scan(tmp_path: Path) -> None:
    first = make_run("v7", seed=4)
    rerun = make_run("v7", seed=4, created_at=first.created_at.replace(day=2), reused_from=first.run_id,
                     vuln_not_run="vulnerability DB not downloaded (offline)")
    html = write_run_report(rerun, tmp_path, root="../../").html.read_text()
    rows = dict(re.findall(r'<tr data-stage="(\w+)" data-status="(\w+)">', html))
    assert rows["scan"] == "not_run"  # a scan without its vulnerability scanner is never a plain pass
    assert "partial: vuln not run" in html and "vuln scanner not run: vulnerability DB not downloaded" in html
    build = rerun.stages["build"]
    row = re.search(r'<tr data-stage="build".*?</tr>', html, re.DOTALL).group(0)  # type: ignore[union-attr]
    assert fmt_value(build.duration_s, "s") in row
    for name in ("leak", "eval"):
        row = re.search(rf'<tr data-stage="{name}".*?</tr>', html, re.DOTALL).group(0)  # type: ignore[union-attr]
        assert f'reused from <a href="../../runs/{first.run_id}/report.html">run {first.run_id}</a>' in row
    assert "Stages from the run" in html and 'fill="url(#hatch)"' in html  # the stage timeline
    assert 'id="scan-not-run"' in html
    ident = dict(re.findall(r'<dd class="mono" data-k="([^"]+)">([^<]*)</dd>', html))
    assert ident["image"] == f"{rerun.image.repository}@{rerun.image.digest}"
    assert ident["model"].startswith(rerun.model.digest)  # type: ignore[union-attr]
