"""The one data model that flows through every stage.

A `RunRecord` describes the evaluation of exactly one image digest. Stages append typed
`StageResult`s, the gate engine appends `GateVerdict`s, and the record is written to the store
after every stage so that a crash never loses what was already measured.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.errors import BadInput

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageStatus(StrEnum):
    OK = "ok"  # the stage ran and produced its result
    FAILED = "failed"  # the stage ran and the thing under test misbehaved (server died, ...)
    SKIPPED = "skipped"  # the stage did not run (tool absent, not requested); never a pass
    ERROR = "error"  # the stage could not run because of infrastructure or bad input


class GateStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"  # passed, but something a person should look at (e.g. margin below MDE)
    FAIL = "fail"
    NOT_RUN = "not_run"  # its source stage or metric is missing


class Decision(StrEnum):
    PENDING = "pending"
    PASS = "pass"
    BLOCKED = "blocked"
    ERROR = "error"


class ImageRef(_Model):
    """An image identified by digest; the tag is only a label for people and dashboards."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @field_validator("digest")
    @classmethod
    def _check_digest(cls, v: str | None) -> str | None:
        if v is not None and not DIGEST_RE.match(v):
            raise ValueError(f"not a sha256 digest: {v!r}")
        return v

    @property
    def by_digest(self) -> str:
        if not self.digest:
            raise BadInput("image has no digest yet; build and push it first", where=self.repository)
        return f"{self.repository}@{self.digest}"

    @property
    def by_tag(self) -> str:
        return f"{self.repository}:{self.tag or 'latest'}"

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        """Parse `repo[:tag][@sha256:...]` (the registry host may carry a port)."""
        digest = None
        if "@" in ref:
            ref, digest = ref.split("@", 1)
        tag = None
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            ref, tag = ref.rsplit(":", 1)
        if not ref:
            raise BadInput(f"empty repository in image reference {ref!r}")
        return cls(repository=ref, tag=tag, digest=digest)


class Artifact(_Model):
    name: str
    path: str
    media_type: str = "application/octet-stream"
    sha256: str | None = None


class ItemResult(_Model):
    """One ground-truth item as answered by the server and scored per dimension.

    Scores are 0..1; `None` for a dimension that does not apply to this item. A scorer error is
    recorded in `errors[dimension]` and the score is 0.0 (a failure is never silently missing).
    """

    item_id: str
    question: str
    reference: str = ""
    expected_behaviour: str = "answer"
    category: str = ""
    response: str | None = None
    contexts: list[str] = Field(default_factory=list)  # grounding passages; faithfulness is judged against them
    latency_s: float | None = None
    ttft_s: float | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)
    error: str | None = None  # collection error (HTTP, timeout): the item failed as a whole


class StageResult(_Model):
    """What one stage produced. `metrics` are scalars gates can read (`stage.metric`),
    `samples` are per-request series for rank tests, `items` per-item eval results,
    `details` the stage's typed payload serialised (see each stage's own model)."""

    stage: str
    status: StageStatus
    reason: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    duration_s: float | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    samples: dict[str, list[float]] = Field(default_factory=dict)
    items: list[ItemResult] = Field(default_factory=list)
    artifacts: list[Artifact] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)

    def finish(self) -> StageResult:
        self.finished_at = utcnow()
        self.duration_s = (self.finished_at - self.started_at).total_seconds()
        return self


class GateVerdict(_Model):
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
    details: dict[str, Any] = Field(default_factory=dict)


class GroundTruthRef(_Model):
    version: str
    sha256: str
    n_items: int


class PromotionRecord(_Model):
    target: str
    digest: str
    mode: str  # "gitops" | "cluster" | "dry-run"
    outcome: str  # "promoted" | "aborted" | "refused" | "noop" | "failed"
    who: str = ""
    at: datetime = Field(default_factory=utcnow)
    detail: str = ""
    previous_digest: str | None = None


class RunRecord(_Model):
    schema_version: int = SCHEMA_VERSION
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    target: str = "default"
    image: ImageRef
    source_commit: str | None = None
    config_hash: str | None = None
    ground_truth: GroundTruthRef | None = None
    stages: dict[str, StageResult] = Field(default_factory=dict)
    gates: list[GateVerdict] = Field(default_factory=list)
    decision: Decision = Decision.PENDING
    decision_reason: str = ""
    baseline_run_id: str | None = None
    promotion: PromotionRecord | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.image.tag

    @property
    def digest(self) -> str | None:
        return self.image.digest

    def add_stage(self, result: StageResult) -> StageResult:
        if result.finished_at is None:
            result.finish()
        self.stages[result.stage] = result
        self.updated_at = utcnow()
        return result

    def stage(self, name: str) -> StageResult | None:
        return self.stages.get(name)

    def require_stage(self, name: str, *, ok: bool = True) -> StageResult:
        """The result of an earlier stage this one builds on, or a clear error."""
        res = self.stages.get(name)
        if res is None:
            raise BadInput(
                f"run {self.run_id} has no '{name}' stage result",
                hint=f"run `llmgate {name}` on this run first",
            )
        if ok and res.status is not StageStatus.OK:
            raise BadInput(f"run {self.run_id}: stage '{name}' is {res.status.value}: {res.reason or ''}")
        return res

    def metric(self, source: str) -> float | None:
        """Look up `stage.metric`."""
        stage, _, name = source.partition(".")
        res = self.stages.get(stage)
        return None if res is None else res.metrics.get(name)
