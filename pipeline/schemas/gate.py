"""Details of the gate stage: every verdict, the decision, and under which policy and against which
baseline they were made. `RunRecord.gates` reads the verdicts here; `.decision` mirrors the latest gate stage."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.schemas.base import Details


class GateStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"  # passed, with a note a person should read (never a doubt about the release itself)
    FAIL = "fail"
    NOT_RUN = "not_run"  # its source stage or metric is missing
    INCONCLUSIVE = "inconclusive"  # the data could not show it either way: never a pass


class Approval(BaseModel):
    """A person's recorded decision to let a first release (no baseline) go on what the gates measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str = Field(min_length=1, max_length=200)
    at: datetime
    reason: str = Field(min_length=15, max_length=2000)


class VerdictDetails(BaseModel):
    """How the engine reached a verdict: the named outcome, the test and its figures. Every field is
    optional because each gate kind fills a different subset."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    outcome: str | None = None  # pipeline.gates.outcomes.Outcome
    origin: str | None = None  # the policy file that defined the gate
    overrides: dict[str, list[Any]] | None = None  # fields a child policy changed, with (parent, child) values
    policy_reason: str | None = None
    threshold_met: bool | None = None
    would_be: str | None = None  # the status an uncalibrated gate would have had
    calibration: str | None = None
    # the comparison with the baseline
    test: str | None = None
    difference_unit: str | None = None
    against: str | None = None
    baseline_run_id: str | None = None
    baseline_samples: str | None = None  # same_run | stored
    drift_allowance: float | None = None
    tested_shift: float | None = None
    margin: float | None = None
    alpha: float | None = None
    p_raw: float | None = None
    holm_family: int | None = None
    n: int | None = None
    n_new: int | None = None
    n_baseline: int | None = None
    n_needed: int | None = None
    median_new: float | None = None
    median_baseline: float | None = None
    median_ratio: float | None = None
    cliffs_delta: float | None = None
    cles: float | None = None
    paired_items: int | None = None
    paired_fraction_low: bool | None = None
    discordant_lost_gained: list[int] | None = None
    tested_margin: float | None = None  # the margin the test used (scorer error, drift allowance applied)
    scorer_error: float | None = None  # the calibrated scorer's plausible error rate (1 - Wilson lower)
    quantile: float | None = None  # tail comparison: the quantile compared (0.99 for a p99 gate)
    exceed_new_baseline: list[int] | None = None  # tail comparison: samples above the common cut, per side
    planning_sd: float | None = None  # the spread the power was computed from (regression-proof)
    subset: str | None = None  # compared only the items with this expected behaviour
    # per-category collapse check
    categories: list[str] | None = None  # the categories that collapsed beyond category_margin
    categories_checked: int | None = None
    # a disturbed bench machine
    disturbance: float | None = None  # share of the machine taken by other work (steal, other processes)
    explainable_bound: float | None = None  # the worst value the disturbance could explain
    approval: str | None = None  # a first release let through by a recorded person
    # a section's findings
    blocking: list[str] | None = None
    problems: list[str] | None = None

    def note(self, **values: Any) -> None:
        """Set several fields at once (each validated as assigned)."""
        for name, value in values.items():
            setattr(self, name, value)


class GateVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str
    source: str  # "stage.metric"
    status: GateStatus
    value: float | None = None
    threshold: float | None = None
    direction: str | None = None  # "max" (value <= threshold) or "min" (value >= threshold)
    baseline: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    mde: float | None = None  # smallest change the data could detect at this n
    required: bool = True
    key: bool = False
    reason: str = ""
    details: VerdictDetails = Field(default_factory=VerdictDetails)


class BaselineInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str  # same_ground_truth | rescored | first_release | incomparable
    run_id: str | None = None
    items_comparable: bool = False
    reason: str = ""
    model_digest: str | None = None  # the baseline release's weights, when known
    other_weights: bool = False  # the baseline served other weights than this release


class GateDetails(Details):
    stage: Literal["gate"] = "gate"
    policy_name: str
    policy_files: list[str]
    policy_sha256: str
    baseline: BaselineInfo
    warnings: list[str] = Field(default_factory=list)
    verdicts: list[GateVerdict] = Field(default_factory=list)
    decision: str
    reason: str
    approval: Approval | None = None  # a first release's recorded human approval, when one was used
