"""Details of the eval stage: which scorer produced each dimension, and how collection went."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.schemas.base import Details


class ScorerInfo(BaseModel):
    """Which scorer produced a dimension, precisely enough to reproduce or distrust it. `id` is the
    key its calibration is stored under."""

    model_config = ConfigDict(extra="forbid")

    id: str
    version: str = ""
    embeddings: str | None = None
    status: str = "run"  # "run" | "not run: ..." | "failed: ..."


class CollectionStats(BaseModel):
    """What collecting the answers did."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    model: str
    n_items: int
    failed: int
    retries_used: int
    retry_budget: int
    budget_exhausted: bool
    concurrency: int
    max_tokens: int
    timeout_s: float
    duration_s: float
    deadline_s: float | None = None
    deadline_hit: bool = False


class EvalDetails(Details):
    stage: Literal["eval"] = "eval"
    base_url: str | None
    model: str | None
    ground_truth: dict[str, Any]
    collection: CollectionStats | None
    scorers: dict[str, ScorerInfo]
    refusal_counts: dict[str, int] = Field(default_factory=dict)
    judge: dict[str, Any] | None = None  # the judge run, without any key
    latency_slo_s: float
    n_answer: int
    n_refuse: int
    scored_at: str
    rescored_from: list[dict[str, Any]] = Field(default_factory=list)  # earlier scorer sets, newest last
