"""`report.json`: the run record exactly as the store keeps it (redacted), for CI systems and tools.

It stays a valid `RunRecord`, so `llmgate gate --run path/to/report.json` and friends can read it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.models import RunRecord
from pipeline.redact import redact


def report_dict(run: RunRecord) -> dict[str, Any]:
    return redact(run.model_dump(mode="json"))


def write_report_json(run: RunRecord, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report_dict(run), indent=2))
    tmp.replace(path)
    return path
