"""Payload of the promote stage: what moved where (or why not), with the evidence it carried."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pipeline.schemas.base import Payload


class PromoteDetails(Payload):
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
    guard: dict[str, Any] = Field(default_factory=dict)
    rollback_of: str | None = None
