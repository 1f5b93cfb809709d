"""Gate values per tag in the Prometheus text exposition format (0.0.4).

Two ways out: a textfile for node_exporter's textfile collector, and a push to a Pushgateway
(one group per tag: PUT /metrics/job/llmgate/tag/<tag>, which replaces that tag's previous push).
Metric names are documented in `METRICS`; the Grafana dashboard in manifests/monitoring/ uses them.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Iterable
from pathlib import Path

import httpx

from pipeline.errors import BadInput, InfraError
from pipeline.models import RunRecord
from pipeline.redact import redact_text

METRICS: dict[str, tuple[str, str]] = {
    "llmgate_gate_value": ("gauge", "Value of the metric a gate reads, latest run of the tag."),
    "llmgate_gate_threshold": ("gauge", "Threshold of the gate."),
    "llmgate_gate_baseline": ("gauge", "Baseline value the gate compared against."),
    "llmgate_gate_passed": ("gauge", "1 pass or warning, 0 fail, -1 not run, -2 inconclusive."),
    "llmgate_gate_status": ("gauge", "1 for the gate's current status (pass, warn, fail, not_run, inconclusive)."),
    "llmgate_run_decision": ("gauge", ("1 for the decision of the tag's latest run (pass, blocked, inconclusive, "
                                       "error, pending).")),
    "llmgate_run_timestamp_seconds": ("gauge", "Creation time of the tag's latest run (Unix seconds)."),
}
_PASSED = {"pass": 1, "warn": 1, "fail": 0, "not_run": -1, "inconclusive": -2}


def _label(v: str) -> str:
    return redact_text(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def latest_per_tag(runs: Iterable[RunRecord]) -> dict[str, RunRecord]:
    out: dict[str, RunRecord] = {}
    for r in runs:
        tag = r.image.tag or "untagged"
        if tag not in out or r.created_at > out[tag].created_at:
            out[tag] = r
    return out


def _samples(run: RunRecord, with_tag: bool) -> dict[str, list[str]]:
    base = {"target": run.target}
    if with_tag:
        base = {"tag": run.image.tag or "untagged", **base}
    series: dict[str, list[str]] = {name: [] for name in METRICS}

    def add(name: str, labels: dict[str, str], value: float) -> None:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        series[name].append(f"{name}{{{text}}} {_num(value)}")

    for g in run.gates:
        labels = {**base, "gate": g.name, "source": g.source}
        if g.value is not None:
            add("llmgate_gate_value", labels, g.value)
        if g.threshold is not None:
            add("llmgate_gate_threshold", labels, g.threshold)
        if g.baseline is not None:
            add("llmgate_gate_baseline", labels, g.baseline)
        add("llmgate_gate_passed", labels, _PASSED[g.status.value])
        for status in _PASSED:
            add("llmgate_gate_status", {**labels, "status": status}, 1.0 if g.status.value == status else 0.0)
    for decision in ("pass", "blocked", "inconclusive", "error", "pending"):
        add("llmgate_run_decision", {**base, "decision": decision, "digest": run.image.digest or ""},
            1.0 if run.decision.value == decision else 0.0)
    add("llmgate_run_timestamp_seconds", base, run.created_at.timestamp())
    return series


def exposition(runs: Iterable[RunRecord], *, with_tag: bool = True) -> str:
    """The text format for the latest run of every tag; HELP/TYPE once per metric family."""
    merged: dict[str, list[str]] = {name: [] for name in METRICS}
    for run in latest_per_tag(runs).values():
        for name, lines in _samples(run, with_tag).items():
            merged[name] += lines
    out = []
    for name, lines in merged.items():
        if not lines:
            continue
        kind, help_text = METRICS[name]
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"


def write_textfile(runs: Iterable[RunRecord], path: Path | str) -> Path:
    """Atomic write (node_exporter may read at any moment); the name must end in .prom for the collector."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(exposition(runs))
    tmp.replace(path)
    return path


def group_path(tag: str) -> str:
    """`/metrics/job/llmgate/tag/<tag>`; base64url form when the tag cannot sit in a URL path segment."""
    if tag and all(c.isalnum() or c in "._-" for c in tag):
        return f"/metrics/job/llmgate/tag/{tag}"
    enc = base64.urlsafe_b64encode(tag.encode()).decode() or "="
    return f"/metrics/job/llmgate/tag@base64/{enc}"


def push(runs: Iterable[RunRecord], url: str, *, timeout_s: float = 10.0,
         client: httpx.Client | None = None) -> list[str]:
    """PUT each tag's group to the Pushgateway at `url`; returns the group paths pushed."""
    if not url.startswith(("http://", "https://")):
        raise BadInput(f"not an http(s) URL: {url!r}", where="--pushgateway")
    own = client is None
    http = client or httpx.Client(timeout=timeout_s)
    pushed = []
    try:
        for tag, run in latest_per_tag(runs).items():
            path = group_path(tag)
            # The tag is a grouping label; repeating it inside the body is allowed only with the same value,
            # so the body carries no tag label at all.
            body = exposition([run], with_tag=False)
            try:
                resp = http.put(url.rstrip("/") + path, content=body.encode(),
                                headers={"Content-Type": "text/plain; version=0.0.4"})
            except httpx.HTTPError as exc:
                raise InfraError(f"cannot push metrics: {exc}", where=redact_text(url)) from exc
            if resp.status_code >= 300:
                raise InfraError(f"push rejected: HTTP {resp.status_code}: {redact_text(resp.text[:300])}",
                                 where=redact_text(url + path))
            pushed.append(path)
    finally:
        if own:
            http.close()
    return pushed
