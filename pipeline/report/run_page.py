"""One run's page (`report.html`) next to its `report.json`.

The orchestrator calls `write_run_report` at the end of `llmgate run`; `llmgate report` calls it for
every run in the site (with `root` set so the page links back to the index).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from pipeline.models import RunRecord
from pipeline.report.render import render
from pipeline.report.report_json import write_report_json
from pipeline.report.views import build_run_view, safe_record


class RunReportPaths(NamedTuple):
    json: Path
    html: Path


def render_run_page(run: RunRecord, baseline: RunRecord | None = None, *, root: str | None = None) -> str:
    view = build_run_view(safe_record(run), safe_record(baseline) if baseline else None)
    return render("run.html.j2", root=root, v=view)


def write_run_report(
    run: RunRecord, out_dir: Path | str, *, baseline: RunRecord | None = None, root: str | None = None
) -> RunReportPaths:
    """Write `report.json` (the redacted record) and `report.html` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_report_json(run, out / "report.json")
    html_path = out / "report.html"
    tmp = html_path.with_suffix(".html.tmp")
    tmp.write_text(render_run_page(run, baseline, root=root))
    tmp.replace(html_path)
    return RunReportPaths(json_path, html_path)
