"""Details of the build stage: what was built, from what, and how long it took."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.schemas.base import Details


class BuildDetails(Details):
    stage: Literal["build"] = "build"
    dockerfile: str
    context: str
    base_image: str | None = None  # the digest-pinned base the Dockerfile was built FROM
    image: str  # repository:tag as built
    image_id: str | None = None
    digest: str | None = None
    dockerfile_sha256: str | None = None
    cli: str = ""
    cli_mode: str = ""
    build_s: float = 0.0
    push_s: float = 0.0
    secret_ids: list[str] = Field(default_factory=list)
    build_arg_names: list[str] = Field(default_factory=list)
    staged_wheels: list[str] = Field(default_factory=list)
