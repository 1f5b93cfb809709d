"""The typer application every command module registers on, and the shared CLI plumbing.

The CLI is a thin shell: commands parse arguments, call a stage function from `pipeline.stages`
(or another library module), checkpoint the run and print. No stage logic lives here.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import traceback
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import typer
from rich.text import Text
from typer.core import TyperArgument, TyperGroup, TyperOption

from pipeline.cli.output import OutputConsole
from pipeline.errors import ExitCode, LlmgateError
from pipeline.progress import Reporter
from pipeline.redact import install_log_redaction, redact_text
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from pipeline.orchestrate.runner import Runner

_VALUE_LABELS = {str: "TEXT", int: "INTEGER", float: "FLOAT"}


def _value_label(param: TyperOption | TyperArgument) -> str | None:
    """What help shows after an option that takes a value, in click's words; None: typer's own
    rendering is right (choices, dates, ranges)."""
    desc = param.type_descriptor
    if desc.is_choice or desc.is_datetime or desc.is_tuple:
        return None
    if desc.is_path:
        return "PATH"
    annotation = desc.annotation
    if desc.is_list:
        (annotation,) = typing.get_args(annotation) or (str,)
    return _VALUE_LABELS.get(annotation)  # type: ignore[call-overload]


def describe_values(command: click.Command | Any) -> None:
    """Give every option of `command` (and of its subcommands) the help label of the value it takes,
    and none to a flag. Typer's rich help renders a type after every option, flags included, so
    `--dry-run <bool>` read as if it took a value (and `--dry-run true` then failed); strings read
    `<str>`. The label is the option's metavar, which only help reads."""
    params = list(getattr(command, "params", []))
    help_option = command.get_help_option(typer.Context(command)) if hasattr(command, "get_help_option") else None
    for param in [*params, *([help_option] if help_option is not None else [])]:
        if isinstance(param, TyperArgument):
            label = _value_label(param)
            if label is not None:
                # An argument's type column ignores its metavar (that names the argument itself).
                param.display_type_rich = lambda ctx, label=label: label  # type: ignore[method-assign]
            continue
        if not isinstance(param, TyperOption):
            continue
        if param.is_flag or param.count:
            param.metavar = ""
        elif param.metavar is None:
            param.metavar = _value_label(param)
    for sub in getattr(command, "commands", {}).values():
        describe_values(sub)


def refuse_empty_paths(command: click.Command | Any) -> None:
    """Every path option and argument of `command` (and of its subcommands) refuses an empty value
    (exit 2, naming the option). A path type turns `""` into `.`: `--out ""` from an unset shell
    variable would quietly write into the current directory, `--workdir ""` keep state there."""
    params = list(getattr(command, "params", []))
    for param in params:
        if not isinstance(param, TyperOption | TyperArgument) or not param.type_descriptor.is_path:
            continue

        def process_value(ctx: Any, value: Any, _param: Any = param, _orig: Any = param.process_value) -> Any:
            values = value if isinstance(value, list | tuple) else [value]
            if any(isinstance(v, str) and not v.strip() for v in values):
                raise typer.BadParameter("an empty path names no file; give a path", ctx=ctx, param=_param)
            return _orig(ctx, value)

        param.process_value = process_value  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        refuse_empty_paths(sub)


class LazyCommand(click.Command):
    """A command built only when it runs or shows its own help: `load` may import what `llmgate --help`
    must not (the stage registry). The root help lists it with `short_help`."""

    def __init__(self, name: str, short_help: str, load: Callable[[], click.Command], *, after: str | None = None) -> None:
        super().__init__(name, short_help=short_help)
        self.after = after  # listed right after this command where it is registered
        self._load = load
        self._real: click.Command | None = None

    def real(self) -> click.Command:
        if self._real is None:
            self._real = self._load()
            describe_values(self._real)
            refuse_empty_paths(self._real)
        return self._real

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        # the context (and so its invoke, its help and its parameters) is the real command's
        return self.real().make_context(info_name, args, parent=parent, **extra)


# Commands registered by name only (`LazyCommand`), added to the root group where no command of that
# name is registered; listed in the order given.
LAZY_COMMANDS: list[LazyCommand] = []


class LlmgateGroup(TyperGroup):
    """The root command group: built once every command module has registered, it adds the lazy commands,
    labels every option's value for help (`describe_values`) and refuses empty paths (`refuse_empty_paths`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for lazy in LAZY_COMMANDS:
            if lazy.name is None or lazy.name in self.commands:
                continue
            listed = list(self.commands.items())
            at = next((i + 1 for i, (n, _) in enumerate(listed) if n == lazy.after), len(listed))
            self.commands = dict([*listed[:at], (lazy.name, lazy), *listed[at:]])
        describe_values(self)
        refuse_empty_paths(self)


app = typer.Typer(
    name="llmgate",
    help="Decide whether an LLM-serving image digest may go to production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=LlmgateGroup,
)
# Off a terminal (CI logs, pipes) these never wrap: lines keep their length, tables fit their content.
console = OutputConsole(stderr=True)
out = OutputConsole()

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    workdir: Path = Path(".llmgate")
    store: str | None = None
    debug: bool = bool(os.environ.get("LLMGATE_DEBUG"))

    def workspace(self) -> Workspace:
        try:
            return Workspace(self.workdir, self.store)
        except OSError as exc:  # a file where the directory should be, a path that cannot be made
            from pipeline.errors import BadInput

            raise BadInput(f"cannot use it as the work dir: {exc.strerror or exc}", where=f"--workdir {self.workdir}",
                           hint="name a directory llmgate may create and write") from exc


state = State()


@app.callback()
def _global(
    workdir: Annotated[Path, typer.Option("--workdir", help="State and artifacts directory.")] = Path(".llmgate"),
    store: Annotated[
        str | None,
        typer.Option("--store", help="SQLite store file (default: WORKDIR/results.db). A shared PostgreSQL "
                    "store is named by env LLMGATE_STORE_URL or LLMGATE_STORE_URL_FILE, never here."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks of unexpected errors.")] = False,
) -> None:
    state.workdir = workdir
    state.store = store
    state.debug = state.debug or debug
    install_log_redaction()  # library log lines (httpx, openai, ragas) reach stderr masked too


_LABEL = {ExitCode.BAD_INPUT: "bad input", ExitCode.INFRA: "infrastructure", ExitCode.GATE_FAILED: "blocked"}


def handle_errors(fn: F) -> F:
    """Turn pipeline errors into a one-line message (secrets masked, never read as markup) and the
    documented exit code. An unexpected exception is an infrastructure failure with its type and
    message; `--debug` (or LLMGATE_DEBUG=1) shows its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            # The stage registry installs the metric catalogue that reports and policies read (units,
            # directions); imported here, when a command runs, so `llmgate --help` loads no stage.
            import pipeline.stages.registry  # noqa: F401
            return fn(*args, **kwargs)
        except LlmgateError as exc:
            _error(_LABEL[exc.exit_code], exc.render())
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM while a run is going (the runner turns it into this)
            console.print(Text(f"interrupted ({exc})" if str(exc) else "interrupted", style="red"))
            raise typer.Exit(int(ExitCode.INFRA)) from None
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001  (the last resort: whatever it is, exit 3 and say what)
            if state.debug:
                # the traceback, and still exit 3: exit 1 (Python's own for an uncaught exception) reads
                # as "a gate failed" to CI
                traceback.print_exc(file=sys.stderr)
                _error("infrastructure", f"unexpected {type(exc).__name__}: {exc}")
                raise typer.Exit(int(ExitCode.INFRA)) from None
            _error("infrastructure", f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
            raise typer.Exit(int(ExitCode.INFRA)) from None

    return wrapper  # type: ignore[return-value]


def plain(text: str, style: str = "") -> Text:
    """A line that may quote outside text (tags, paths, reasons, server bodies, tool output), as printed:
    secrets masked, never read as rich markup."""
    return Text(redact_text(text), style=style)


def warn_unreadable(unreadable: dict[str, str]) -> None:
    """One line per run a listing left out because its stored record cannot be read."""
    for run_id, why in sorted(unreadable.items()):
        console.print(plain(f"warning: run {run_id} left out: its stored record cannot be read: {why}",
                            style="yellow"), highlight=False)


def _error(label: str, message: str) -> None:
    console.print(Text.assemble((f"error ({label}): ", "bold red"), redact_text(message)), highlight=False)


def positive_seconds(value: float | None) -> float | None:
    """Option callback for a duration: a finite number of seconds above zero (exit 2 naming the option
    otherwise). `--timeout 0` or `-1` would give up at once, `nan` never compares, `inf` never ends."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value:g} is not a duration: give a finite number of seconds above 0")
    return value


RunOpt = Annotated[
    str | None,
    typer.Option("--run", help="Run id (or unique prefix) in the store; default: the newest run."),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="llmgate.yaml (default: ./llmgate.yaml if present).")
]


def reporter() -> Reporter:
    """Live progress on a terminal, plain timestamped lines in CI logs."""
    from pipeline.cli.rich_reporter import RichReporter, usual_durations
    from pipeline.progress import PrintReporter

    if not console.is_terminal:
        return PrintReporter()
    return RichReporter(console, usual=usual_durations(lambda: state.workspace().store.runs(limit=10)))


def make_runner(config: Path | None, *, plan: str | None = None, run_plan: str | None = None, **options: Any) -> Runner:
    """The one Runner, configured from the command line. `run_plan` is the plan a stored run was
    created under; a stage of that run runs under the same plan."""
    from pipeline.config import load_config
    from pipeline.orchestrate.plan import get_plan
    from pipeline.orchestrate.runner import Runner
    from pipeline.stages.context import StageOptions

    cfg = load_config(config)
    chosen = get_plan(plan or run_plan or "local")
    return Runner(ws=state.workspace(), cfg=cfg, plan=chosen, reporter=reporter(),
                  options=StageOptions(plan=chosen.name, **{k: v for k, v in options.items() if v is not None}))
