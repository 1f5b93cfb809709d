"""Runs whose process died: found at the start of the next invocation, marked, and cleaned up.

A running stage is marked in the stored record with the pid and host of the process running it. When
a later invocation on the same host finds such a record whose process is gone (killed with -9, the
machine rebooted), the record is marked `interrupted` with the stage it died in, and the containers it
left (labelled with its run id) are removed. A record from another host is left alone: its process may
well be alive there.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from pipeline.errors import LlmgateError
from pipeline.models import Decision
from pipeline.process import pid_alive
from pipeline.progress import Reporter
from pipeline.workspace import Workspace

PID_LABEL, HOST_LABEL, STAGE_LABEL = "llmgate.pid", "llmgate.host", "llmgate.stage"


def reap_interrupted(ws: Workspace, reporter: Reporter, runtime: Callable[[], Any] | None) -> list[str]:
    """Mark this host's runs whose process is gone as interrupted; returns their ids."""
    host = socket.gethostname()
    reaped: list[str] = []
    for run in ws.store.pending_runs():
        pid = run.labels.get(PID_LABEL)
        if run.labels.get(HOST_LABEL) != host or not pid or not pid.isdigit() or pid_alive(int(pid)):
            continue
        run.interrupted_stage = run.labels.get(STAGE_LABEL)
        run.decision = Decision.INTERRUPTED
        run.decision_reason = f"the process running it ({pid}) died during {run.interrupted_stage or 'the run'}"
        for label in (PID_LABEL, HOST_LABEL, STAGE_LABEL):
            run.labels.pop(label, None)
        ws.checkpoint(run)
        reaped.append(run.run_id)
        removed = _remove_containers(runtime, run.run_id) if runtime is not None else 0
        reporter.step(f"run {run.run_id}: marked interrupted ({run.decision_reason}); "
                      f"removed {removed} container(s) it left")
    return reaped


def _remove_containers(runtime: Callable[[], Any], run_id: str) -> int:
    try:
        return int(runtime().remove_labelled({"llmgate.run": run_id}))
    except LlmgateError:
        return 0  # no engine reachable: nothing of ours can be running on it either
