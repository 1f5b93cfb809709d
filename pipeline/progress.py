"""Progress reporting that stages call without knowing who is watching.

The CLI passes a rich-backed reporter, the Dagger module and tests a plain or silent one, so the
same stage function shows progress wherever it runs.
"""

from __future__ import annotations

import logging
from typing import Protocol

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


class PrintReporter:
    """Plain lines on stderr, for CI logs and the Dagger module where no TTY is attached."""

    def __init__(self, prefix: str = "llmgate") -> None:
        self.prefix = prefix
        self._n = 0
        self._done = 0
        self._label = ""

    def step(self, message: str) -> None:
        import sys

        print(f"[{self.prefix}] {redact_text(message)}", file=sys.stderr, flush=True)

    def total(self, n: int, label: str) -> None:
        self._n, self._done, self._label = n, 0, label

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self._n and (self._done == self._n or self._done % max(1, self._n // 10) == 0):
            self.step(f"{self._label}: {self._done}/{self._n}")
