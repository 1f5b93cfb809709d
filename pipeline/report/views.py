"""View models: everything a template shows, precomputed and redacted in Python.

Templates only loop and print; formatting, ordering, status classes and redaction happen here, once,
so one template pass renders a page (this is what keeps 1,000 tags x 30 gates under a second).
Stage payloads are read as their typed models (`run.details_as(ScanDetails)`), units and better
directions from the metric catalogue (`pipeline.report.units`), never guessed from a name.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from markupsafe import Markup, escape

from pipeline.models import GateStatus, GateVerdict, ItemResult, PromotionRecord, RunRecord, StageResult, StageStatus
from pipeline.redact import redact, redact_text
from pipeline.report import svg
from pipeline.report.units import better_of, fmt_delta, fmt_value, unit_of
from pipeline.report.verdict_table import p_text, relative_difference, threshold_text
from pipeline.schemas import BootDetails, ScanDetails, SignDetails

__all__ = ["better_of", "unit_of"]  # re-exported for the markdown summary and the site

STATUS_LABEL = {"pass": "pass", "warn": "warning", "fail": "fail", "not_run": "not run", "inconclusive": "inconclusive"}
STATUS_GLYPH = {"pass": "✓", "warn": "!", "fail": "✗", "not_run": "·", "inconclusive": "?"}
SEVERITY_RANK = {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 2, "LOW": 3, "UNKNOWN": 4}
QUALITY_DIMENSIONS = ["correctness", "correctness_string", "faithfulness", "answer_relevance", "refusal", "latency_ok"]
DEFAULT_ALPHA = 0.05
HISTORY_STRIP = 12  # decisions per tag on the index

# What the compare page puts side by side, grouped as people read them; gate sources are added too.
COMPARE_METRICS: list[str] = [
    "eval.correctness_mean", "eval.correctness_string_mean", "eval.faithfulness_mean",
    "eval.answer_relevance_mean", "eval.refusal_accuracy", "eval.over_refusal_rate",
    "eval.under_refusal_rate", "eval.latency_adherence", "eval.item_error_rate",
    "bench.ttft_p50_s", "bench.ttft_p99_s", "bench.tpot_p50_s", "bench.tpot_p99_s", "bench.itl_p99_s",
    "bench.e2e_p99_s", "bench.output_tokens_per_s", "bench.requests_per_s", "bench.error_rate", "bench.goodput",
    "boot.load_time_s", "boot.port_open_s", "boot.health_ok_s",
    "scan.critical", "scan.high", "scan.medium", "scan.blocking", "build.image_bytes",
]


class Redactor:
    """Memoised `redact_text` for one render: tag and gate names repeat thousands of times in the index."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def __call__(self, text: str | None) -> str:
        if text is None:
            return ""
        out = self._cache.get(text)
        if out is None:
            out = self._cache[text] = redact_text(text)
        return out


def safe_record(run: RunRecord) -> RunRecord:
    """A copy of the record with every string redacted (the store already redacts; in-memory records
    handed to `write_run_report` may not be, and secrets registered later must still be masked)."""
    return RunRecord.model_validate(redact(run.model_dump(mode="json")))


def short_digest(digest: str | None, n: int = 12) -> str:
    """'sha256:0123…' -> '0123456789ab' (what people compare by eye); '' when there is none."""
    if not digest:
        return ""
    return digest.partition(":")[2][:n] or digest[:n]


def tag_slug(tag: str) -> str:
    """A file name for a tag's history page: readable, and distinct for distinct tags."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", tag)[:60] or "_"
    return f"{readable}-{hashlib.sha1(tag.encode()).hexdigest()[:8]}"


# Per target, the release pair (image digest, model digest) it serves; the model is None for audit rows
# written before promotions recorded it.
Serving = dict[str, tuple[str, str | None]]


def serving_digests(promotions: Iterable[tuple[str | None, PromotionRecord]]) -> Serving:
    """Per target, the release pair of its newest successful promotion (what `llmgate status` reports)."""
    out: Serving = {}
    for _, rec in sorted(promotions, key=lambda p: p[1].at):
        if rec.outcome == "promoted":
            out[rec.target] = (rec.digest, rec.model_digest)
    return out


def is_serving(serving: Serving, target: str, digest: str | None, model_digest: str | None) -> bool:
    """A run's release is what its target serves: the same image and the same weights (a blocked run that
    shares the served image with other weights is not serving)."""
    pair = serving.get(target)
    return bool(digest) and pair is not None and pair[0] == digest and (pair[1] is None or pair[1] == model_digest)


# -- heatmap ------------------------------------------------------------------------------------
@dataclass
class HeatRow:
    tag: str
    run_id: str
    href: str
    tag_href: str
    decision: str
    created: str
    digest: str
    model_digest: str
    promoted: str  # "current" (serves its target now), "earlier" (was promoted), "" (never)
    history: Markup  # the tag's recent decisions, oldest first
    statuses: list[str]
    cells: Markup  # the row's <td>s, built in Python: one string per row instead of 30 template loop turns


@dataclass
class Heatmap:
    gates: list[str]
    rows: list[HeatRow]
    totals: dict[str, int] = field(default_factory=dict)


@dataclass
class GateCellData:
    """The few gate fields the heatmap needs; what the store's gate_verdicts table holds."""

    name: str
    status: str
    value: float | None
    threshold: float | None
    baseline: float | None
    source: str | None = None


@dataclass
class RunHead:
    run_id: str
    tag: str | None
    digest: str | None
    created_at: datetime
    decision: str
    gates: list[GateCellData]
    model_digest: str | None = None
    promoted: bool = False
    target: str = "default"


def _cell_title(tag: str, gate: str, g: GateCellData | None) -> str:
    if g is None:
        return f"{tag} · {gate}: not in policy for this run"
    text = f"{tag} · {gate}: {STATUS_LABEL.get(g.status, g.status)}"
    unit = unit_of(g.source) if g.source else None
    if g.value is not None:
        text += f" · value {_fmt(g.value, unit)}"
    if g.threshold is not None:
        text += f" · threshold {_fmt(g.threshold, unit)}"
    if g.baseline is not None:
        text += f" · baseline {_fmt(g.baseline, unit)}"
    return text


@lru_cache(maxsize=65536)
def _fmt(v: float, unit: str | None = None) -> str:
    # Thresholds and baselines repeat across thousands of cells.
    return str(escape(fmt_value(v, unit)))


def heads_from_runs(runs: Iterable[RunRecord]) -> list[RunHead]:
    return [
        RunHead(
            run_id=r.run_id, tag=r.image.tag, digest=r.image.digest, created_at=r.created_at,
            decision=r.decision.value,
            gates=[GateCellData(g.name, g.status.value, g.value, g.threshold, g.baseline, g.source)
                   for g in r.gates],
            model_digest=r.model.digest if r.model else None,
            promoted=r.promotion is not None and r.promotion.outcome == "promoted", target=r.target,
        )
        for r in runs
    ]


def _strip(heads: list[RunHead], href: str, etag: str) -> Markup:
    """The tag's last decisions as small squares, oldest first, each linking to its run."""
    parts = []
    for h in heads[-HISTORY_STRIP:]:
        title = f"{h.created_at:%Y-%m-%d %H:%M} · {h.decision} · run {h.run_id}"
        parts.append(f'<a class="hs {h.decision}" href="{href.format(run_id=h.run_id)}" title="{etag} · {title}">'
                     "</a>")
    return Markup("".join(parts))


def build_heatmap(heads: list[RunHead], *, href: str = "runs/{run_id}/report.html",
                  tag_href: str = "tags/{slug}.html", serving: Serving | None = None) -> Heatmap:
    """Latest run per tag (newest tag first) against the union of gates (policy order of first sight),
    with the tag's recent decisions, its release identity and whether it serves its target now."""
    serving = serving or {}
    per_tag: dict[str, list[RunHead]] = {}
    for h in heads:
        per_tag.setdefault(h.tag or "(untagged)", []).append(h)
    latest: dict[str, RunHead] = {}
    for key, hs in per_tag.items():
        hs.sort(key=lambda h: (h.created_at, h.run_id))
        latest[key] = hs[-1]
    ordered = sorted(latest.items(), key=lambda kv: kv[1].created_at, reverse=True)
    gates: dict[str, None] = {}
    for _, h in sorted(ordered, key=lambda kv: kv[1].created_at):
        for g in h.gates:
            gates.setdefault(g.name, None)
    names = list(gates)
    red = Redactor()
    safe_names = [red(n) for n in names]
    # Escaped once here; the numbers formatted into titles are escaped by `_fmt`, so cells are plain f-strings.
    esc_names = [str(escape(n)) for n in safe_names]
    totals = dict.fromkeys(("pass", "warn", "fail", "not_run", "inconclusive"), 0)
    rows = []
    for tag, h in ordered:
        stag = red(tag)
        etag = str(escape(stag))
        by_name = {g.name: g for g in h.gates}
        statuses = []
        parts = []
        for name, ename in zip(names, esc_names, strict=True):
            g = by_name.get(name)
            status = g.status if g else "absent"
            statuses.append(status)
            if status in totals:
                totals[status] += 1
            parts.append(f'<td class="c {status}" title="{_cell_title(etag, ename, g)}">'
                         f"{STATUS_GLYPH.get(status, '')}</td>")
        current = is_serving(serving, h.target, h.digest, h.model_digest)
        rows.append(HeatRow(
            tag=stag, run_id=h.run_id, href=href.format(run_id=h.run_id), tag_href=tag_href.format(slug=tag_slug(stag)),
            decision=h.decision, created=f"{h.created_at:%Y-%m-%d %H:%M}", digest=short_digest(h.digest),
            model_digest=short_digest(h.model_digest),
            promoted="current" if current else ("earlier" if h.promoted else ""),
            history=_strip(per_tag[tag], href, etag), statuses=statuses, cells=Markup("".join(parts)),
        ))
    return Heatmap(gates=safe_names, rows=rows, totals=totals)


# -- run page -----------------------------------------------------------------------------------
@dataclass
class VerdictRow:
    name: str
    source: str
    status: str
    status_label: str
    value: str
    threshold: str
    baseline: str
    difference: str
    interval: str
    p_value: str
    mde: str
    flags: str
    reason: str


def verdict_row(g: GateVerdict) -> VerdictRow:
    unit = unit_of(g.source)
    rel = relative_difference(g)
    interval = ""
    if g.ci_low is not None and g.ci_high is not None:
        interval = f"[{fmt_delta(g.ci_low, unit, relative=rel)}, {fmt_delta(g.ci_high, unit, relative=rel)}]"
    flags = " ".join(f for f, on in (("required", g.required), ("key", g.key)) if on) or "advisory"
    return VerdictRow(
        name=g.name, source=g.source, status=g.status.value, status_label=STATUS_LABEL[g.status.value],
        value=fmt_value(g.value, unit), threshold=threshold_text(g),
        baseline=fmt_value(g.baseline, unit) if g.baseline is not None else "",
        difference="" if g.difference is None else fmt_delta(g.difference, unit, relative=rel),
        interval=interval, p_value=p_text(g.p_value),
        mde="" if g.mde is None else fmt_delta(g.mde, unit, relative=rel).lstrip("+"), flags=flags, reason=g.reason,
    )


def failing_gates(run: RunRecord) -> list[GateVerdict]:
    """Gates that block: failed ones, and required ones that did not run."""
    return [g for g in run.gates
            if g.status is GateStatus.FAIL or (g.status is GateStatus.NOT_RUN and g.required)]


def inconclusive_gates(run: RunRecord) -> list[GateVerdict]:
    """Required gates the data could not decide: each keeps the release from passing."""
    return [g for g in run.gates if g.status is GateStatus.INCONCLUSIVE and g.required]


@dataclass
class Finding:
    id: str
    severity: str
    package: str
    installed: str
    fixed: str
    title: str
    target: str


def scan_findings(details: ScanDetails | None) -> list[Finding]:
    """Every finding of the scan stage's typed trivy report, most severe first."""
    if details is None:
        return []
    rep = details.report
    out = [Finding(id=v.id, severity=v.severity.value, package=v.pkg, installed=v.installed, fixed=v.fixed or "",
                   title=(v.title or "")[:200], target=v.target) for v in rep.vulnerabilities]
    out += [Finding(id=s.rule, severity=s.severity.value, package=s.category or "secret", installed="", fixed="",
                    title=(s.title or "")[:200], target=f"{s.target}:{s.line}" if s.line else s.target)
            for s in rep.secrets]
    out += [Finding(id=m.id, severity=m.severity.value, package=m.type or "misconfig", installed="", fixed="",
                    title=(m.title or m.message)[:200], target=m.target) for m in rep.misconfigs]
    out.sort(key=lambda f: (SEVERITY_RANK.get(f.severity, 5), f.id))
    return out


@dataclass
class WorstItem:
    item_id: str
    category: str
    expected: str
    score: float
    scores: list[tuple[str, str]]
    question: str
    response: str
    reference: str
    error: str


def item_score(it: ItemResult) -> float:
    if it.error:
        return 0.0
    vals = [v for k, v in it.scores.items() if v is not None and k != "latency_ok"]
    return sum(vals) / len(vals) if vals else 0.0


def worst_items(items: list[ItemResult], n: int = 10) -> list[WorstItem]:
    ranked = sorted(items, key=lambda it: (item_score(it), it.item_id))[:n]
    return [
        WorstItem(
            item_id=it.item_id, category=it.category, expected=it.expected_behaviour, score=item_score(it),
            scores=[(k, "–" if v is None else f"{v:.2f}") for k, v in it.scores.items()],
            question=it.question, response=it.response if it.response is not None else "(no response)",
            reference=it.reference,
            error="; ".join(([it.error] if it.error else []) + [f"{k}: {v}" for k, v in it.errors.items()]),
        )
        for it in ranked
    ]


def dimension_means(run: RunRecord) -> dict[str, float]:
    ev = run.stages.get("eval")
    if ev is None:
        return {}
    out: dict[str, float] = {}
    for dim in QUALITY_DIMENSIONS:
        vals = [it.scores[dim] for it in ev.items if it.scores.get(dim) is not None]
        if vals:
            out[dim] = sum(vals) / len(vals)  # type: ignore[arg-type]
    return out


@dataclass
class StageRow:
    stage: str
    status: str  # badge class
    label: str  # what the badge says
    started: str
    duration: str
    reused_from: str
    reason: str


def scan_not_run(res: StageResult | None) -> dict[str, str]:
    """Scanners of an `ok` scan stage that did not run, and why (a partial scan is never a plain pass)."""
    details = res.details_as(ScanDetails) if res is not None else None
    return dict(details.not_run) if details is not None else {}


def stage_row(res: StageResult) -> StageRow:
    status, label = res.status.value, res.status.value
    reason = res.reason or ""
    missing = scan_not_run(res) if res.status is StageStatus.OK else {}
    if missing:
        status, label = "not_run", f"partial: {', '.join(sorted(missing))} not run"
        reason = "; ".join([*(f"{k} scanner not run: {v}" for k, v in sorted(missing.items())),
                            *([reason] if reason else [])])
    if res.reused_from:
        duration = "reused"
    else:
        duration = fmt_value(res.duration_s, "s") if res.duration_s is not None else ""
    # A reused result keeps the start time of the run that computed it: not this run's.
    started = "" if res.reused_from else f"{res.started_at:%H:%M:%S}"
    return StageRow(stage=res.stage.value, status=status, label=label, started=started,
                    duration=duration, reused_from=res.reused_from or "", reason=reason)


def release_identity(run: RunRecord) -> list[tuple[str, str]]:
    """What the verdict is about, as (label, value) rows: image, model, ground truth, policy, config."""
    rows = [("image", f"{run.image.repository}@{run.image.digest}" if run.image.digest
             else f"{run.image.by_tag} (not built)")]
    if run.model is not None:
        rows.append(("model", f"{run.model.digest} ({run.model.files} files, {fmt_value(run.model.bytes, 'bytes')})"))
    else:
        rows.append(("model", "(not recorded)"))
    gt = run.ground_truth
    rows.append(("ground truth", f"{gt.version} · {gt.n_items} items · sha256:{gt.sha256[:16]}…" if gt else "(none)"))
    pol = run.policy
    rows.append(("policy", f"{pol.name} · sha256:{pol.sha256[:16]}…" if pol else "(not gated yet)"))
    if run.config_hash:
        rows.append(("config", f"sha256:{run.config_hash[:16]}…"))
    if run.source_commit:
        rows.append(("commit", run.source_commit))
    return rows


@dataclass
class RunView:
    run: RunRecord
    title: str
    short_digest: str
    identity: list[tuple[str, str]]
    verdicts: list[VerdictRow]
    failing: list[VerdictRow]
    inconclusive: list[VerdictRow]
    stages: list[StageRow]
    charts: dict[str, Any]
    boot_rows: list[tuple[str, str]]
    scan_counts: list[tuple[str, str]]
    scan_not_run: list[tuple[str, str]]
    findings: list[Finding]
    n_findings: int
    signature: list[tuple[str, str]]
    sign_status: str
    promotion: PromotionRecord | None
    worst: list[WorstItem]
    baseline_label: str


def _samples(stage: StageResult | None, key: str) -> list[float]:
    if stage is None:
        return []
    return [v for v in stage.samples.get(key, []) if v is not None and math.isfinite(v)]


def _signature_rows(sign: SignDetails | None) -> list[tuple[str, str]]:
    if sign is None:
        return []
    rows = [("signed", sign.ref), ("signer", sign.signer), ("key id", f"sha256:{sign.key_id}"),
            ("verified", "yes" if sign.verified else "no"), ("verification", sign.verify_reason)]
    if sign.signature_ref:
        rows.append(("signature", sign.signature_ref))
    return [(k, v) for k, v in rows if v]


def build_run_view(run: RunRecord, baseline: RunRecord | None = None, *, max_findings: int = 50) -> RunView:
    """Everything the run page shows. `run` and `baseline` must already be redacted (`safe_record`)."""
    base_label = f"baseline {baseline.image.tag or baseline.run_id}" if baseline else ""
    charts: dict[str, Any] = {}
    bench, bbench = run.stages.get("bench"), baseline.stages.get("bench") if baseline else None
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT")):
        series = {"this run": _samples(bench, key)}
        if bbench is not None and _samples(bbench, key):
            series[base_label] = _samples(bbench, key)
        if series["this run"]:
            charts[f"{key}_hist"] = svg.histogram(series, title=f"{label} distribution (share of requests)")
            charts[f"{key}_ecdf"] = svg.ecdf(series, title=f"{label} ECDF")
    timed = [(s.stage.value, s.started_at, s.duration_s, s.status.value, bool(s.reused_from))
             for s in run.stages.values() if s.duration_s is not None or s.reused_from]
    if timed:
        charts["stages"] = svg.gantt(timed, title="Stages from the run's start (reused: hatched, not re-run)")
    boot = run.stages.get("boot")
    boot_rows: list[tuple[str, str]] = []
    if boot is not None:
        ms = [("port accepts", boot.metrics.get("port_open_s")), ("health 200", boot.metrics.get("health_ok_s")),
              ("first completion", boot.metrics.get("first_completion_s")),
              ("load time", boot.metrics.get("load_time_s"))]
        charts["milestones"] = svg.milestones(ms, title="Load-time milestones from container start")
        boot_rows = [(k, fmt_value(v, unit_of(f"boot.{k}"))) for k, v in boot.metrics.items()]
        details = boot.details_as(BootDetails)
        if details is not None and details.attached:
            boot_rows.append(("attached to", details.attached))
    dims = dimension_means(run)
    if dims:
        bdims = dimension_means(baseline) if baseline else {}
        series = ["this run"] + ([base_label] if bdims else [])
        rows = [(d, [v] + ([bdims.get(d)] if bdims else [])) for d, v in dims.items()]
        charts["dimensions"] = svg.bars(rows, series=series, lo=0.0, hi=1.0, title="Mean score per dimension")
    scan = run.stages.get("scan")
    scan_details = scan.details_as(ScanDetails) if scan else None
    findings = scan_findings(scan_details)
    scan_counts = []
    if scan is not None:
        scan_counts = [(k, "not run" if v is None else fmt_value(v, unit_of(f"scan.{k}")))
                       for k, v in scan.metrics.items()]
        sev = [(s, [scan.metrics.get(s)]) for s in ("critical", "high", "medium", "low")
               if scan.metrics.get(s) is not None]
        if sev:
            charts["severity"] = svg.bars(sev, hi=None, title="Findings by severity")
    sign = run.stages.get("sign")
    ev = run.stages.get("eval")
    verdicts = [verdict_row(g) for g in run.gates]
    fail_names = {g.name for g in failing_gates(run)}
    return RunView(
        run=run,
        title=f"{run.image.tag or run.run_id} · {run.decision.value}",
        short_digest=(run.image.digest or "")[:19],
        identity=release_identity(run),
        verdicts=verdicts,
        failing=[v for v in verdicts if v.name in fail_names],
        inconclusive=[v for v in verdicts if v.name in {g.name for g in inconclusive_gates(run)}],
        stages=[stage_row(s) for s in run.stages.values()],
        charts=charts,
        boot_rows=boot_rows,
        scan_counts=scan_counts,
        scan_not_run=sorted(scan_not_run(scan).items()),
        findings=findings[:max_findings],
        n_findings=len(findings),
        signature=_signature_rows(sign.details_as(SignDetails) if sign else None),
        sign_status=(sign.status.value + (f": {sign.reason}" if sign.reason else "")) if sign else "no sign stage",
        promotion=run.promotion,
        worst=worst_items(ev.items) if ev else [],
        baseline_label=base_label,
    )


# -- per-tag history ----------------------------------------------------------------------------
@dataclass
class HistoryRow:
    run_id: str
    created: str
    decision: str
    promoted: str
    digest: str
    model_digest: str
    cells: list[tuple[str, str]]  # (status class, formatted value) per key gate


@dataclass
class TagHistory:
    tag: str
    slug: str
    key_gates: list[str]
    rows: list[HistoryRow]  # newest first
    charts: list[Markup]


def key_gate_names(runs: list[RunRecord], n: int = 6) -> list[str]:
    """The gates a tag's history shows: those the newest run's policy marks key, else its first few."""
    newest = max(runs, key=lambda r: r.created_at)
    keyed = [g.name for g in newest.gates if g.key]
    return (keyed or [g.name for g in newest.gates])[:n]


def build_tag_history(tag: str, runs: list[RunRecord], serving: Serving | None = None) -> TagHistory:
    """Decisions and key metrics of every run of one tag over time. `runs` must be redacted."""
    serving = serving or {}
    runs = sorted(runs, key=lambda r: (r.created_at, r.run_id))
    names = key_gate_names(runs) if runs else []
    rows, series = [], {n: [] for n in names}
    for r in runs:
        by_name = {g.name: g for g in r.gates}
        cells = []
        for n in names:
            g = by_name.get(n)
            cells.append(("absent", "") if g is None else (g.status.value, fmt_value(g.value, unit_of(g.source))))
            if g is not None and g.value is not None:
                series[n].append((r.created_at, g.value, g.status.value, g.threshold, unit_of(g.source)))
        current = is_serving(serving, r.target, r.digest, r.model.digest if r.model else None)
        promoted = r.promotion is not None and r.promotion.outcome == "promoted"
        rows.append(HistoryRow(run_id=r.run_id, created=f"{r.created_at:%Y-%m-%d %H:%M}", decision=r.decision.value,
                               promoted="current" if current else ("earlier" if promoted else ""),
                               digest=short_digest(r.digest), model_digest=short_digest(r.model.digest if r.model
                                                                                           else None), cells=cells))
    charts = [svg.decisions([(r.created_at, r.decision.value, r.run_id) for r in runs],
                            title="Decisions over time")] if runs else []
    for n in names:
        pts = series[n]
        if pts:
            charts.append(svg.metric_line([(t, v, s) for t, v, s, _, _ in pts], unit=pts[-1][4],
                                          threshold=pts[-1][3], title=n))
    return TagHistory(tag=tag, slug=tag_slug(tag), key_gates=names, rows=list(reversed(rows)), charts=charts)


# -- compare ------------------------------------------------------------------------------------
def significance(g: GateVerdict) -> str:
    """'better' / 'worse' when the gate engine's test says the difference is real, else ''.

    Worse: the engine found a regression beyond the margin (p below its alpha), or the whole interval
    of the difference lies on the worse side of zero; better: the interval lies wholly on the better
    side. Noise (an interval across zero) is not coloured."""
    alpha = g.details.alpha if g.details.alpha is not None else DEFAULT_ALPHA
    direction = better_of(g.source, g.direction)
    if direction is None:
        return ""
    up_is_better = direction == "higher"
    if g.p_value is not None and g.p_value < alpha:
        return "worse"
    if g.ci_low is None or g.ci_high is None:
        return ""
    if g.ci_low > 0 or g.ci_high < 0:
        return "better" if (g.ci_low > 0) == up_is_better else "worse"
    return ""


def compare_tests(run: RunRecord) -> dict[str, dict[str, Any]]:
    """Per metric source, the gate engine's comparison of `run` against its baseline: the difference,
    its 95 % interval and p, already formatted, and whether it is significant."""
    out: dict[str, dict[str, Any]] = {}
    for g in run.gates:
        if g.difference is None:
            continue
        unit, rel = unit_of(g.source), relative_difference(g)
        ci = ""
        if g.ci_low is not None and g.ci_high is not None:
            ci = f"{fmt_delta(g.difference, unit, relative=rel)} [{fmt_delta(g.ci_low, unit, relative=rel)}, " \
                 f"{fmt_delta(g.ci_high, unit, relative=rel)}]"
        out[g.source] = {"gate": g.name, "ci": ci, "p": p_text(g.p_value), "cls": significance(g)}
    return out


def compare_data(runs: list[RunRecord]) -> dict[str, Any]:
    """Latest run per tag, the metrics the compare page can put side by side (unit, better direction)
    and each run's tests against its own baseline (valid only for that pair)."""
    latest: dict[str, RunRecord] = {}
    for r in runs:
        key = r.image.tag or "(untagged)"
        if key not in latest or r.created_at > latest[key].created_at:
            latest[key] = r
    ordered = sorted(latest.values(), key=lambda r: r.created_at, reverse=True)
    metrics: dict[str, str | None] = {m: better_of(m) for m in COMPARE_METRICS}
    for r in ordered:
        for g in r.gates:
            metrics.setdefault(g.source, better_of(g.source, g.direction))
    present = [m for m in metrics if any(r.metric(m) is not None for r in ordered)]
    red = Redactor()
    tags = []
    for r in ordered:
        tests = compare_tests(r)
        tags.append({
            "tag": red(r.image.tag or "(untagged)"), "run_id": r.run_id, "decision": r.decision.value,
            "baseline_run_id": r.baseline_run_id,
            "values": [r.metric(m) for m in present],
            "shown": [fmt_value(r.metric(m), unit_of(m)) for m in present],
            "tests": {str(i): tests[m] for i, m in enumerate(present) if m in tests},
            "dims": dimension_means(r),
        })
    return {
        "metrics": [{"name": m, "unit": unit_of(m) or "", "better": metrics[m] or ""} for m in present],
        "tags": tags,
    }
