"""`llmgate policy check`: validate a policy file, and check that a plan feeds every required gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from pipeline.cli.app import app, console, handle_errors, out, plain
from pipeline.errors import ExitCode

policy_app = typer.Typer(help="Gate policy files (gates.yaml).", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
@handle_errors
def policy_check(
    path: Annotated[Path, typer.Argument(help="Policy file to validate.")],
    plan: Annotated[str | None, typer.Option("--plan", help="Also check that this plan feeds every required gate.",
                                             metavar="local|dagger")] = None,
) -> None:
    """Validate a policy (and what it extends); exit 0 if valid, 2 with every problem named by key,
    1 when `--plan` runs no stage that feeds a required gate (it would block every release).

    Example: llmgate policy check gates.yaml --plan dagger
    """
    from pipeline.gates.policy import load_policy
    from pipeline.orchestrate.plan import get_plan
    from pipeline.orchestrate.plan_check import unfed_gates
    from pipeline.supplychain.gate_sections import SECTIONS

    chosen = get_plan(plan) if plan is not None else None  # an unknown plan is bad input before anything else
    policy = load_policy(path, sections=SECTIONS)
    for g in policy.gates:
        bits = [g.source]
        if g.threshold is not None:
            bits.append(f"{'<=' if g.direction == 'max' else '>='} {g.threshold:g}")
        if g.margin is not None and g.parsed_compare is not None:
            bits.append(f"margin {g.margin:g} on {g.parsed_compare} ({g.resolved_test})")
        flags = ("key " if g.key else "") + ("required" if g.required else f"optional ({g.reason})")
        extra = f" [overridden: {g.reason}]" if g.overrides else ""
        out.print(plain(f"  {g.name}: {', '.join(bits)}; {flags}{extra}"))
    for name, meta in policy.section_meta.items():
        state_ = "required" if meta.required else f"optional ({meta.reason})"
        out.print(plain(f"  section {name}: {state_}"))
    out.print(plain(f"ok: {path} ({len(policy.gates)} gates, {len(policy.sections)} sections; "
                    f"files: {', '.join(policy.files)})"))
    if chosen is None:
        return
    unfed = unfed_gates(policy, chosen, SECTIONS)
    for u in unfed:
        console.print(plain(f"not fed: required gate {u.gate} reads {u.stage}.{u.name}: {u.why}", style="red"))
    if unfed:
        raise typer.Exit(int(ExitCode.GATE_FAILED))
    out.print(Text(f"the {chosen.name} plan feeds every required gate"))
