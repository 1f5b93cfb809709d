"""Render a kustomize directory with `kubectl kustomize` (offline) into a list of objects."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import BadInput, InfraError

KUBECTL_TIMEOUT_S = 120


class KubectlNotFound(InfraError):
    """`kubectl` is not on PATH: the manifest stage reports itself as not run, never as a pass."""


def kubectl_path() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise KubectlNotFound(
            "kubectl not found",
            where="kubectl",
            hint="install kubectl (it bundles kustomize: `kubectl kustomize` runs offline)",
        )
    return path


def render_text(directory: Path | str) -> str:
    """The YAML stream `kubectl kustomize DIRECTORY` prints; a kustomize error is `BadInput`."""
    directory = Path(directory)
    if not (directory / "kustomization.yaml").is_file() and not (directory / "kustomization.yml").is_file():
        raise BadInput("no kustomization.yaml here", where=str(directory))
    try:
        proc = subprocess.run(
            [kubectl_path(), "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"kubectl kustomize did not finish in {KUBECTL_TIMEOUT_S} s", where=str(directory)) from exc
    if proc.returncode != 0:
        # kustomize's own message names the file and field; keep it whole, minus the noise.
        msg = proc.stderr.strip().removeprefix("error: ") or f"exit status {proc.returncode}"
        raise BadInput(f"kubectl kustomize failed: {msg}", where=str(directory))
    return proc.stdout


def parse_objects(text: str, *, where: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise BadInput(f"rendered output is not YAML: {exc}", where=where) from exc
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise BadInput(f"document {i} is not a Kubernetes object (no kind/apiVersion)", where=where)
    return docs


def render(directory: Path | str) -> list[dict[str, Any]]:
    return parse_objects(render_text(directory), where=str(directory))


def object_name(obj: dict[str, Any]) -> str:
    """`Kind/name`, the way every error names the object at fault."""
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"
