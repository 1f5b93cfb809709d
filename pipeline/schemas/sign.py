"""Details of the sign stage: the signature written for the image digest, and whether it verified."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from pipeline.schemas.base import Details


class SignDetails(Details):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["sign"] = "sign"
    ref: str  # repo@sha256:… that was signed
    signer: str  # "python" (cryptography over the registry client) | "cosign" (the CLI)
    key_id: str  # sha256 of the public key's DER SubjectPublicKeyInfo
    signature_ref: str | None = None  # repo:sha256-<hex>.sig, cosign's tag layout
    signature_manifest: str | None = None  # digest of that manifest after the push, when known
    appended: bool = True  # False: an equal signature by this key was already there
    verified: bool = False
    verify_reason: str = ""
    commands: list[list[str]] = Field(default_factory=list)  # cosign argv only; secrets travel in the environment
