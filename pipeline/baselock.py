"""The base-image lock file (`dockerfiles/base.lock.json`): which digest the Dockerfiles build on.

The local base is imported from a debootstrap tree, and an import gets a new digest on every
machine, so the digest cannot be written into the Dockerfile. Instead the Dockerfile takes
`ARG BASE_IMAGE` and the build stage passes `BASE_IMAGE=<registry>/<repo>@sha256:…` read from this
lock; `llmgate stack up` refreshes the lock when the registry lacks the digest it names.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import BadInput
from pipeline.models import DIGEST_RE, utcnow


class BaseLock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repository: str  # registry host included: 127.0.0.1:5000/llmgate/base
    tag: str
    digest: str
    suite: str
    packages: list[str] = Field(default_factory=list)
    seeded_at: datetime = Field(default_factory=utcnow)

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not DIGEST_RE.match(v):
            raise ValueError(f"not a sha256 digest: {v!r}")
        return v

    @property
    def ref(self) -> str:
        """What the Dockerfiles' `FROM ${BASE_IMAGE}` gets: always by digest."""
        return f"{self.repository}@{self.digest}"


def read_lock(path: Path) -> BaseLock | None:
    if not path.exists():
        return None
    try:
        return BaseLock.model_validate_json(path.read_text())
    except (ValidationError, ValueError) as exc:
        raise BadInput(f"malformed base lock: {exc}", where=str(path), hint="rerun `llmgate stack up`") from exc


def require_lock(path: Path) -> BaseLock:
    lock = read_lock(path)
    if lock is None:
        raise BadInput("no base image lock yet", where=str(path), hint="run `llmgate stack up` to seed the base image")
    return lock


def write_lock(path: Path, lock: BaseLock) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(lock.model_dump(mode="json"), indent=2) + "\n")
    tmp.replace(path)
