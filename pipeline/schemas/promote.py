"""Details of the promote stage: what moved where (or why not), with the evidence it carried."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.schemas.base import Details


class GuardSummary(BaseModel):
    """What the guard accepted: the signed verdict (its run, gate time and policy), how the signature and
    the attestation verified, which key and why it is trusted, and the promotion lock's fence."""

    model_config = ConfigDict(extra="forbid")

    verdict_run: str | None = None
    verdict_at: datetime | None = None  # the verdict's own time (the gate's), from the signed statement
    signature: str | None = None
    verdict: str | None = None
    policy: str | None = None
    key: str | None = None
    fence: int | None = None


class PromoteDetails(Details):
    stage: Literal["promote"] = "promote"
    target: str
    mode: str  # gitops | cluster | kserve
    dry_run: bool = False
    image: str
    model_digest: str | None = None
    outcome: str  # promoted | aborted | refused | noop | failed | dry-run
    reason: str = ""
    previous: str | None = None
    branch: str | None = None
    commit: str | None = None
    diff: str = ""  # gitops: the kustomization diff
    patch: list[dict[str, Any]] = Field(default_factory=list)  # cluster: the JSON patch
    events: list[str] = Field(default_factory=list)
    guard: GuardSummary = Field(default_factory=GuardSummary)
    rollback_of: str | None = None
