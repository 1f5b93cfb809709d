"""`llmgate stack up|down|status`: the local Docker Engine, registry and seeded base image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from pipeline.cli.app import app, handle_errors, out, plain, state
from pipeline.errors import ExitCode

stack_app = typer.Typer(help="Local stack: Docker Engine, OCI registry on 127.0.0.1:5000, base image.",
                        no_args_is_help=True)
app.add_typer(stack_app, name="stack")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="llmgate.yaml (default: ./llmgate.yaml if present).")]


def _print(st) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=Text("llmgate stack"), show_lines=False)
    table.add_column("part")
    table.add_column("ok")
    table.add_column("state", overflow="fold")
    for name, ok, text in st.rows():
        table.add_row(plain(name), Text("yes", style="green") if ok else Text("no", style="red"), plain(text))
    out.print(table)


@stack_app.command("up")
@handle_errors
def up(
    install: Annotated[bool, typer.Option("--install", help="Debian, as root: apt-get install docker.io, "
                                          "docker-registry, debootstrap and start dockerd when absent.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Start what is missing (engine with --install, registry, base image); a no-op when all is up.

    Example: llmgate stack up --install
    """
    from pipeline.cli.app import console
    from pipeline.cli.rich_reporter import RichReporter
    from pipeline.config import load_config
    from pipeline.stack import stack_up

    cfg = load_config(config)
    st = stack_up(cfg.stack, state.workdir, Path(cfg.stack.lock_file), RichReporter(console), install=install)
    _print(st)
    out.print(plain("; ".join(st.actions) if st.actions else "already up: nothing to do"))


@stack_app.command("down")
@handle_errors
def down(config: ConfigOpt = None) -> None:
    """Stop the registry this workspace started (the shared engine keeps running).

    Example: llmgate stack down
    """
    from pipeline.cli.app import console
    from pipeline.cli.rich_reporter import RichReporter
    from pipeline.config import load_config
    from pipeline.stack import stack_down

    cfg = load_config(config)
    actions = stack_down(cfg.stack, state.workdir, RichReporter(console))
    out.print(plain("; ".join(actions) if actions else "nothing of this workspace was running"))


@stack_app.command("status")
@handle_errors
def status(config: ConfigOpt = None) -> None:
    """Engine, registry and base-image state; exit 0 when all are up, 3 otherwise.

    Example: llmgate stack status
    """
    from pipeline.config import load_config
    from pipeline.stack import stack_status

    cfg = load_config(config)
    st = stack_status(cfg.stack, state.workdir, Path(cfg.stack.lock_file))
    _print(st)
    raise typer.Exit(int(ExitCode.PASS if st.ok else ExitCode.INFRA))
