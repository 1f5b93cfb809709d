"""Live progress on a terminal: one row per running stage (stages that run side by side show side by
side), with a bar, counts and ETA when the stage counts its work, and the time it usually takes when
it does not; finished stages and messages scroll above as plain timestamped lines.

Meant for a TTY (`pipeline.cli.app.reporter`); given a console that is not one, it prints the plain
timestamped lines of `pipeline.progress.PrintReporter` instead.
Every message is redacted and printed as a `Text`: build logs, server bodies and reasons are never
read as rich markup.
"""

from __future__ import annotations

import atexit
import re
import statistics
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from pipeline.models import RunRecord, Stage, StageStatus
from pipeline.progress import PrintReporter
from pipeline.redact import redact_text

_STAGES = "|".join(s.value for s in Stage)
_STARTED = re.compile(rf"^({_STAGES}): started$")
_ENDED = re.compile(rf"^({_STAGES}): ({'|'.join(s.value for s in StageStatus)}|blocked)\b")  # stage_check.outcome
# BuildKit's plain progress names each step "[n/m]": the build stage's own count.
_BUILD_STEP = re.compile(r"\[\s*(\d+)/(\d+)\]")
_DESCRIPTION = 60  # characters of a stage's latest message shown on its row


class _Usual(ProgressColumn):
    """What an uncounted stage usually takes (from earlier runs), so a long wait has a yardstick."""

    def render(self, task: Task) -> Text:
        usual = task.fields.get("usual")
        if task.total is not None or usual is None:
            return Text("")
        return Text(f"usually ~{usual:.0f} s", style="dim")


class RichReporter:
    def __init__(self, console: Console, usual: Callable[[str], float | None] | None = None) -> None:
        self.console = console
        self.usual = usual
        # Constructed for a console that is not a terminal after all (a pipe, a CI log): plain lines.
        self._plain = None if console.is_terminal else PrintReporter(stream=console.file)
        self._lock = threading.RLock()
        self._progress: Progress | None = None
        self._stages: dict[str, TaskID] = {}  # running stage -> its row
        self._thread_stage: dict[int, str] = {}  # thread running a stage -> that stage
        self._counted: dict[int, TaskID] = {}  # counted work outside any stage, per thread

    # -- the reporter protocol ---------------------------------------------------------------------
    def step(self, message: str) -> None:
        if self._plain is not None:
            self._plain.step(message)
            return
        text = redact_text(message)
        with self._lock:
            started = _STARTED.match(text)
            if started:
                self._start_stage(started.group(1))
                return
            ended = _ENDED.match(text)
            if ended and ended.group(1) in self._stages:
                self._end_stage(ended.group(1))
            self._line(text)
            stage = self._thread_stage.get(threading.get_ident())
            if stage in self._stages and self._progress is not None:
                build = _BUILD_STEP.search(text) if stage == Stage.BUILD.value else None
                task = self._stages[stage]
                if build:
                    self._progress.update(task, total=int(build.group(2)), completed=int(build.group(1)) - 1)
                self._progress.update(task, description=self._describe(stage, text))

    def total(self, n: int, label: str) -> None:
        if self._plain is not None:
            self._plain.total(n, label)
            return
        with self._lock:
            progress = self._ensure()
            stage = self._thread_stage.get(threading.get_ident())
            if stage in self._stages:
                progress.reset(self._stages[stage], total=n, completed=0, description=f"{stage}: {label}")
                return
            old = self._counted.pop(threading.get_ident(), None)
            if old is not None:
                progress.remove_task(old)
            self._counted[threading.get_ident()] = progress.add_task(label, total=n)

    def advance(self, n: int = 1) -> None:
        if self._plain is not None:
            self._plain.advance(n)
            return
        with self._lock:
            if self._progress is None:
                return
            ident = threading.get_ident()
            stage = self._thread_stage.get(ident)
            task = self._stages.get(stage) if stage else self._counted.get(ident)
            if task is None:
                return
            self._progress.advance(task, n)
            if task in self._counted.values() and self._progress.tasks[self._index(task)].finished:
                self._progress.remove_task(task)
                self._counted = {k: v for k, v in self._counted.items() if v != task}
                self._stop_if_idle()

    # -- rows ----------------------------------------------------------------------------------------
    def _ensure(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                _Usual(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            # An interrupted run must not leave the terminal's cursor hidden by the live display.
            atexit.register(self._close)
        return self._progress

    def _close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None

    def _start_stage(self, stage: str) -> None:
        usual = None
        if self.usual is not None:
            try:
                usual = self.usual(stage)
            except Exception:  # noqa: BLE001 - a yardstick, never a reason to fail a run
                usual = None
        progress = self._ensure()
        old = self._stages.pop(stage, None)
        if old is not None:
            progress.remove_task(old)
        self._stages[stage] = progress.add_task(f"{stage}: started", total=None, usual=usual)
        self._thread_stage[threading.get_ident()] = stage

    def _end_stage(self, stage: str) -> None:
        task = self._stages.pop(stage)
        if self._progress is not None:
            self._progress.remove_task(task)
        self._thread_stage = {k: v for k, v in self._thread_stage.items() if v != stage}
        self._stop_if_idle()

    def _stop_if_idle(self) -> None:
        if self._progress is not None and not self._stages and not self._counted:
            self._progress.stop()
            self._progress = None

    def _index(self, task: TaskID) -> int:
        assert self._progress is not None
        return next(i for i, t in enumerate(self._progress.tasks) if t.id == task)

    @staticmethod
    def _describe(stage: str, text: str) -> str:
        line = text.splitlines()[0] if text else ""
        if not line.startswith(f"{stage}"):
            line = f"{stage}: {line}"
        return line if len(line) <= _DESCRIPTION else line[: _DESCRIPTION - 1] + "…"

    def _line(self, text: str) -> None:
        stamp = Text(datetime.now(UTC).strftime("%H:%M:%S "), style="dim")
        self.console.print(stamp + Text(text), highlight=False, soft_wrap=True)


def usual_durations(recent: Callable[[], list[RunRecord]]) -> Callable[[str], float | None]:
    """How long each stage usually takes: the median of its measured (not reused) `ok` durations in
    the recent runs `recent()` returns, read once, on the first stage that asks."""
    cache: dict[str, list[RunRecord]] = {}

    def usual(stage: str) -> float | None:
        if "runs" not in cache:
            cache["runs"] = recent()
        took = [res.duration_s for r in cache["runs"] if (res := r.stages.get(stage)) is not None
                and res.status is StageStatus.OK and not res.reused_from and res.duration_s]
        return statistics.median(took) if took else None

    return usual
