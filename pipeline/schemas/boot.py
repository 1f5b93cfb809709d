"""Details of the boot stage: what was started, on which GPUs, and each cold start's timeline.

A live server's address is never part of it: a booted server is a resource the runner holds for the
stages that use it, not a fact about the release."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.schemas.base import Details


class GpuInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    name: str
    driver: str
    memory_mib: int


class GpuReport(BaseModel):
    """What the runner has. `gpus` empty means none, and `reason` says why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: list[GpuInfo] = Field(default_factory=list)
    reason: str = ""


class BootRepetition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rep: int
    container_name: str
    container_id: str
    pull_s: float
    start_call_s: float
    timeline: dict[str, Any]
    log_artifact: str | None = None


class BootDetails(Details):
    stage: Literal["boot"] = "boot"
    image: str
    model_dir: str
    server: str = "cpu"  # serving-system profile
    readiness_path: str
    gpus_requested: str
    gpu: GpuReport = Field(default_factory=GpuReport)
    attached: str | None = None  # base URL of a server started elsewhere (CI service), measured, not started
    repetitions: list[BootRepetition] = Field(default_factory=list)
    readiness_reasons: list[str] = Field(default_factory=list)
    same_run_baseline: str = ""  # the baseline release booted beside this one for the bench, or why none
