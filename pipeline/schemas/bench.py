"""Details of the bench stage: how the load was generated and what the server said about it.
Definitions of every figure: docs/METRICS.md."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.schemas.base import Details


class DisturbanceLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steal: float = Field(default=0.05, ge=0, le=1)  # share of CPU time stolen, before or during
    busy_before: float = Field(default=0.5, ge=0, le=1)  # share of CPU time busy in the quiet window
    # share of CPU time used during the bench by processes that are neither the bench nor the server
    others_during: float = Field(default=0.2, ge=0, le=1)


class EnvironmentReport(BaseModel):
    """The readings and the judgement; `metrics()` are the bench stage's env_* metrics."""

    model_config = ConfigDict(extra="forbid")

    cpus: int
    window_before_s: float
    window_during_s: float
    steal_before: float | None
    steal_during: float | None
    busy_before: float | None
    load_before: float | None  # 1-minute load average per CPU, for people
    load_during: float | None
    # CPU time of other processes during the bench (None: the server's processes could not be told apart)
    others_during: float | None = None
    limits: DisturbanceLimits
    disturbed: bool
    reasons: list[str] = Field(default_factory=list)
    unreadable: str | None = None  # why nothing could be read (not Linux, no /proc): nothing judged

    @property
    def share(self) -> float | None:
        """The share of the machine other work took while latency was measured (what a slowdown can be
        blamed on): stolen plus used by other processes during the bench when both were read, else the
        largest reading of steal or busy-before."""
        if self.unreadable:
            return None
        if self.others_during is not None:
            return min(1.0, (self.steal_during or 0.0) + self.others_during)
        readings = [v for v in (self.steal_before, self.steal_during, self.busy_before) if v is not None]
        return max(readings) if readings else None

    def metrics(self) -> dict[str, float | None]:
        return {
            "env_steal_before": self.steal_before,
            "env_steal_during": self.steal_during,
            "env_busy_before": self.busy_before,
            "env_load_before": self.load_before,
            "env_load_during": self.load_during,
            "env_others_during": self.others_during,
            "env_disturbance": self.share,
            "env_disturbed": None if self.unreadable else float(self.disturbed),
        }


class BenchAttempt(BaseModel):
    """One measurement of the bench stage; a disturbed or underpowered one is repeated (bounded)."""

    model_config = ConfigDict(extra="forbid")

    requests: int
    disturbed: bool
    repeat_because: str | None = None  # why it was (or would have been) measured again


class SameRunBaseline(BaseModel):
    """The baseline release measured in this run, interleaved with the candidate (block by block)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    image: str
    model_digest: str | None
    base_url: str
    block_size: int
    blocks: int
    metrics: dict[str, float | None] = Field(default_factory=dict)


class BenchDetails(Details):
    stage: Literal["bench"] = "bench"
    base_url: str
    model: str | None
    shape: str
    prompts: str
    exact_input_tokens: bool
    requests: int
    requests_sized: str = ""  # where the request count came from (the policy's need, or the config)
    warmup: int
    concurrency: int | None = None
    rate_rps: float | None = None
    max_tokens: int
    ignore_eos: str  # "sent" | "rejected by server: ..." | "not requested"
    ignore_eos_honoured: float | None = None  # share of OK requests with N == max_tokens
    tokens_estimated: bool
    tokens_source: dict[str, int] = Field(default_factory=dict)
    # requests whose usage.completion_tokens was implausible against what was streamed (and replaced by
    # the client's own count), and the first such discrepancy in words
    token_count_discrepancies: int = 0
    token_count_discrepancy: str | None = None
    error_reasons: dict[str, int] = Field(default_factory=dict)
    slo: dict[str, float | None] = Field(default_factory=dict)
    server_metrics: dict[str, Any] = Field(default_factory=dict)
    floor: dict[str, Any] | None = None
    floor_reason: str = ""
    sweep: list[dict[str, Any]] = Field(default_factory=list)
    saturation_concurrency: int | None = None
    send_lag_p99_s: float | None = None  # Poisson: how late requests left vs their arrival time
    rx_timestamps: str = "userspace"  # kernel | mixed | userspace: who stamped the chunks' arrival
    environment: EnvironmentReport | None = None  # noisy-neighbour readings before and during the bench
    same_run_baseline: SameRunBaseline | None = None
    attempts: list[BenchAttempt] = Field(default_factory=list)  # every measurement; the last one is recorded
