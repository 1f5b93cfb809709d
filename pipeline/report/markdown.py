"""Markdown summary for a pull-request comment or a CI job summary ($GITHUB_STEP_SUMMARY).

Before/after against the baseline, blocking gates first, so the reason an image was refused is the
first thing a reviewer reads. Everything shown is redacted.
"""

from __future__ import annotations

from pipeline.models import GateStatus, GateVerdict, RunRecord
from pipeline.report.svg import fmt_value
from pipeline.report.views import failing_gates, safe_record, unit_of, worst_items

_ICON = {"pass": "✅", "warn": "⚠️", "fail": "❌", "not_run": "⏭️"}
_ORDER = {GateStatus.FAIL: 0, GateStatus.NOT_RUN: 1, GateStatus.WARN: 2, GateStatus.PASS: 3}


def _cell(text: str) -> str:
    """Table cells: pipes and newlines would break the row."""
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _delta(g: GateVerdict) -> str:
    unit = unit_of(g.source)
    if g.difference is None and (g.value is None or g.baseline is None):
        return ""
    diff = g.difference if g.difference is not None else g.value - g.baseline  # type: ignore[operator]
    text = ("+" if diff > 0 else "") + fmt_value(diff, unit)
    if g.baseline:
        text += f" ({diff / abs(g.baseline) * 100:+.1f}%)"
    return text


def render_summary(run: RunRecord, baseline: RunRecord | None = None, *, report_url: str | None = None,
                   max_items: int = 3) -> str:
    run = safe_record(run)
    baseline = safe_record(baseline) if baseline else None
    blocking = {g.name for g in failing_gates(run)}
    verdict = {"pass": "PASS", "blocked": "BLOCKED", "error": "ERROR", "pending": "PENDING"}[run.decision.value]
    tag = run.image.tag or run.run_id
    lines = [f"## llmgate: {verdict} · `{_cell(tag)}`", ""]
    lines.append(f"Digest `{run.image.digest or '(not built)'}` · run `{run.run_id}` · target `{run.target}`")
    if baseline is not None:
        lines.append(f"Baseline: `{_cell(baseline.image.tag or baseline.run_id)}` (`{baseline.image.digest or ''}`)")
    elif run.baseline_run_id:
        lines.append(f"Baseline: run `{run.baseline_run_id}`")
    else:
        lines.append("Baseline: none (first run for this target)")
    if run.decision_reason:
        lines += ["", f"> {_cell(run.decision_reason)}"]
    counts = {s: sum(g.status is s for g in run.gates) for s in GateStatus}
    lines += ["", " · ".join(f"{_ICON[s.value]} {counts[s]} {s.value.replace('_', ' ')}" for s in GateStatus
                             if counts[s]), ""]
    if run.gates:
        lines += ["| | gate | before | after | Δ | threshold | 95% interval of Δ | reason |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        ordered = sorted(run.gates, key=lambda g: (g.name not in blocking, _ORDER[g.status]))
        for g in ordered:
            unit = unit_of(g.source)
            base = g.baseline if g.baseline is not None else (baseline.metric(g.source) if baseline else None)
            op = {"max": "≤ ", "min": "≥ "}.get(g.direction or "", "")
            ci = ""
            if g.ci_low is not None and g.ci_high is not None:
                ci = f"[{fmt_value(g.ci_low, unit)}, {fmt_value(g.ci_high, unit)}]"
            name = f"**{_cell(g.name)}**" if g.name in blocking else _cell(g.name)
            lines.append(
                f"| {_ICON[g.status.value]} | {name} | {fmt_value(base, unit) if base is not None else ''} | "
                f"{fmt_value(g.value, unit)} | {_delta(g)} | "
                f"{op + fmt_value(g.threshold, unit) if g.threshold is not None else ''} | {ci} | "
                f"{_cell(g.reason)} |"
            )
    else:
        lines.append("_No gate was evaluated._")
    not_ok = [s for s in run.stages.values() if s.status.value != "ok"]
    if not_ok:
        lines += ["", "**Stages not ok:** " + "; ".join(
            f"`{s.stage}` {s.status.value}" + (f" ({_cell(s.reason)})" if s.reason else "") for s in not_ok)]
    ev = run.stages.get("eval")
    if ev is not None and ev.items and max_items > 0:
        lines += ["", "<details><summary>Worst-scoring items</summary>", ""]
        for it in worst_items(ev.items, max_items):
            lines += [f"- `{it.item_id}` (score {it.score:.2f}) **Q:** {_cell(it.question)}",
                      f"  - response: {_cell(it.response)}", f"  - reference: {_cell(it.reference)}"]
        lines += ["", "</details>"]
    if run.promotion is not None:
        p = run.promotion
        lines += ["", f"Promotion to `{p.target}`: **{p.outcome}** ({p.mode}) {_cell(p.detail)}"]
    if report_url:
        lines += ["", f"[Full report]({report_url})"]
    return "\n".join(lines) + "\n"
