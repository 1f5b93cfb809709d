"""Tool discovery: wheels put binaries beside the interpreter, and CI runs `.venv/bin/python -m …`
without activating the venv, so a tool there must be found even when PATH does not name it."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.adapters.tools import find_tool


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_tool_beside_interpreter_is_found_without_path(tmp_path, monkeypatch) -> None:
    venv_bin = tmp_path / "venv" / "bin"
    tool = _exe(venv_bin / "sometool")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_tool("sometool") == str(tool)
    assert find_tool("othertool") is None


def test_path_wins_and_non_executables_are_ignored(tmp_path, monkeypatch) -> None:
    venv_bin, on_path = tmp_path / "venv" / "bin", tmp_path / "path"
    _exe(venv_bin / "sometool")
    preferred = _exe(on_path / "sometool")
    (venv_bin / "plainfile").write_text("not a program")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(on_path))
    assert find_tool("sometool") == str(preferred)
    assert find_tool("plainfile") is None
