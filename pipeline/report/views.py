"""View models: everything a template shows, precomputed and redacted in Python.

Templates only loop and print; formatting, ordering, status classes and redaction happen here, once,
so one template pass renders a page (this is what keeps 1,000 tags x 30 gates under a second).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from markupsafe import Markup, escape

from pipeline.models import GateStatus, GateVerdict, ItemResult, PromotionRecord, RunRecord, StageResult
from pipeline.redact import redact, redact_text
from pipeline.report import svg
from pipeline.report.svg import fmt_value

STATUS_LABEL = {"pass": "pass", "warn": "warning", "fail": "fail", "not_run": "not run"}
STATUS_GLYPH = {"pass": "✓", "warn": "!", "fail": "✗", "not_run": "·"}
SEVERITY_RANK = {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 2, "LOW": 3, "UNKNOWN": 4}
QUALITY_DIMENSIONS = ["correctness", "correctness_string", "faithfulness", "answer_relevance", "refusal", "latency_ok"]

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
_HIGHER_IS_BETTER = ("_mean", "accuracy", "adherence", "tokens_per_s", "requests_per_s", "goodput", "verified",
                     "readiness_honest")


def unit_of(source: str) -> str:
    name = source.rpartition(".")[2]
    if name.endswith("_s") and "per_s" not in name:
        return "s"
    if name.endswith("_bytes"):
        return "B"
    return ""


def higher_is_better(source: str, direction: str | None = None) -> bool:
    if direction in ("min", "max"):
        return direction == "min"
    return source.rpartition(".")[2].endswith(_HIGHER_IS_BETTER)


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


# -- heatmap ------------------------------------------------------------------------------------
@dataclass
class HeatRow:
    tag: str
    run_id: str
    href: str
    decision: str
    created: str
    digest: str
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


@dataclass
class RunHead:
    run_id: str
    tag: str | None
    digest: str | None
    created_at: datetime
    decision: str
    gates: list[GateCellData]


def _cell_title(tag: str, gate: str, g: GateCellData | None) -> str:
    if g is None:
        return f"{tag} · {gate}: not in policy for this run"
    text = f"{tag} · {gate}: {STATUS_LABEL.get(g.status, g.status)}"
    if g.value is not None:
        text += f" · value {_fmt(g.value)}"
    if g.threshold is not None:
        text += f" · threshold {_fmt(g.threshold)}"
    if g.baseline is not None:
        text += f" · baseline {_fmt(g.baseline)}"
    return text


@lru_cache(maxsize=65536)
def _fmt(v: float) -> str:
    # Thresholds and baselines repeat across thousands of cells.
    return fmt_value(v)


def heads_from_runs(runs: Iterable[RunRecord]) -> list[RunHead]:
    return [
        RunHead(
            run_id=r.run_id, tag=r.image.tag, digest=r.image.digest, created_at=r.created_at,
            decision=r.decision.value,
            gates=[GateCellData(g.name, g.status.value, g.value, g.threshold, g.baseline)
                   for g in r.gates],
        )
        for r in runs
    ]


def build_heatmap(heads: list[RunHead], *, href: str = "runs/{run_id}/report.html") -> Heatmap:
    """Latest run per tag (newest tag first) against the union of gates (policy order of first sight)."""
    latest: dict[str, RunHead] = {}
    for h in heads:
        key = h.tag or "(untagged)"
        cur = latest.get(key)
        if cur is None or h.created_at > cur.created_at:
            latest[key] = h
    ordered = sorted(latest.items(), key=lambda kv: kv[1].created_at, reverse=True)
    gates: dict[str, None] = {}
    for _, h in sorted(ordered, key=lambda kv: kv[1].created_at):
        for g in h.gates:
            gates.setdefault(g.name, None)
    names = list(gates)
    red = Redactor()
    safe_names = [red(n) for n in names]
    # Escaped once here; the numbers formatted into titles need no escaping, so cells are plain f-strings.
    esc_names = [str(escape(n)) for n in safe_names]
    totals = dict.fromkeys(("pass", "warn", "fail", "not_run"), 0)
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
        rows.append(HeatRow(
            tag=stag, run_id=h.run_id, href=href.format(run_id=h.run_id), decision=h.decision,
            created=f"{h.created_at:%Y-%m-%d %H:%M}", digest=(h.digest or "")[7:19], statuses=statuses,
            cells=Markup("".join(parts)),
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
    op = {"max": "≤ ", "min": "≥ "}.get(g.direction or "", "")
    interval = ""
    if g.ci_low is not None and g.ci_high is not None:
        interval = f"[{fmt_value(g.ci_low, unit)}, {fmt_value(g.ci_high, unit)}]"
    diff = ""
    if g.difference is not None:
        diff = ("+" if g.difference > 0 else "") + fmt_value(g.difference, unit)
    flags = " ".join(f for f, on in (("required", g.required), ("key", g.key)) if on) or "advisory"
    return VerdictRow(
        name=g.name, source=g.source, status=g.status.value, status_label=STATUS_LABEL[g.status.value],
        value=fmt_value(g.value, unit), threshold=(op + fmt_value(g.threshold, unit)) if g.threshold is not None
        else "", baseline=fmt_value(g.baseline, unit) if g.baseline is not None else "", difference=diff,
        interval=interval, p_value="" if g.p_value is None else f"{g.p_value:.3g}",
        mde="" if g.mde is None else fmt_value(g.mde, unit), flags=flags, reason=g.reason,
    )


def failing_gates(run: RunRecord) -> list[GateVerdict]:
    """Gates that block: failed ones, and required ones that did not run."""
    return [g for g in run.gates
            if g.status is GateStatus.FAIL or (g.status is GateStatus.NOT_RUN and g.required)]


@dataclass
class Finding:
    id: str
    severity: str
    package: str
    installed: str
    fixed: str
    title: str
    target: str


def _pick(d: dict[str, Any], *keys: str) -> str:
    for k in keys:
        v = d.get(k)
        if v not in (None, ""):
            return str(v)
    return ""


def scan_findings(details: dict[str, Any]) -> list[Finding]:
    """Findings from the scan stage's details: its own `findings` list, or a raw trivy report
    (`Results[].Vulnerabilities/Secrets/Misconfigurations`, SchemaVersion 2) kept as-is."""
    raw: list[tuple[dict[str, Any], str]] = []
    for key in ("findings", "vulnerabilities"):
        if isinstance(details.get(key), list):
            raw += [(f, "") for f in details[key] if isinstance(f, dict)]
    # The scan stage keeps its parsed TrivyReport (pipeline/supplychain/trivy_report.py) under "report".
    typed = details.get("report")
    if isinstance(typed, dict):
        for key in ("vulnerabilities", "secrets", "misconfigs"):
            raw += [(f, "") for f in typed.get(key) or [] if isinstance(f, dict)]
    report = details.get("trivy") if isinstance(details.get("trivy"), dict) else details
    for res in report.get("Results") or []:
        if not isinstance(res, dict):
            continue
        tgt = str(res.get("Target", ""))
        for key in ("Vulnerabilities", "Secrets", "Misconfigurations"):
            raw += [(f, tgt) for f in res.get(key) or [] if isinstance(f, dict)]
    out = [
        Finding(
            id=_pick(f, "id", "VulnerabilityID", "vulnerability_id", "rule", "RuleID", "ID", "AVDID"),
            severity=_pick(f, "severity", "Severity").upper() or "UNKNOWN",
            package=_pick(f, "package", "pkg", "PkgName", "pkg_name", "category", "Category"),
            installed=_pick(f, "installed", "InstalledVersion", "installed_version"),
            fixed=_pick(f, "fixed", "FixedVersion", "fixed_version"),
            title=_pick(f, "title", "Title", "message", "Message", "Description")[:200],
            target=_pick(f, "target", "Target") or tgt,
        )
        for f, tgt in raw
    ]
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
    status: str
    duration: str
    reason: str


def _details_table(details: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for k, v in details.items():
        text = v if isinstance(v, str) else json.dumps(v, default=str)
        rows.append((k, text if len(text) <= 300 else text[:300] + "…"))
    return rows


@dataclass
class RunView:
    run: RunRecord
    title: str
    short_digest: str
    verdicts: list[VerdictRow]
    failing: list[VerdictRow]
    stages: list[StageRow]
    charts: dict[str, Any]
    boot_rows: list[tuple[str, str]]
    scan_counts: list[tuple[str, str]]
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
    boot = run.stages.get("boot")
    boot_rows: list[tuple[str, str]] = []
    if boot is not None:
        ms = [("port accepts", boot.metrics.get("port_open_s")), ("health 200", boot.metrics.get("health_ok_s")),
              ("first completion", boot.metrics.get("first_completion_s")),
              ("load time", boot.metrics.get("load_time_s"))]
        charts["milestones"] = svg.milestones(ms, title="Load-time milestones from container start")
        boot_rows = [(k, fmt_value(v, unit_of("boot." + k))) for k, v in boot.metrics.items()]
    dims = dimension_means(run)
    if dims:
        bdims = dimension_means(baseline) if baseline else {}
        series = ["this run"] + ([base_label] if bdims else [])
        rows = [(d, [v] + ([bdims.get(d)] if bdims else [])) for d, v in dims.items()]
        charts["dimensions"] = svg.bars(rows, series=series, lo=0.0, hi=1.0, title="Mean score per dimension")
    scan = run.stages.get("scan")
    findings = scan_findings(scan.details) if scan else []
    scan_counts = []
    if scan is not None:
        scan_counts = [(k, fmt_value(v)) for k, v in scan.metrics.items()]
        sev = [(s, [scan.metrics.get(s)]) for s in ("critical", "high", "medium", "low") if s in scan.metrics]
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
        verdicts=verdicts,
        failing=[v for v in verdicts if v.name in fail_names],
        stages=[StageRow(s.stage, s.status.value, fmt_value(s.duration_s, "s") if s.duration_s else "",
                         s.reason or "") for s in run.stages.values()],
        charts=charts,
        boot_rows=boot_rows,
        scan_counts=scan_counts,
        findings=findings[:max_findings],
        n_findings=len(findings),
        signature=_details_table(sign.details) if sign else [],
        sign_status=(sign.status.value + (f": {sign.reason}" if sign.reason else "")) if sign else "no sign stage",
        promotion=run.promotion,
        worst=worst_items(ev.items) if ev else [],
        baseline_label=base_label,
    )


# -- compare ------------------------------------------------------------------------------------
def compare_data(runs: list[RunRecord]) -> dict[str, Any]:
    """Latest run per tag, and the metrics the compare page can put side by side."""
    latest: dict[str, RunRecord] = {}
    for r in runs:
        key = r.image.tag or "(untagged)"
        if key not in latest or r.created_at > latest[key].created_at:
            latest[key] = r
    ordered = sorted(latest.values(), key=lambda r: r.created_at, reverse=True)
    metrics: dict[str, bool] = {m: higher_is_better(m) for m in COMPARE_METRICS}
    for r in ordered:
        for g in r.gates:
            metrics[g.source] = higher_is_better(g.source, g.direction)
    present = [m for m in metrics if any(r.metric(m) is not None for r in ordered)]
    red = Redactor()
    return {
        "metrics": [{"name": m, "unit": unit_of(m), "higher_better": metrics[m]} for m in present],
        "tags": [
            {"tag": red(r.image.tag or "(untagged)"), "run_id": r.run_id, "decision": r.decision.value,
             "values": [r.metric(m) for m in present],
             "dims": dimension_means(r)}
            for r in ordered
        ],
    }
