"""Rich-backed progress for the terminal: a line per step, a bar for counted work."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.redact import redact_text


class RichReporter:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: int | None = None

    def step(self, message: str) -> None:
        self.console.log(redact_text(message), highlight=False)

    def total(self, n: int, label: str) -> None:
        self._stop()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=n)

    def advance(self, n: int = 1) -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.advance(self._task, n)
        if self._progress.finished:
            self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress, self._task = None, None
