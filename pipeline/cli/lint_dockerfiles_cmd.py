"""`llmgate lint-dockerfiles`: the offline Dockerfile policy plus hadolint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from pipeline.cli.app import ConfigOpt, app, console, handle_errors, out, plain
from pipeline.errors import ExitCode


@app.command("lint-dockerfiles")
@handle_errors
def lint_dockerfiles_cmd(
    files: Annotated[list[Path] | None, typer.Argument(help="Dockerfiles (default: dockerfiles/*.Dockerfile).")] = None,
    build_arg: Annotated[list[str] | None, typer.Option("--build-arg", help="NAME=VALUE as the build passes it.")] = None,
    no_hadolint: Annotated[bool, typer.Option("--no-hadolint", help="Skip hadolint.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Offline Dockerfile policy (digest-pinned FROM, non-root USER, no credentials, no weights,
    secrets only via --mount=type=secret) plus hadolint. Exit 0 clean, 1 violations, 2 bad input.

    Example: llmgate lint-dockerfiles dockerfiles/cpu.Dockerfile --no-hadolint
    """
    from pipeline.baselock import read_lock
    from pipeline.config import load_config
    from pipeline.errors import BadInput
    from pipeline.supplychain.dockerfile_policy import default_dockerfiles, lint_dockerfiles

    cfg = load_config(config)
    args = dict(cfg.build.build_args)
    lock = read_lock(Path(cfg.stack.lock_file))
    if lock is not None:
        args.setdefault("BASE_IMAGE", lock.ref)  # what `llmgate build` passes
    for item in build_arg or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise BadInput("expected NAME=VALUE", where=f"--build-arg {item}")
        args[name] = value
    paths = list(files or default_dockerfiles())
    if not paths:
        raise BadInput("no Dockerfiles found", where="dockerfiles/*.Dockerfile")
    result = lint_dockerfiles(paths, build_args=args, hadolint=not no_hadolint)
    for v in result.violations:
        tag = ("ERROR", "red") if v.blocking else ("note", "yellow")
        out.print(Text.assemble(tag, " ", plain(v.render())), highlight=False, soft_wrap=True)
    if result.hadolint:
        console.print(plain(f"hadolint {result.hadolint}"))
    out.print(plain(f"{len(result.files)} file(s), {len(result.blocking)} blocking violation(s)"))
    raise typer.Exit(int(ExitCode.GATE_FAILED if result.blocking else ExitCode.PASS))
