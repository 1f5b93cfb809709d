"""GitHub Actions: the run's markdown summary as the job summary, and an annotation per failing or
warning gate.

When `GITHUB_ACTIONS=true` (set by the runner on every job), `publish` appends the summary to the file
`$GITHUB_STEP_SUMMARY` names and prints `::error` / `::warning` workflow commands on stdout, where
the runner reads them. Data and properties are escaped as GitHub's toolkit does (actions/toolkit,
packages/core/src/command.ts): `%`, `\\r` and `\\n` in the message, and also `:` and `,` in property
values, so that no gate name or reason can end the command early or start another one. Everything is
redacted first.

A verdict is published once per job step: a marker in the run directory remembers which gate result
was already published to which summary file, so the per-stage commands (`llmgate attest`,
`promote`, ... after `llmgate gate` in one step) do not repeat it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pipeline.models import GateStatus, GateVerdict, RunRecord
from pipeline.redact import redact_text
from pipeline.report.markdown import render_summary
from pipeline.report.units import fmt_value, unit_of
from pipeline.report.verdict_table import threshold_text
from pipeline.workspace import Workspace

MARKER = "github-actions.json"
# GitHub shows at most 10 error and 10 warning annotations per step; the rest are dropped silently,
# so past that one annotation says how many more there are (the summary lists them all).
MAX_PER_LEVEL = 10
# A job summary may not exceed 1 MiB per step (GitHub rejects the whole summary beyond that).
MAX_SUMMARY_BYTES = 1024 * 1024


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: str) -> str:
    """One workflow command line: `::name key=value,...::message`."""
    props = ",".join(f"{k}={escape_property(redact_text(v))}" for k, v in properties.items())
    return f"::{name}{' ' + props if props else ''}::{escape_data(redact_text(message))}"


@dataclass(frozen=True)
class Annotation:
    level: str  # "error" | "warning"
    title: str
    message: str

    def line(self) -> str:
        return command(self.level, self.message, title=self.title)


def _level(v: GateVerdict) -> str | None:
    if v.status is GateStatus.FAIL:
        return "error" if v.required else "warning"
    if v.status is GateStatus.NOT_RUN:
        return "error" if v.required else "warning"
    if v.status is GateStatus.WARN:
        return "warning"
    return None


def annotations(run: RunRecord) -> list[Annotation]:
    """Blocking gates as errors, then advisory failures and warnings; at most `MAX_PER_LEVEL` each."""
    out: list[Annotation] = []
    for level in ("error", "warning"):
        hits = [v for v in run.gates if _level(v) == level]
        for v in hits[:MAX_PER_LEVEL - 1] if len(hits) > MAX_PER_LEVEL else hits:
            unit = unit_of(v.source)
            value = f"{fmt_value(v.value, unit)} (threshold {threshold_text(v) or '-'})" if v.value is not None else ""
            title = f"llmgate gate {v.name}: {v.status.value}" + ("" if v.required else " (optional)")
            out.append(Annotation(level, title, "; ".join(p for p in (value, v.reason) if p)))
        if len(hits) > MAX_PER_LEVEL:
            rest = hits[MAX_PER_LEVEL - 1:]
            out.append(Annotation(level, f"llmgate: {len(rest)} more gates ({level})",
                                  ", ".join(v.name for v in rest) + " (see the job summary)"))
    return out


def _published(run_dir: Path) -> dict[str, list[str]]:
    try:
        data = json.loads((run_dir / MARKER).read_text())
        return {k: list(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def publish(run: RunRecord, ws: Workspace, *, env: Mapping[str, str] | None = None,
            out: TextIO | None = None) -> bool:
    """Publish the run's verdict to GitHub Actions when running there and the run has one. Returns
    whether anything was written. Never raises: CI reporting must not hide the verdict."""
    env = os.environ if env is None else env
    out = out or sys.stdout
    gate = run.stage("gate")
    if env.get("GITHUB_ACTIONS") != "true" or gate is None:
        return False
    try:
        run_dir = ws.run_dir(run.run_id)
        key = gate.finished_at.isoformat() if gate.finished_at else gate.started_at.isoformat()
        done = _published(run_dir)
        wrote = False
        if key not in done.get("annotations", []):
            for a in annotations(run):
                print(a.line(), file=out, flush=True)
            done.setdefault("annotations", []).append(key)
            wrote = True
        summary_file = env.get("GITHUB_STEP_SUMMARY")
        if summary_file and f"{key}|{summary_file}" not in done.get("summaries", []):
            baseline = None
            if run.baseline_run_id:
                try:
                    baseline = ws.store.get(run.baseline_run_id)
                except Exception:  # noqa: BLE001 - a pruned baseline: the verdicts still carry its values
                    baseline = None
            text = render_summary(run, baseline, report_url=_run_url(env))
            if len(text.encode()) > MAX_SUMMARY_BYTES:
                text = render_summary(run, baseline, report_url=_run_url(env), max_items=0)
            with open(summary_file, "a", encoding="utf-8") as fh:
                fh.write(text + "\n")
            done.setdefault("summaries", []).append(f"{key}|{summary_file}")
            wrote = True
        if wrote:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / MARKER).write_text(json.dumps(done))
        return wrote
    except Exception as exc:  # noqa: BLE001
        print(command("warning", f"llmgate could not publish to GitHub Actions: {type(exc).__name__}: {exc}"),
              file=out, flush=True)
        return False


def _run_url(env: Mapping[str, str]) -> str | None:
    """The workflow run's page, where the job's artifacts (the full report) are."""
    server, repo, run_id = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    return f"{server}/{repo}/actions/runs/{run_id}" if server and repo and run_id else None
