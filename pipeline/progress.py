"""Progress reporting that stages call without knowing who is watching.

The CLI passes a rich-backed reporter on a terminal (`pipeline.cli.rich_reporter`) and `PrintReporter`
elsewhere; the Dagger module and tests a plain or silent one, so the same stage function shows
progress wherever it runs. Every reporter redacts every line: messages quote server bodies, build
logs and reasons, which can carry a secret.

A stage reports counted work with `total(n, label)` then `advance(k)`; the runner announces each
stage with a `"<stage>: started"` step and ends it with `"<stage>: <status> …"`, which reporters may
use to show stages that run side by side.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Protocol, TextIO

from pipeline.redact import redact_text

log = logging.getLogger("llmgate")


class Reporter(Protocol):
    def step(self, message: str) -> None: ...

    def total(self, n: int, label: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class NullReporter:
    def step(self, message: str) -> None:
        log.debug(redact_text(message))

    def total(self, n: int, label: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


NULL_REPORTER = NullReporter()  # stateless: one instance serves every default


def eta_text(done: int, total: int, elapsed_s: float) -> str:
    """'12/40 (30%), 8.1 s elapsed, about 19 s left' from a constant-rate estimate."""
    pct = f" ({done / total:.0%})" if total else ""
    text = f"{done}/{total}{pct}, {_seconds(elapsed_s)} elapsed"
    if 0 < done < total and elapsed_s > 0:
        text += f", about {_seconds(elapsed_s / done * (total - done))} left"
    return text


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(round(s), 60)
    return f"{m} min {sec:02d} s"


class PrintReporter:
    """Plain lines for CI logs, pipes and the Dagger module, where no TTY is attached: one line per
    message, prefixed with the UTC time (and a fixed label, never a source file), never wrapped, with
    counted work reported every tenth with its rate-based ETA. A line never starts with `::`, so a
    quoted log line cannot become a CI workflow command."""

    def __init__(self, prefix: str = "llmgate", stream: TextIO | None = None) -> None:
        self.prefix = prefix
        self.stream = stream
        self._lock = threading.Lock()
        self._counts: dict[int, tuple[str, int, int, float]] = {}  # per thread: label, n, done, start

    def step(self, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = redact_text(message).splitlines() or [""]
        with self._lock:
            out = self.stream or sys.stderr
            for line in lines:
                print(f"{stamp} [{self.prefix}] {line}", file=out, flush=True)

    def total(self, n: int, label: str) -> None:
        with self._lock:
            self._counts[threading.get_ident()] = (label, n, 0, time.monotonic())

    def advance(self, n: int = 1) -> None:
        with self._lock:
            key = threading.get_ident()
            if key not in self._counts:
                return
            label, total, done, start = self._counts[key]
            new = done + n
            self._counts[key] = (label, total, new, start)
        step = max(1, total // 10)
        if total and (new >= total or new // step > done // step):
            self.step(f"{label}: {eta_text(min(new, total), total, time.monotonic() - start)}")
