"""Section plug-ins the gate package wires up itself, for owners who exposed plain functions.

`scan:` is validated and evaluated by the supply-chain package (`pipeline.supplychain.scan_policy`,
owner: supply chain); this module only adapts its two functions to the `SectionPlugin` shape. An
absent `scan:` section means no scan gate in that policy; gates.yaml has one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pipeline.gates.sections import SectionContext, SectionPlugin, register_section
from pipeline.models import GateVerdict, RunRecord


def _scan_validate(raw: dict[str, Any] | None, where: str) -> BaseModel:
    from pipeline.supplychain.scan_policy import policy_from_gates

    return policy_from_gates({"scan": raw} if raw is not None else {}, where=where)


def _scan_evaluate(section: BaseModel, run: RunRecord, ctx: SectionContext) -> list[GateVerdict]:
    from pipeline.supplychain.scan_policy import load_ignores, scan_gate_verdict

    ignores = load_ignores(section, base=ctx.policy_dir)  # type: ignore[arg-type]
    return [scan_gate_verdict(run, section, ignores=ignores)]  # type: ignore[arg-type]


try:
    import pipeline.supplychain.scan_policy  # noqa: F401
except ModuleNotFoundError as exc:  # the supply-chain package is not in this tree yet
    if exc.name not in ("pipeline.supplychain", "pipeline.supplychain.scan_policy"):
        raise
else:
    register_section(SectionPlugin(name="scan", validate=_scan_validate, evaluate=_scan_evaluate, owner="supplychain"))
