"""Argo CD, read through the Kubernetes API: is the Application Synced and Healthy at a revision?

After a GitOps push, the promotion is only real once Argo CD has applied that commit and the result is
healthy. The Application resource says both: `status.sync.{status,revision}` (OutOfSync/Synced, the
commit compared), `status.health.status` (Progressing/Healthy/Degraded/…), and
`status.operationState.{phase,message}` for the sync operation (Running/Succeeded/Failed/Error). A
refresh is requested the way `argocd app get --refresh` does it, with the annotation
`argocd.argoproj.io/refresh: normal` (the controller removes it once it has looked at the repository).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.adapters.kube_api import KubeApi, ObjectRef
from pipeline.progress import NULL_REPORTER, Reporter

REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
FAILED_PHASES = {"Failed", "Error"}


@dataclass(frozen=True)
class AppState:
    sync: str
    revision: str
    health: str
    health_message: str
    operation: str
    operation_message: str
    operation_revision: str

    @classmethod
    def of(cls, app: dict[str, Any]) -> AppState:
        status = app.get("status") or {}
        sync, health = status.get("sync") or {}, status.get("health") or {}
        op = status.get("operationState") or {}
        return cls(sync=str(sync.get("status", "Unknown")), revision=str(sync.get("revision", "")),
                   health=str(health.get("status", "Unknown")), health_message=str(health.get("message", "")),
                   operation=str(op.get("phase", "")), operation_message=str(op.get("message", "")),
                   operation_revision=str((op.get("syncResult") or {}).get("revision", "")))

    def line(self) -> str:
        text = f"sync={self.sync} revision={self.revision[:12] or '-'} health={self.health}"
        if self.operation:
            text += f" operation={self.operation}"
        msg = self.operation_message if self.operation in FAILED_PHASES else self.health_message
        return text + (f" ({msg})" if msg else "")


@dataclass
class ArgoCdApp:
    api: KubeApi
    name: str
    namespace: str = "argocd"
    timeout_s: float = 900
    poll_s: float = 5
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef("argoproj.io", "v1alpha1", "applications", "Application", self.namespace, self.name)

    def state(self) -> AppState:
        return AppState.of(self.api.get(self.ref))

    def refresh(self) -> None:
        self.api.patch(self.ref, {"metadata": {"annotations": {REFRESH_ANNOTATION: "normal"}}})

    def wait(self, revision: str, *, reporter: Reporter = NULL_REPORTER, events: list[str] | None = None,
             timeout_s: float | None = None) -> str | None:
        """None once the Application is Synced and Healthy at `revision`; else why not (a failed sync,
        a degraded result, or the deadline)."""
        events = events if events is not None else []
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        self.refresh()
        deadline = self.clock() + timeout_s
        last = ""
        where = f"Application {self.namespace}/{self.name}"
        while True:
            s = self.state()
            line = s.line()
            if line != last:
                events.append(f"argocd: {line}")
                reporter.step(f"argocd: {where}: {line}")
                last = line
            ours = s.revision == revision
            if s.operation in FAILED_PHASES and (s.operation_revision == revision or ours):
                return f"Argo CD sync of {revision[:12]} {s.operation.lower()}: {s.operation_message or 'no message'}"
            if ours and s.sync == "Synced":
                if s.health == "Healthy":
                    return None
                if s.health == "Degraded":
                    return f"{where} is Degraded at {revision[:12]}: {s.health_message or 'no message'}"
            if self.clock() >= deadline:
                return (f"timed out after {timeout_s:g} s waiting for {where} to be Synced and Healthy at "
                        f"{revision[:12]} ({line})")
            self.sleep(self.poll_s)
