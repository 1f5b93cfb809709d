"""Redaction of secret values before anything is logged, stored or rendered.

Two layers: exact values the pipeline knows are secret (registered when a secret is read from a
file or the environment), and patterns of well-known credential formats, so that a secret that
slipped into a server response or a log line is still masked.

Log records of every library (httpx, openai, instructor, ragas, langchain, ...) go through the same
masking: `install_log_redaction()` wraps the logging record factory once per process, so every record
is masked when it is made, before any handler (ours, a library's own, or Python's last-resort stderr
handler) formats it; warnings are routed into logging so they are masked too.
"""

from __future__ import annotations

import logging
import re
import threading
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


_install_lock = threading.Lock()
_installed = False


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a library's bad format arguments must not break its logging call
        message = f"{record.msg} {record.args!r}"
    record.msg, record.args = redact_text(message), None
    if record.exc_info and not record.exc_text:
        # Formatters print `exc_text` when it is set: render the traceback once, masked.
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


def install_log_redaction() -> None:
    """Mask secrets in every log record of this process, whoever logs it and whichever handler prints it.
    Idempotent: the factory is wrapped once however often this is called."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        logging.captureWarnings(True)  # warnings.warn(...) texts become records of "py.warnings"
        _installed = True
