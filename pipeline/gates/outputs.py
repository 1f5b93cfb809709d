"""What a gate evaluation leaves behind: `verdict.json` and JUnit XML (one testcase per gate). The terminal
table of the verdicts is `pipeline.report.verdict_table`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.gates.policy import Policy
from pipeline.models import GateStatus, RunRecord
from pipeline.redact import redact, redact_text

if TYPE_CHECKING:  # the engine loads scipy; writing its outputs needs only its type
    from pipeline.gates.engine import Evaluation

VERDICT_SCHEMA = 1


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
            "multiplicity": policy.multiplicity,
            "drift_allowance": policy.drift_allowance,
            "min_n": policy.min_n,
            "power": policy.power,
            "planning_risk": policy.planning_risk,
            "resamples": policy.resamples,
        },
        **ev.to_json(),
    }
    return redact(doc)


def write_verdict_json(ev: Evaluation, run: RunRecord, policy: Policy, path: Path) -> Path:
    path.write_text(json.dumps(verdict_document(ev, run, policy), indent=2, sort_keys=False) + "\n")
    return path


def junit_xml(ev: Evaluation, run: RunRecord) -> ET.ElementTree:
    """One testcase per gate: fail -> <failure>; not_run -> <failure type="not_run"> when required, else
    <skipped>; inconclusive -> <error type="inconclusive"> when required (the gate could not decide, which
    a CI test report shows apart from a failure), else <skipped>."""
    failures = sum(
        1 for v in ev.verdicts if v.status is GateStatus.FAIL or (v.status is GateStatus.NOT_RUN and v.required)
    )
    errors = sum(1 for v in ev.verdicts if v.status is GateStatus.INCONCLUSIVE and v.required)
    skipped = sum(
        1 for v in ev.verdicts if v.status in (GateStatus.NOT_RUN, GateStatus.INCONCLUSIVE) and not v.required
    )
    suites = ET.Element("testsuites", name="llmgate", tests=str(len(ev.verdicts)), failures=str(failures),
                        errors=str(errors))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"llmgate.gates.{run.target}",
        tests=str(len(ev.verdicts)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
    )
    props = ET.SubElement(suite, "properties")
    for k, val in (("run_id", run.run_id), ("decision", ev.decision.value), ("decision_reason", ev.reason),
                   ("baseline", ev.baseline.reason)):
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
        elif v.status is GateStatus.INCONCLUSIVE:
            why = f"inconclusive ({v.details.outcome}): {msg}"
            if v.required:
                ET.SubElement(case, "error", message=why, type="inconclusive" + ("_key" if v.key else "")).text = why
            else:
                ET.SubElement(case, "skipped", message=why)
        elif v.status is GateStatus.WARN:
            ET.SubElement(case, "system-out").text = f"warning: {msg}"
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(ev: Evaluation, run: RunRecord, path: Path) -> Path:
    junit_xml(ev, run).write(path, encoding="utf-8", xml_declaration=True)
    return path
