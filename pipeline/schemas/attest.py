"""Details of the attest stage: the signed statements attached to the image digest after the gate."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from pipeline.schemas.base import Details


class AttestationRef(Details):
    model_config = ConfigDict(extra="forbid")

    predicate_type: str
    ref: str | None = None  # where it was pushed: repo:sha256-<hex>.att
    manifest_digest: str | None = None
    verified: bool = False
    reason: str = ""
    sha256: str | None = None  # of the canonical predicate JSON that was signed


class AttestDetails(Details):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["attest"] = "attest"
    image: str  # repo@sha256:…
    model_digest: str | None = None
    signer: str = ""
    key_id: str = ""
    decision: str = ""  # the decision the verdict attestation carries
    attestations: list[AttestationRef] = Field(default_factory=list)
    commands: list[list[str]] = Field(default_factory=list)
    verdict_log: str = ""  # where the verdict stands in the verdict log, and whether the registry copy was updated
