"""How old a bench may be and still stand for this run: the `reuse:` section of a gate policy.

An unchanged release re-run on the same machine need not be measured again: the runner reuses a stored
boot and bench whose inputs are identical (image and weights digests, bench and boot settings, the
same-run baseline it was interleaved with, llmgate's version) and whose machine fingerprint is this
machine's (`pipeline.orchestrate.reuse`), while the measurement is younger than `bench_max_age_s` and
was not taken on a disturbed machine. The policy sets the age because it decides what a pass means; a
policy extending a locked one may shorten it, never lengthen it.

```yaml
reuse:
  bench_max_age_s: 3600   # 0: always measure again
```

The section also gates: `bench_reuse` passes a bench measured in the run, or one reused within the age
from an undisturbed measurement, and fails any other reused bench (a record edited by hand, a run gated
again under a stricter policy), so the verdict never rests on stale or disturbed evidence.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import describe_validation_error
from pipeline.errors import BadInput
from pipeline.gates.sections import SectionContext, SectionPlugin
from pipeline.models import GateStatus, GateVerdict, RunRecord, Stage, StageResult, StageStatus

DEFAULT_BENCH_MAX_AGE_S = 3600.0
GATE = "bench_reuse"


class ReusePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bench_max_age_s: float = Field(default=DEFAULT_BENCH_MAX_AGE_S, ge=0, allow_inf_nan=False)


def why_not_reusable(stored: StageResult, policy: ReusePolicy, now: datetime) -> str | None:
    """Why a stored boot or bench with this run's inputs may not stand for it now (None: it may)."""
    if stored.status is not StageStatus.OK:
        return f"it is {stored.status.value}"
    if stored.stage is Stage.BENCH and stored.metrics.get("env_disturbed") != 0.0:
        # disturbed (1.0), or never judged (no reading): either way not evidence to carry forward
        return ("it was measured on a disturbed machine" if stored.metrics.get("env_disturbed") == 1.0
                else "its machine was not judged for disturbance")
    age = measured_age_s(stored, now)
    if age is None:
        return "its measurement time is unknown"
    if age > policy.bench_max_age_s:
        return f"it was measured {_ago(age)} ago, more than reuse.bench_max_age_s={policy.bench_max_age_s:g}s"
    return None


def measured_age_s(stored: StageResult, now: datetime) -> float | None:
    when = stored.finished_at or stored.started_at
    return None if when is None else max(0.0, (now - when).total_seconds())


def reuse_note(stored: StageResult, policy: ReusePolicy, now: datetime) -> str:
    """What the record and the CLI say about a reused measurement, besides the run it came from."""
    age = measured_age_s(stored, now)
    when = "" if age is None else f", measured {_ago(age)} ago"
    return f"same inputs on this machine{when}, within reuse.bench_max_age_s={policy.bench_max_age_s:g}s"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _validate(raw: dict[str, Any] | None, where: str) -> BaseModel:
    try:
        return ReusePolicy.model_validate(raw or {})
    except ValidationError as exc:
        raise BadInput(describe_validation_error(exc), where=where) from exc


def bench_reuse_verdict(policy: ReusePolicy, run: RunRecord) -> GateVerdict:
    base: dict[str, Any] = {"name": GATE, "source": "bench.reused_from", "threshold": policy.bench_max_age_s,
                            "direction": "max", "required": True}
    res = run.stage(Stage.BENCH.value)
    if res is None:
        return GateVerdict(status=GateStatus.NOT_RUN, reason="no bench stage result", **base)
    if not res.reused_from:
        return GateVerdict(status=GateStatus.PASS, value=0.0, reason="measured in this run", **base)
    # The age when this run took it: gating the run again later gives the same verdict.
    why = why_not_reusable(res, policy, run.created_at)
    age = measured_age_s(res, run.created_at)
    if why is not None:
        return GateVerdict(status=GateStatus.FAIL, value=age, reason=f"reused from run {res.reused_from}, but {why}",
                           **base)
    return GateVerdict(status=GateStatus.PASS, value=age,
                       reason=f"reused from run {res.reused_from}: {reuse_note(res, policy, run.created_at)}", **base)


def _evaluate(section: BaseModel, run: RunRecord, ctx: SectionContext) -> list[GateVerdict]:
    assert isinstance(section, ReusePolicy)
    return [bench_reuse_verdict(section, run)]


def _relaxations(parent: BaseModel, child: BaseModel) -> list[tuple[str, str]]:
    assert isinstance(parent, ReusePolicy) and isinstance(child, ReusePolicy)
    if child.bench_max_age_s > parent.bench_max_age_s:
        return [("bench_max_age_s", f"bench_max_age_s may not exceed {parent.bench_max_age_s:g}s")]
    return []


REUSE_SECTION = SectionPlugin(name="reuse", stage=Stage.BENCH, reads="reused_from", validate=_validate,
                              evaluate=_evaluate, relaxations=_relaxations)
