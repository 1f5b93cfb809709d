"""`llmgate gate` (judge a stored run) and `llmgate policy check` (validate a policy file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import RunOpt, app, console, handle_errors, out, save_run, state
from pipeline.errors import ExitCode

policy_app = typer.Typer(help="Gate policy files (gates.yaml).", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@app.command()
@handle_errors
def gate(
    run_ref: RunOpt = None,
    policy_file: Annotated[
        Path | None, typer.Option("--policy", help="Gate policy (default: gates_file from the config).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="llmgate.yaml (default: ./llmgate.yaml if present).")
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also copy junit.xml here (for CI test reports).")
    ] = None,
) -> None:
    """Judge a run against the gate policy and its baseline. Exit 0 pass, 1 a gate failed, 2 bad policy/input."""
    from pipeline.config import load_config
    from pipeline.gates.outputs import verdict_table
    from pipeline.gates.policy import load_policy
    from pipeline.models import Decision
    from pipeline.progress import PrintReporter
    from pipeline.stages.gate import gate_stage

    cfg = load_config(config)
    policy = load_policy(policy_file or Path(cfg.gates_file))  # bad policy -> exit 2 before touching the run
    ws = state.workspace()
    run = ws.load_run(run_ref)
    gate_stage(run, cfg, ws, PrintReporter(), policy=policy)
    save_run(ws, run, run_ref)
    title = f"gates for run {run.run_id} ({run.image.by_tag})"
    out.print(verdict_table(run.gates, run.decision, run.decision_reason, title=title))
    if junit is not None:
        junit.write_bytes((ws.run_dir(run.run_id) / "junit.xml").read_bytes())
    console.print(f"verdict: {ws.run_dir(run.run_id) / 'verdict.json'}")
    raise typer.Exit(int(ExitCode.PASS if run.decision is Decision.PASS else ExitCode.GATE_FAILED))


@policy_app.command("check")
@handle_errors
def policy_check(path: Annotated[Path, typer.Argument(help="Policy file to validate.")]) -> None:
    """Validate a policy (and what it extends); exit 0 if valid, 2 with every problem named by key."""
    from pipeline.gates.policy import load_policy

    policy = load_policy(path)
    for g in policy.gates:
        bits = [g.source]
        if g.threshold is not None:
            bits.append(f"{'<=' if g.direction == 'max' else '>='} {g.threshold:g}")
        if g.margin is not None and g.parsed_compare is not None:
            bits.append(f"margin {g.margin:g} on {g.parsed_compare} ({g.resolved_test})")
        flags = ("key " if g.key else "") + ("required" if g.required else f"optional ({g.reason})")
        extra = f" [overridden: {g.reason}]" if g.overrides else ""
        out.print(f"  {g.name}: {', '.join(bits)}; {flags}{extra}", highlight=False, markup=False)
    for name, meta in policy.section_meta.items():
        state_ = "required" if meta.required else f"optional ({meta.reason})"
        out.print(f"  section {name}: {state_}", highlight=False, markup=False)
    out.print(
        f"ok: {path} ({len(policy.gates)} gates, {len(policy.sections)} sections; files: {', '.join(policy.files)})"
    )
