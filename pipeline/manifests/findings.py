"""A problem found in a rendered manifest, named by object (`Kind/name`) and field path."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str  # "schema" for schema errors, else the policy rule id
    object: str  # Kind/name
    path: str  # spec.template.spec.containers[0].image
    message: str

    def __str__(self) -> str:
        return f"{self.object} {self.path or '(object)'}: {self.message} [{self.rule}]"


def field_path(parts: Iterable[Any]) -> str:
    """`["spec", "containers", 0, "image"]` -> `spec.containers[0].image`."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out
