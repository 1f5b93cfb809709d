"""Details of the manifests stage: the overlay as this release would ship, and what is wrong with it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.schemas.base import Details


class Finding(BaseModel):
    """A problem found in a rendered manifest, named by object (`Kind/name`) and field path."""

    model_config = ConfigDict(extra="forbid")

    rule: str  # "schema" for schema errors, else the policy rule id
    object: str  # Kind/name
    path: str  # spec.template.spec.containers[0].image
    message: str

    def __str__(self) -> str:
        return f"{self.object} {self.path or '(object)'}: {self.message} [{self.rule}]"


class ManifestsDetails(Details):
    stage: Literal["manifests"] = "manifests"
    overlay: str
    image: str | None = None
    model_digest: str | None = None
    k8s_version: str
    load_time_s: float | None = None
    load_time_source: str | None = None
    objects: list[str] = Field(default_factory=list)
    schema_errors: list[Finding] = Field(default_factory=list)
    violations: list[Finding] = Field(default_factory=list)
    rollout_estimates: list[str] = Field(default_factory=list)
    rollout_s: float | None = None

    @property
    def problems(self) -> list[Finding]:
        return self.schema_errors + self.violations
