"""Read and set the image pin in a kustomization's `images:` list, leaving the rest of the file as is.

Only the top-level `images:` block is rewritten (comments and order elsewhere survive), so the
diff a promotion commits is the digest and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import BadInput
from pipeline.models import DIGEST_RE

IMAGE_NAME = "llmgate-server"  # the name the base manifests use; overlays pin it by digest
_TOP_KEY = re.compile(r"^[A-Za-z_][\w-]*\s*:")


def load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise BadInput("kustomization not found", where=str(path)) from exc
    except yaml.YAMLError as exc:
        raise BadInput(f"not valid YAML: {exc}", where=str(path)) from exc
    if not isinstance(data, dict):
        raise BadInput("expected a mapping", where=str(path))
    return data


def current_image(path: Path, name: str = IMAGE_NAME) -> dict[str, Any] | None:
    for entry in load(path).get("images") or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return None


def current_ref(path: Path, name: str = IMAGE_NAME) -> str | None:
    """`repository@sha256:…` as pinned now, or None when the overlay pins no digest."""
    entry = current_image(path, name)
    if not entry or not entry.get("digest"):
        return None
    return f"{entry.get('newName', name)}@{entry['digest']}"


def with_image(text: str, *, repository: str, digest: str, name: str = IMAGE_NAME, where: str = "") -> str:
    """The kustomization text with `name` pinned to `repository@digest`."""
    if not DIGEST_RE.match(digest):
        raise BadInput(f"not a sha256 digest: {digest!r}", where=where or "digest")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"not valid YAML: {exc}", where=where) from exc
    if not isinstance(data, dict):
        raise BadInput("expected a mapping", where=where)
    images = [dict(e) for e in data.get("images") or []]
    entry = next((e for e in images if e.get("name") == name), None)
    if entry is None:
        entry = {"name": name}
        images.append(entry)
    entry.pop("newTag", None)  # a tag next to a digest is a second, mutable source of truth
    entry["newName"] = repository
    entry["digest"] = digest
    block = yaml.safe_dump({"images": images}, sort_keys=False, default_flow_style=False)
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if re.match(r"^images\s*:", ln)), None)
    if start is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        return text + sep + block
    end = start + 1
    while end < len(lines) and not _TOP_KEY.match(lines[end]):
        end += 1
    # keep trailing comments/blank lines that belong to whatever follows
    while end - 1 > start and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])
