"""`llmgate report`: a static site from the store.

Layout (every page self-contained, CSS and the few lines of JS inlined, charts as inline SVG):
  index.html                       heatmap of tags x gates (latest run per tag), each tag's recent
                                   decisions, image and model digests, the promoted marker
  tags/<slug>.html                 one tag's history: decisions and key metrics over time
  runs/<run_id>/report.html|json   one page per run, the same one `llmgate run` writes
  compare.html                     any two tags side by side, with the gate engine's CI and p
  promotions.html                  promotion timeline per target
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from pipeline.models import PromotionRecord, RunRecord
from pipeline.redact import redact_text
from pipeline.report import svg
from pipeline.report.listing import serving_from_store
from pipeline.report.render import render
from pipeline.report.run_page import write_run_report
from pipeline.report.units import fmt_delta
from pipeline.report.views import (
    GateCellData,
    Redactor,
    RunHead,
    Serving,
    build_heatmap,
    build_tag_history,
    compare_data,
    heads_from_runs,
    safe_record,
    serving_digests,
    short_digest,
    tag_slug,
)
from pipeline.store import Store, UnreadableRecord

Promotions = list[tuple[str | None, PromotionRecord]]


@dataclass
class SiteResult:
    out_dir: Path
    index: Path
    run_pages: int
    tag_pages: int = 0


# -- index --------------------------------------------------------------------------------------
def heads_from_store(store: Store) -> list[RunHead]:
    """Run heads and gate verdicts from the store's denormalised tables. The gate rows do not name the
    metric a gate reads (its unit): that comes from the newest record holding each gate name, so a
    store whose runs share one policy parses one record."""
    summaries = store.history()
    sources: dict[str, str] = {}
    missing = {g.name for r in summaries for g in r.gates}
    for r in reversed(summaries):
        if not missing:
            break
        if missing & {g.name for g in r.gates}:
            try:
                gates = store.get(r.run_id).gates
            except UnreadableRecord as exc:  # its heatmap row stays (from the tables); the store names it
                store.unreadable[exc.run_id] = exc.why
                continue
            for g in gates:
                if g.name in missing:
                    sources[g.name] = g.source
                    missing.discard(g.name)
    return [RunHead(r.run_id, r.tag, r.digest, r.created_at, r.decision,
                    [GateCellData(g.name, g.status, g.value, g.threshold, g.baseline, sources.get(g.name))
                     for g in r.gates],
                    model_digest=r.model_digest, promoted=r.promoted, target=r.target)
            for r in summaries]


def render_index(heads: list[RunHead], serving: Serving | None = None) -> str:
    return render("index.html.j2", root="", hm=build_heatmap(heads, serving=serving))


# -- per-tag history ------------------------------------------------------------------------------
def render_tag_page(tag: str, runs: list[RunRecord], serving: Serving | None = None) -> str:
    return render("tag.html.j2", root="../", h=build_tag_history(tag, runs, serving))


# -- compare ------------------------------------------------------------------------------------
def _json_for_script(data: Any) -> Markup:
    # "</script>" inside a string must not end the script element.
    return Markup(json.dumps(data, separators=(",", ":")).replace("<", "\\u003c"))


def compare_rows(data: dict[str, Any], a: str, b: str) -> list[dict[str, str]]:
    """The compare table for tags `a` (after) and `b` (before). The engine's interval and p (and so any
    colour) are shown only when `b` is the baseline `a` was gated against: for any other pair there
    was no test, and a raw difference is not evidence."""
    by_tag = {t["tag"]: t for t in data["tags"]}
    ta, tb = by_tag[a], by_tag[b]
    tested = ta["baseline_run_id"] is not None and ta["baseline_run_id"] == tb["run_id"]
    rows = []
    for i, m in enumerate(data["metrics"]):
        va, vb = ta["values"][i], tb["values"][i]
        delta = pct = ""
        if va is not None and vb is not None:
            diff = va - vb
            delta = fmt_delta(diff, m["unit"] or None)
            pct = f"{diff / abs(vb) * 100:+.1f}%" if vb else ""
        test = ta["tests"].get(str(i)) if tested else None
        mx = max(abs(va or 0), abs(vb or 0)) or 1
        rows.append({"name": m["name"], "a": ta["shown"][i], "b": tb["shown"][i], "delta": delta, "pct": pct,
                     "ci": test["ci"] if test else "", "p": test["p"] if test else "",
                     "cls": test["cls"] if test else "",
                     "wa": f"{100 * abs(va or 0) / mx:.1f}", "wb": f"{100 * abs(vb or 0) / mx:.1f}"})
    return rows


def render_compare(runs: list[RunRecord]) -> str:
    data = compare_data(runs)
    tags = [t["tag"] for t in data["tags"]]
    by_tag = {t["tag"]: t for t in data["tags"]}
    a = b = None
    if tags:
        a = tags[0]
        newest = next(r for r in runs if r.run_id == by_tag[a]["run_id"])
        base = next((r for r in runs if r.run_id == newest.baseline_run_id), None)
        b = Redactor()(base.image.tag or "(untagged)") if base is not None else (tags[1] if len(tags) > 1 else a)
        b = b if b in by_tag else a
    rows: list[dict[str, str]] = []
    chart, decisions = Markup(""), ""
    if a is not None and b is not None:
        rows = compare_rows(data, a, b)
        ta, tb = by_tag[a], by_tag[b]
        dims = [d for d in ta["dims"] if d in tb["dims"]]
        chart = svg.bars([(d, [ta["dims"][d], tb["dims"][d]]) for d in dims], series=[a, b], lo=0.0, hi=1.0,
                         title="Mean score per dimension") if dims else Markup("")
        decisions = f"A: {ta['decision']} · B: {tb['decision']}"
    return render("compare.html.j2", root="", tags=tags, a=a, b=b, rows=rows, chart=chart, decisions=decisions,
                  data_json=_json_for_script(data))


# -- promotions ---------------------------------------------------------------------------------
def render_promotions(promotions: Promotions, runs: list[RunRecord]) -> str:
    tags = {r.run_id: r.image.tag or r.run_id for r in runs}
    models = {r.run_id: short_digest(r.model.digest) for r in runs if r.model}
    per_target: dict[str, list[tuple[str | None, PromotionRecord]]] = {}
    for run_id, rec in promotions:
        per_target.setdefault(rec.target, []).append((run_id, rec))
    targets = []
    for name, events in sorted(per_target.items()):
        events.sort(key=lambda e: e[1].at)
        rows, marks = [], []
        for run_id, rec in events:
            label = redact_text(tags.get(run_id or "", short_digest(rec.digest)))
            href = f"runs/{run_id}/report.html" if run_id in tags else None
            rows.append({"at": f"{rec.at:%Y-%m-%d %H:%M}", "outcome": rec.outcome, "label": label, "href": href,
                         "digest": short_digest(rec.digest), "model": models.get(run_id or "", ""),
                         "previous": short_digest(rec.previous_digest) or "–",
                         "mode": rec.mode, "who": redact_text(rec.who), "detail": redact_text(rec.detail)})
            marks.append((rec.at, label, rec.outcome, href))
        current = next(((run_id, rec) for run_id, rec in reversed(events) if rec.outcome == "promoted"), None)
        serving = None
        if current is not None:
            since = current[1]
            for run_id, rec in reversed(events):  # the first promotion of the serving digest in a row
                if rec.outcome != "promoted":
                    continue
                if rec.digest != current[1].digest:
                    break
                since = rec
            serving = {"digest": short_digest(current[1].digest), "label": rows[events.index(current)]["label"],
                       "href": rows[events.index(current)]["href"], "since": f"{since.at:%Y-%m-%d %H:%M}"}
        targets.append({"name": name, "events": list(reversed(rows)), "serving": serving,
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
    serving: Serving | None = None,
    run_pages: bool = True,
) -> SiteResult:
    out = Path(out_dir)
    serving = serving if serving is not None else serving_digests(promotions)
    index = _write(out / "index.html", render_index(heads if heads is not None else heads_from_runs(runs), serving))
    _write(out / "compare.html", render_compare(runs))
    _write(out / "promotions.html", render_promotions(promotions, runs))
    per_tag: dict[str, list[RunRecord]] = {}
    for r in runs:
        per_tag.setdefault(r.image.tag or "(untagged)", []).append(r)
    for tag, tag_runs in per_tag.items():
        shown = redact_text(tag)  # the page's name and title derive from the tag as shown, never its secret
        _write(out / "tags" / f"{tag_slug(shown)}.html",
               render_tag_page(shown, [safe_record(r) for r in tag_runs], serving))
    n = 0
    if run_pages:
        by_id = {r.run_id: r for r in runs}
        for run in runs:
            base = by_id.get(run.baseline_run_id or "")
            write_run_report(run, out / "runs" / run.run_id, baseline=base, root="../../")
            n += 1
    return SiteResult(out, index, n, len(per_tag))


def write_site_from_store(store: Store, out_dir: Path | str, *, run_pages: bool = True) -> SiteResult:
    heads = heads_from_store(store)
    promotions = store.promotions()
    serving = serving_from_store(store, {h.target for h in heads} | {p.target for _, p in promotions})
    return write_site(out_dir, store.runs(), promotions, heads=heads, serving=serving, run_pages=run_pages)
