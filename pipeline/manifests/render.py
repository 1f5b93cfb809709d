"""Render a kustomize directory (offline, through the kubectl adapter) into a list of objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.adapters.kubectl import KubectlCli, KubectlNotFound, Kustomize
from pipeline.errors import BadInput

__all__ = ["KubectlNotFound", "object_name", "parse_objects", "render", "render_text"]


def render_text(directory: Path | str, kustomize: Kustomize | None = None) -> str:
    """The YAML stream `kubectl kustomize DIRECTORY` prints; a kustomize error is `BadInput`."""
    directory = Path(directory)
    if not (directory / "kustomization.yaml").is_file() and not (directory / "kustomization.yml").is_file():
        raise BadInput("no kustomization.yaml here", where=str(directory))
    return (kustomize or KubectlCli()).render(directory)


def parse_objects(text: str, *, where: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise BadInput(f"rendered output is not YAML: {exc}", where=where) from exc
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise BadInput(f"document {i} is not a Kubernetes object (no kind/apiVersion)", where=where)
    return docs


def render(directory: Path | str, kustomize: Kustomize | None = None) -> list[dict[str, Any]]:
    return parse_objects(render_text(directory, kustomize), where=str(directory))


def object_name(obj: dict[str, Any]) -> str:
    """`Kind/name`, the way every error names the object at fault."""
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"
