"""The supply-chain sections of a gate policy, as plug-ins for the gate engine: `scan:` (rules in
`scan_policy`) and `sign:`. Callers pass `SECTIONS` to `load_policy` and `evaluate`.

```yaml
sign:
  required: true   # the digest must carry a signature that verified against the configured key
```
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.bench.reuse_policy import REUSE_SECTION
from pipeline.config import describe_validation_error
from pipeline.errors import BadInput
from pipeline.gates.sections import SectionContext, SectionPlugin
from pipeline.models import GateStatus, GateVerdict, RunRecord, Stage
from pipeline.supplychain.scan_policy import SCAN_SECTION


class SignPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required: bool = True


def _validate(raw: dict[str, Any] | None, where: str) -> BaseModel:
    try:
        return SignPolicy.model_validate(raw or {})
    except ValidationError as exc:
        raise BadInput(describe_validation_error(exc), where=where) from exc


def sign_gate_verdict(policy: SignPolicy, run: RunRecord) -> GateVerdict:
    base: dict[str, Any] = {"name": "sign", "source": "sign.verified", "threshold": 1.0, "direction": "min",
                            "required": policy.required}
    res = run.stage(Stage.SIGN.value)
    value = None if res is None else res.metrics.get("verified")
    if res is None or value is None:
        why = "no sign stage result" if res is None else f"sign stage {res.status.value}: {res.reason or ''}"
        return GateVerdict(status=GateStatus.NOT_RUN, reason=why, **base)
    ok = value >= 1.0
    reason = "signature verified" if ok else f"signature not verified: {res.reason or res.status.value}"
    return GateVerdict(status=GateStatus.PASS if ok else GateStatus.FAIL, value=value, reason=reason, **base)


def _evaluate(section: BaseModel, run: RunRecord, ctx: SectionContext) -> list[GateVerdict]:
    assert isinstance(section, SignPolicy)
    return [sign_gate_verdict(section, run)]


def _relaxations(parent: BaseModel, child: BaseModel) -> list[tuple[str, str]]:
    assert isinstance(parent, SignPolicy) and isinstance(child, SignPolicy)
    return [("required", "required cannot be turned off")] if parent.required and not child.required else []


SIGN_SECTION = SectionPlugin(
    name="sign", stage=Stage.SIGN, reads="verified", validate=_validate, evaluate=_evaluate,
    relaxations=_relaxations,
)

# `reuse:` (how old a reused bench may be) is not supply chain, but every caller loads policies through here.
SECTIONS: tuple[SectionPlugin, ...] = (SCAN_SECTION, SIGN_SECTION, REUSE_SECTION)
