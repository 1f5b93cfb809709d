"""The `sign:` section of gates.yaml for the gate engine's section registry (`scan:` is adapted by
`pipeline.gates.builtin_sections` from `scan_policy`).

```yaml
sign:
  required: true   # the digest must carry a signature that verified against the configured key
```
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.config import describe_validation_error
from pipeline.errors import BadInput
from pipeline.gates.sections import SectionContext, SectionPlugin, register_section
from pipeline.models import GateStatus, GateVerdict, RunRecord


class SignPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required: bool = True


def _validate(raw: dict[str, Any] | None, where: str) -> BaseModel:
    try:
        return SignPolicy.model_validate(raw or {})
    except ValidationError as exc:
        raise BadInput(describe_validation_error(exc), where=f"{where}: sign") from exc


def sign_gate_verdict(policy: SignPolicy, run: RunRecord) -> GateVerdict:
    base: dict[str, Any] = {"name": "sign", "source": "sign.verified", "threshold": 1.0, "direction": "min",
                            "required": policy.required}
    res = run.stage("sign")
    value = None if res is None else res.metrics.get("verified")
    if value is None:
        why = "no sign stage result" if res is None else f"sign stage {res.status.value}: {res.reason or ''}"
        return GateVerdict(status=GateStatus.NOT_RUN, reason=why, **base)
    ok = value >= 1.0
    reason = "signature verified" if ok else f"signature not verified: {res.reason or res.status.value}"  # type: ignore[union-attr]
    return GateVerdict(status=GateStatus.PASS if ok else GateStatus.FAIL, value=value, reason=reason, **base)


def _evaluate(section: BaseModel, run: RunRecord, ctx: SectionContext) -> list[GateVerdict]:
    return [sign_gate_verdict(section, run)]  # type: ignore[arg-type]


register_section(SectionPlugin(name="sign", validate=_validate, evaluate=_evaluate, owner="supplychain"))
