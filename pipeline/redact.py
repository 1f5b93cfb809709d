"""Redaction of secret values before anything is logged, stored or rendered.

Two layers: exact values the pipeline knows are secret (registered when a secret is read from a
file or the environment), and patterns of well-known credential formats, so that a secret that
slipped into a server response or a log line is still masked.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "[REDACTED]"
# A registered value shorter than this is not masked as a substring: a short secret ("build", "test")
# is also an ordinary word, and masking every occurrence turned error text into "[REDACTED] arg".
# It is the same minimum the leak check needs to prove a value absent from an image, so a build secret
# shorter than this is refused there anyway.
MIN_SECRET_CHARS = 8

_known: set[str] = set()

# Formats with a low false-positive rate. A pattern may capture a `keep` prefix (e.g. "password=")
# and a `tail` suffix that stay visible, so the reader still sees what was masked.
_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"(?i)(?P<keep>aws.{0,20}(?:secret|key).{0,5}[:=]\s*['\"]?)[A-Za-z0-9/+=]{40}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9]{36,}"),  # GitHub tokens
    re.compile(r"glpat-[A-Za-z0-9_\-]{20,}"),  # GitLab tokens
    re.compile(r"xox[baprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"sk-[A-Za-z0-9_\-]{20,}"),  # OpenAI-style API keys
    re.compile(r"hf_[A-Za-z0-9]{30,}"),  # Hugging Face tokens
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(?P<keep>authorization:\s*(?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]+"),
    # `key=value` / `key: value` for a credential-named key. The key must start a word: one that ends a
    # dotted field or a path (`build.build_args.API_TOKEN: build arg ...`, `/etc/passwd: exists`) is the
    # `where: message` of an error, and masking the message's first word read "[REDACTED] arg".
    re.compile(r"(?i)(?<![\w./])(?P<keep>[\w-]*(?:password|passwd|secret|token|api[_-]?key)\s*[=:]\s*['\"]?)"
               r"[^\s'\"&]{4,}"),
    re.compile(r"(?i)(?P<keep>https?://[^:/\s]+:)[^@/\s]+(?P<tail>@)"),  # credentials in URLs
]


def _mask(m: re.Match[str]) -> str:
    groups = m.groupdict()
    return (groups.get("keep") or "") + MASK + (groups.get("tail") or "")


def register_secret(value: str | bytes | None) -> None:
    """Remember a secret value so that it is masked wherever it appears later."""
    if value is None:
        return
    text = value.decode(errors="ignore") if isinstance(value, bytes) else value
    text = text.strip()
    if len(text) >= MIN_SECRET_CHARS:
        _known.add(text)


def known_secrets() -> frozenset[str]:
    return frozenset(_known)


def redact_text(text: str) -> str:
    for value in sorted(_known, key=len, reverse=True):
        text = text.replace(value, MASK)
    for pat in _PATTERNS:
        text = pat.sub(_mask, text)
    return text


def redact(obj: Any) -> Any:
    """Redact every string inside a JSON-like structure (dicts, lists, scalars)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj
