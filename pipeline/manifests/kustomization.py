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


def parse(text: str, *, where: str = "") -> dict[str, Any]:
    """A kustomization's text as a mapping (an empty file is an empty one); BadInput naming `where`."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"not valid YAML: {exc}", where=where) from exc
    if not isinstance(data, dict):
        raise BadInput("expected a mapping", where=where)
    return data


def load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise BadInput("kustomization not found", where=str(path)) from exc
    return parse(text, where=str(path))


def current_image(path: Path, name: str = IMAGE_NAME) -> dict[str, Any] | None:
    for entry in load(path).get("images") or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return None


def with_image(text: str, *, repository: str, digest: str, name: str = IMAGE_NAME, where: str = "") -> str:
    """The kustomization text with `name` pinned to `repository@digest`."""
    if not DIGEST_RE.match(digest):
        raise BadInput(f"not a sha256 digest: {digest!r}", where=where or "digest")
    data = parse(text, where=where)
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


# -- the model digest: `model-digest=…` in the overlay's `llmgate-release` generator ----------------
RELEASE_CONFIGMAP = "llmgate-release"
MODEL_DIGEST_KEY = "model-digest"
_LITERAL = re.compile(r"^(\s*-\s*['\"]?)" + re.escape(MODEL_DIGEST_KEY) + r"=([^'\"\s]*)(['\"]?\s*)$")


def _release_literals(data: dict[str, Any], where: str) -> list[str]:
    for gen in data.get("configMapGenerator") or []:
        if isinstance(gen, dict) and gen.get("name") == RELEASE_CONFIGMAP:
            return [str(x) for x in gen.get("literals") or []]
    raise BadInput(f"no configMapGenerator {RELEASE_CONFIGMAP!r} with a {MODEL_DIGEST_KEY}= literal: the overlay "
                   "cannot say which weights it serves", where=where,
                   hint="include components/release-identity and the llmgate-release generator (see overlays/canary)")


def model_digest_in(text: str, *, where: str = "") -> str | None:
    """The model digest the kustomization pins (None when it is a placeholder such as `unpinned`)."""
    data = parse(text, where=where)
    for lit in _release_literals(data, where):
        key, _, value = lit.partition("=")
        if key == MODEL_DIGEST_KEY:
            return value if DIGEST_RE.match(value) else None
    return None


def with_model_digest(text: str, *, digest: str, where: str = "") -> str:
    """The kustomization text with the `llmgate-release` generator's model-digest literal set to
    `digest`; only that line changes."""
    if not DIGEST_RE.match(digest):
        raise BadInput(f"not a sha256 digest: {digest!r}", where=where or "model digest")
    model_digest_in(text, where=where)  # checks the generator is there
    lines = text.splitlines(keepends=True)
    hits = [i for i, ln in enumerate(lines) if _LITERAL.match(ln.rstrip("\n"))]
    if len(hits) != 1:
        raise BadInput(f"expected exactly one `- {MODEL_DIGEST_KEY}=…` literal line, found {len(hits)}", where=where)
    i = hits[0]
    m = _LITERAL.match(lines[i].rstrip("\n"))
    assert m is not None
    end = "\n" if lines[i].endswith("\n") else ""
    lines[i] = f"{m.group(1)}{MODEL_DIGEST_KEY}={digest}{m.group(3)}{end}"
    return "".join(lines)
