"""What a gate evaluation leaves behind: a rich table, `verdict.json`, JUnit XML (one testcase per gate)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rich.table import Table

from pipeline.gates.engine import Evaluation
from pipeline.gates.policy import Policy
from pipeline.models import Decision, GateStatus, GateVerdict, RunRecord
from pipeline.redact import redact, redact_text

VERDICT_SCHEMA = 1
_STYLE = {
    GateStatus.PASS: "green",
    GateStatus.WARN: "yellow",
    GateStatus.FAIL: "bold red",
    GateStatus.NOT_RUN: "magenta",
}


def _num(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.1%}" if pct else f"{x:.4g}"


def _relative(v: GateVerdict) -> bool:
    return str(v.details.get("difference_unit", "")).startswith("relative")


def verdict_table(verdicts: list[GateVerdict], decision: Decision, reason: str, title: str = "gates") -> Table:
    t = Table(title=title, show_lines=False)
    for col in ("gate", "status", "value", "threshold", "baseline", "difference [CI]", "p (Holm)", "MDE", "", "reason"):
        t.add_column(col, overflow="fold")
    for v in verdicts:
        rel = _relative(v)
        diff = "—"
        if v.difference is not None:
            diff = f"{_num(v.difference, rel)} [{_num(v.ci_low, rel)}, {_num(v.ci_high, rel)}]"
        op = {"max": "≤ ", "min": "≥ "}.get(v.direction or "", "")
        flags = ("key " if v.key else "") + ("" if v.required else "optional")
        t.add_row(
            v.name,
            f"[{_STYLE[v.status]}]{v.status.value}[/]",
            _num(v.value),
            f"{op}{_num(v.threshold)}" if v.threshold is not None else "—",
            _num(v.baseline),
            diff,
            _num(v.p_value),
            _num(v.mde, rel) if v.mde is not None else "—",
            flags.strip(),
            redact_text(v.reason),
        )
    t.caption = f"{decision.value.upper()}: {redact_text(reason)}"
    return t


def verdict_document(ev: Evaluation, run: RunRecord, policy: Policy) -> dict[str, Any]:
    doc = {
        "schema_version": VERDICT_SCHEMA,
        "run_id": run.run_id,
        "target": run.target,
        "image": run.image.by_digest if run.image.digest else run.image.by_tag,
        "ground_truth": run.ground_truth.model_dump() if run.ground_truth else None,
        "policy": {
            "files": policy.files,
            "sha256": policy.sha256,
            "seed": policy.seed,
            "alpha": policy.alpha,
            "resamples": policy.resamples,
        },
        **ev.to_json(),
    }
    return redact(doc)


def write_verdict_json(ev: Evaluation, run: RunRecord, policy: Policy, path: Path) -> Path:
    path.write_text(json.dumps(verdict_document(ev, run, policy), indent=2, sort_keys=False) + "\n")
    return path


def junit_xml(ev: Evaluation, run: RunRecord) -> ET.ElementTree:
    """One testcase per gate: fail -> <failure>; not_run -> <failure> when required, else <skipped>."""
    failures = sum(
        1 for v in ev.verdicts if v.status is GateStatus.FAIL or (v.status is GateStatus.NOT_RUN and v.required)
    )
    skipped = sum(1 for v in ev.verdicts if v.status is GateStatus.NOT_RUN and not v.required)
    suites = ET.Element("testsuites", name="llmgate", tests=str(len(ev.verdicts)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"llmgate.gates.{run.target}",
        tests=str(len(ev.verdicts)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    props = ET.SubElement(suite, "properties")
    for k, val in (("run_id", run.run_id), ("decision", ev.decision.value), ("baseline", ev.baseline.reason)):
        ET.SubElement(props, "property", name=k, value=redact_text(str(val)))
    for v in ev.verdicts:
        case = ET.SubElement(suite, "testcase", name=v.name, classname=f"llmgate.{v.source}")
        msg = redact_text(v.reason)
        if v.status is GateStatus.FAIL:
            ET.SubElement(case, "failure", message=msg, type="gate_failed" + ("_key" if v.key else "")).text = msg
        elif v.status is GateStatus.NOT_RUN:
            if v.required:
                ET.SubElement(case, "failure", message=msg, type="not_run").text = msg
            else:
                ET.SubElement(case, "skipped", message=msg)
        elif v.status is GateStatus.WARN:
            ET.SubElement(case, "system-out").text = f"warning: {msg}"
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(ev: Evaluation, run: RunRecord, path: Path) -> Path:
    junit_xml(ev, run).write(path, encoding="utf-8", xml_declaration=True)
    return path
