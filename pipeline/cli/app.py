"""The typer application every command module registers on, and the shared CLI plumbing.

The CLI is a thin shell: commands parse arguments, call a stage function from `pipeline.stages`
(or another library module), checkpoint the run and print. No stage logic lives here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from pipeline.errors import ExitCode, LlmgateError
from pipeline.models import RunRecord
from pipeline.redact import redact_text
from pipeline.workspace import Workspace

app = typer.Typer(
    name="llmgate",
    help="Decide whether an LLM-serving image digest may go to production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    workdir: Path = Path(".llmgate")
    store: str | None = None

    def workspace(self) -> Workspace:
        return Workspace(self.workdir, self.store)


state = State()


@app.callback()
def _global(
    workdir: Annotated[Path, typer.Option("--workdir", help="State and artifacts directory.")] = Path(".llmgate"),
    store: Annotated[
        str | None,
        typer.Option("--store", help="SQLAlchemy URL or SQLite path (default: WORKDIR/results.db)."),
    ] = None,
) -> None:
    state.workdir = workdir
    state.store = store


def handle_errors(fn: F) -> F:
    """Turn pipeline errors into a one-line message (secrets masked) and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LlmgateError as exc:
            label = {ExitCode.BAD_INPUT: "bad input", ExitCode.INFRA: "infrastructure", ExitCode.GATE_FAILED: "blocked"}
            console.print(f"[bold red]error ({label[exc.exit_code]}):[/] {redact_text(exc.render())}", highlight=False)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            console.print("[red]interrupted[/]")
            raise typer.Exit(int(ExitCode.INFRA)) from None

    return wrapper  # type: ignore[return-value]


RunOpt = Annotated[
    str | None,
    typer.Option("--run", help="Run id (or prefix) in the store, or a path to run.json; default: the latest run."),
]


def save_run(ws: Workspace, run: RunRecord, run_ref: str | None) -> Path:
    """Checkpoint the run; when it was given as a run.json path, rewrite that file too so that
    a chain of commands (or of Dagger functions) can pass one file from stage to stage."""
    path = ws.checkpoint(run)
    if run_ref is not None and run_ref.endswith(".json") and Path(run_ref).resolve() != path.resolve():
        Path(run_ref).write_text(path.read_text())
        return Path(run_ref)
    return path
