"""A problem found in a rendered manifest, named by object (`Kind/name`) and field path.

`Finding` is the manifests payload's own model (pipeline.schemas.manifests); this module adds the path
formatting every check uses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.schemas.manifests import Finding

__all__ = ["Finding", "field_path"]


def field_path(parts: Iterable[Any]) -> str:
    """`["spec", "containers", 0, "image"]` -> `spec.containers[0].image`."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out
