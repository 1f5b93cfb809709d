"""`llmgate report`: a static site from the store.

Layout (every page self-contained, CSS and the few lines of JS inlined, charts as inline SVG):
  index.html                       heatmap of tags x gates (latest run per tag)
  runs/<run_id>/report.html|json   one page per run, the same one `llmgate run` writes
  compare.html                     any two tags side by side per dimension
  promotions.html                  promotion timeline per target
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup
from sqlalchemy import select

from pipeline.models import PromotionRecord, RunRecord
from pipeline.redact import redact_text
from pipeline.report import svg
from pipeline.report.render import render
from pipeline.report.run_page import write_run_report
from pipeline.report.svg import fmt_value
from pipeline.report.views import (
    GateCellData,
    Redactor,
    RunHead,
    build_heatmap,
    compare_data,
    heads_from_runs,
)
from pipeline.store import GateRow, RunRow, Store

Promotions = list[tuple[str | None, PromotionRecord]]


@dataclass
class SiteResult:
    out_dir: Path
    index: Path
    run_pages: int


# -- index --------------------------------------------------------------------------------------
def heads_from_store(store: Store) -> list[RunHead]:
    """Run heads and gate verdicts from the store's denormalised tables, without parsing records:
    the index needs only what `runs` and `gate_verdicts` already hold."""
    with store.session() as s:
        rows = s.execute(select(RunRow.run_id, RunRow.tag, RunRow.digest, RunRow.created_at, RunRow.decision)).all()
        gates: dict[str, list[GateCellData]] = {}
        q = select(GateRow.run_id, GateRow.name, GateRow.status, GateRow.value, GateRow.threshold, GateRow.baseline)
        for run_id, name, status, value, threshold, baseline in s.execute(q.order_by(GateRow.id)):
            gates.setdefault(run_id, []).append(GateCellData(name, status, value, threshold, baseline))
    return [RunHead(r.run_id, r.tag, r.digest, r.created_at, r.decision, gates.get(r.run_id, [])) for r in rows]


def render_index(heads: list[RunHead]) -> str:
    return render("index.html.j2", root="", hm=build_heatmap(heads))


# -- compare ------------------------------------------------------------------------------------
def _json_for_script(data: Any) -> Markup:
    # "</script>" inside a string must not end the script element.
    return Markup(json.dumps(data, separators=(",", ":")).replace("<", "\\u003c"))


def render_compare(runs: list[RunRecord]) -> str:
    data = compare_data(runs)
    tags = [t["tag"] for t in data["tags"]]
    by_tag = {t["tag"]: t for t in data["tags"]}
    a = b = None
    if tags:
        a = tags[0]
        newest = next(r for r in runs if r.run_id == by_tag[a]["run_id"])
        base = next((r for r in runs if r.run_id == newest.baseline_run_id), None)
        red = Redactor()
        b = red(base.image.tag or "(untagged)") if base is not None else (tags[1] if len(tags) > 1 else a)
        b = b if b in by_tag else a
    rows, chart, decisions = [], Markup(""), ""
    if a is not None and b is not None:
        ta, tb = by_tag[a], by_tag[b]
        for i, m in enumerate(data["metrics"]):
            va, vb = ta["values"][i], tb["values"][i]
            cls = delta = pct = ""
            if va is not None and vb is not None:
                diff = va - vb
                delta = ("+" if diff > 0 else "") + fmt_value(diff, m["unit"])
                pct = f"{diff / abs(vb) * 100:.1f}%" if vb else ""
                if abs(diff) > 1e-12:
                    cls = "better" if (diff > 0) == m["higher_better"] else "worse"
            mx = max(abs(va or 0), abs(vb or 0)) or 1
            rows.append({"name": m["name"], "a": fmt_value(va, m["unit"]), "b": fmt_value(vb, m["unit"]),
                         "delta": delta, "pct": pct, "cls": cls,
                         "wa": f"{100 * abs(va or 0) / mx:.1f}", "wb": f"{100 * abs(vb or 0) / mx:.1f}"})
        dims = [d for d in ta["dims"] if d in tb["dims"]]
        chart = svg.bars([(d, [ta["dims"][d], tb["dims"][d]]) for d in dims], series=[a, b], lo=0.0, hi=1.0,
                         title="Mean score per dimension") if dims else Markup("")
        decisions = f"A: {ta['decision']} · B: {tb['decision']}"
    return render("compare.html.j2", root="", tags=tags, a=a, b=b, rows=rows, chart=chart, decisions=decisions,
                  data_json=_json_for_script(data))


# -- promotions ---------------------------------------------------------------------------------
def render_promotions(promotions: Promotions, runs: list[RunRecord]) -> str:
    tags = {r.run_id: r.image.tag or r.run_id for r in runs}
    per_target: dict[str, list[tuple[str | None, PromotionRecord]]] = {}
    for run_id, rec in promotions:
        per_target.setdefault(rec.target, []).append((run_id, rec))
    targets = []
    for name, events in sorted(per_target.items()):
        events.sort(key=lambda e: e[1].at)
        rows, marks = [], []
        for run_id, rec in events:
            label = redact_text(tags.get(run_id or "", rec.digest[7:19]))
            href = f"runs/{run_id}/report.html" if run_id in tags else None
            rows.append({"at": f"{rec.at:%Y-%m-%d %H:%M}", "outcome": rec.outcome, "label": label, "href": href,
                         "digest": rec.digest[:19], "previous": (rec.previous_digest or "–")[:19],
                         "mode": rec.mode, "who": redact_text(rec.who), "detail": redact_text(rec.detail)})
            marks.append((rec.at, label, rec.outcome, href))
        current = next((rec.digest[:19] for _, rec in reversed(events) if rec.outcome == "promoted"), None)
        targets.append({"name": name, "events": list(reversed(rows)), "current": current,
                        "chart": svg.timeline(marks, title=f"{name}: promotions over time")})
    return render("promotions.html.j2", root="", targets=targets)


# -- the site -----------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_site(
    out_dir: Path | str,
    runs: list[RunRecord],
    promotions: Promotions,
    *,
    heads: list[RunHead] | None = None,
    run_pages: bool = True,
) -> SiteResult:
    out = Path(out_dir)
    index = _write(out / "index.html", render_index(heads if heads is not None else heads_from_runs(runs)))
    _write(out / "compare.html", render_compare(runs))
    _write(out / "promotions.html", render_promotions(promotions, runs))
    n = 0
    if run_pages:
        by_id = {r.run_id: r for r in runs}
        for run in runs:
            base = by_id.get(run.baseline_run_id or "")
            write_run_report(run, out / "runs" / run.run_id, baseline=base, root="../../")
            n += 1
    return SiteResult(out, index, n)


def write_site_from_store(store: Store, out_dir: Path | str, *, run_pages: bool = True) -> SiteResult:
    return write_site(out_dir, store.runs(), store.promotions(), heads=heads_from_store(store), run_pages=run_pages)
