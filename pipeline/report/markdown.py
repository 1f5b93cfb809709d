"""Markdown summary for a pull-request comment or a CI job summary ($GITHUB_STEP_SUMMARY).

Before/after against the baseline, blocking gates first, so the reason an image was refused is the
first thing a reviewer reads, and the release the verdict is about (image and model digests, ground
truth, policy). Everything shown is redacted, and nothing from outside (tags, gate reasons, model
answers, stage errors) is markup: GitHub renders a subset of HTML inside markdown, so outside text is
HTML-escaped and its markdown punctuation backslash-escaped (`md_text`), or put in a code span; control and bidi
characters are shown as escapes (`pipeline.outside_text.printable`), since the summary is also printed.
"""

from __future__ import annotations

import re

from pipeline.models import GateStatus, GateVerdict, RunRecord, StageStatus
from pipeline.outside_text import printable
from pipeline.redact import redact_text
from pipeline.report.units import fmt_delta, fmt_value, unit_of
from pipeline.report.verdict_table import difference_text, p_text, relative_difference, threshold_text
from pipeline.report.views import (
    failing_gates,
    inconclusive_gates,
    safe_record,
    scan_not_run,
    short_digest,
    worst_items,
)

_ICON = {"pass": "✅", "warn": "⚠️", "fail": "❌", "not_run": "⏭️", "inconclusive": "❔"}
_ORDER = {GateStatus.FAIL: 0, GateStatus.NOT_RUN: 1, GateStatus.INCONCLUSIVE: 2, GateStatus.WARN: 3, GateStatus.PASS: 4}
_DECISION_NOTE = {
    "inconclusive": "Not shown safe to ship: nothing failed, but the gates marked ❔ could not decide. "
                    "Not promotable; measure again or act on what they name.",
}
# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that start emphasis,
# links, code, tables or strike-through anywhere in a line.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_SAFE_URL = re.compile(r"^https?://[A-Za-z0-9._~:/?#@!$&'*+,;=%-]+\Z")
_MAX_ANSWER = 500  # characters of a model answer in the summary (the run page has them whole)


def md_text(text: str | None, *, limit: int | None = None) -> str:
    """Outside text as inert markdown on one line: redacted, `&<>` as HTML entities (so `<script>` or
    `<img onerror>` is shown, never rendered), markdown punctuation escaped, newlines as spaces."""
    if text is None:
        return ""
    text = redact_text(text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    # Control and bidi characters as visible escapes: this text is printed on terminals and CI logs too
    # (ESC sequences, U+202E reversing a line). `\x` / `\u` are not markdown escapes, so they show as-is.
    return printable(re.sub(r"[\r\n]+", " ", text))


def md_code(text: str | None, *, in_table: bool = False) -> str:
    """Outside text as a code span: nothing inside is rendered; the fence is longer than any run of
    backticks in the text. In a table cell a pipe must still be escaped (GFM splits cells first)."""
    text = printable(re.sub(r"[\r\n]+", " ", redact_text(text or "")))
    if in_table:
        text = text.replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _delta(g: GateVerdict) -> str:
    if g.difference is not None:
        return fmt_delta(g.difference, unit_of(g.source), relative=relative_difference(g))
    if g.value is None or g.baseline is None:
        return ""
    return fmt_delta(g.value - g.baseline, unit_of(g.source))


def identity_lines(run: RunRecord) -> list[str]:
    """The release the verdict is about, one fact per line."""
    lines = [f"- **Image** {md_code(run.image.repository + '@' + run.image.digest if run.image.digest else run.image.by_tag + ' (not built)')}"]
    if run.model is not None:
        lines.append(f"- **Model** {md_code(run.model.digest)} ({run.model.files} files, "
                     f"{fmt_value(run.model.bytes, 'bytes')})")
    else:
        lines.append("- **Model** not recorded")
    gt = run.ground_truth
    lines.append(f"- **Ground truth** {md_code(f'{gt.version}@sha256:{gt.sha256}')} ({gt.n_items} items)" if gt
                 else "- **Ground truth** none")
    pol = run.policy
    lines.append(f"- **Policy** {md_code(pol.name)} ({md_code('sha256:' + pol.sha256)})" if pol
                 else "- **Policy** not gated yet")
    return lines


def render_summary(run: RunRecord, baseline: RunRecord | None = None, *, report_url: str | None = None,
                   max_items: int = 3) -> str:
    run = safe_record(run)
    baseline = safe_record(baseline) if baseline else None
    blocking = {g.name for g in failing_gates(run)} | {g.name for g in inconclusive_gates(run)}
    verdict = run.decision.value.upper()
    tag = run.image.tag or run.run_id
    lines = [f"## llmgate: {verdict} · {md_code(tag)}", ""]
    lines.append(f"Run {md_code(run.run_id)} · target {md_code(run.target)}")
    if baseline is not None:
        lines.append(f"Baseline: {md_code(baseline.image.tag or baseline.run_id)} "
                     f"(image {md_code(short_digest(baseline.image.digest) or '-')}, model "
                     f"{md_code(short_digest(baseline.model.digest) if baseline.model else '-')})")
    elif run.baseline_run_id:
        lines.append(f"Baseline: run {md_code(run.baseline_run_id)}")
    else:
        lines.append("Baseline: none (first run for this target)")
    lines += ["", *identity_lines(run)]
    if run.decision_reason:
        lines += ["", f"> {md_text(run.decision_reason)}"]
    if run.decision.value in _DECISION_NOTE:
        lines += ["", f"**{_DECISION_NOTE[run.decision.value]}**"]
    counts = {s: sum(g.status is s for g in run.gates) for s in GateStatus}
    lines += ["", " · ".join(f"{_ICON[s.value]} {counts[s]} {s.value.replace('_', ' ')}" for s in GateStatus
                             if counts[s]), ""]
    if run.gates:
        lines += ["| | gate | before | after | Δ | threshold | Δ [95% CI] | p | reason |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        ordered = sorted(run.gates, key=lambda g: (g.name not in blocking, _ORDER[g.status]))
        for g in ordered:
            unit = unit_of(g.source)
            base = g.baseline if g.baseline is not None else (baseline.metric(g.source) if baseline else None)
            name = f"**{md_code(g.name, in_table=True)}**" if g.name in blocking else md_code(g.name, in_table=True)
            lines.append(
                f"| {_ICON[g.status.value]} | {name} | {fmt_value(base, unit) if base is not None else ''} | "
                f"{fmt_value(g.value, unit)} | {_delta(g)} | {threshold_text(g)} | "
                f"{difference_text(g) if g.ci_low is not None else ''} | {p_text(g.p_value)} | {md_text(g.reason)} |"
            )
    else:
        lines.append("_No gate was evaluated._")
    not_ok = [s for s in run.stages.values() if s.status is not StageStatus.OK]
    if not_ok:
        lines += ["", "**Stages not ok:** " + "; ".join(
            f"{md_code(s.stage.value)} {s.status.value}" + (f" ({md_text(s.reason)})" if s.reason else "")
            for s in not_ok)]
    partial = scan_not_run(run.stages.get("scan"))
    if partial:
        lines += ["", "**Scan incomplete:** " + "; ".join(f"{md_text(k)} scanner not run ({md_text(v)})"
                                                          for k, v in sorted(partial.items()))]
    reused = [s for s in run.stages.values() if s.reused_from]
    if reused:
        lines += ["", "Reused (same inputs): " + ", ".join(
            f"{md_code(s.stage.value)} from run {md_code(s.reused_from)}" for s in reused)]
    ev = run.stages.get("eval")
    if ev is not None and ev.items and max_items > 0:
        lines += ["", "<details><summary>Worst-scoring items</summary>", ""]
        for it in worst_items(ev.items, max_items):
            lines += [f"- {md_code(it.item_id)} (score {it.score:.2f}) **Q:** {md_text(it.question, limit=_MAX_ANSWER)}",
                      f"  - response: {md_text(it.response, limit=_MAX_ANSWER)}",
                      f"  - reference: {md_text(it.reference, limit=_MAX_ANSWER)}"]
        lines += ["", "</details>"]
    if run.promotion is not None:
        p = run.promotion
        promo = f"Promotion to {md_code(p.target)}: **{md_text(p.outcome)}** ({md_text(p.mode)}) {md_text(p.detail)}"
        lines += ["", promo]
    if report_url:
        url = redact_text(report_url)
        # Only a plain http(s) URL becomes a link; anything else is shown, never followed.
        lines += ["", f"[Full report]({url})" if _SAFE_URL.match(url) else f"Full report: {md_code(url)}"]
    return "\n".join(lines) + "\n"
