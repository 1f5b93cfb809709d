"""Error types and the exit codes they map to.

Exit codes are a public contract with CI systems:
0 every gate passed, 1 a gate failed (nothing promoted), 2 bad input or configuration,
3 infrastructure failure (engine, registry, server, tool). Every stage raises one of these
instead of a bare exception so that the CLI, the Dagger module and tests agree on the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum


class ExitCode(IntEnum):
    PASS = 0
    GATE_FAILED = 1
    BAD_INPUT = 2
    INFRA = 3


class LlmgateError(Exception):
    """Base error. `where` names the file, field or endpoint at fault."""

    exit_code: ExitCode = ExitCode.INFRA

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class BadInput(LlmgateError):
    """The user's input or configuration is wrong; retrying will not help."""

    exit_code = ExitCode.BAD_INPUT


class InfraError(LlmgateError):
    """Something the pipeline depends on is missing, down or misbehaving."""

    exit_code = ExitCode.INFRA


@contextmanager
def names_its_limit(setting: str, limit_s: float) -> Iterator[None]:
    """An InfraError raised once `limit_s` has run out says which setting set the limit, so the person
    who reads it knows what to raise."""
    t0 = time.monotonic()
    try:
        yield
    except InfraError as exc:
        if time.monotonic() - t0 < limit_s:
            raise
        raise InfraError(f"{exc.message} ({setting}={limit_s:g}s)", where=exc.where, hint=exc.hint) from exc


class GateFailed(LlmgateError):
    """A required gate did not pass; the image must not be promoted."""

    exit_code = ExitCode.GATE_FAILED
