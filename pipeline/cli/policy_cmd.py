"""`llmgate policy check`: validate a policy file, and check that a plan feeds every required gate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from pipeline.cli.app import ConfigOpt, app, console, handle_errors, out, plain
from pipeline.errors import ExitCode

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig
    from pipeline.gates.policy import Policy

policy_app = typer.Typer(help="Gate policy files (gates.yaml).", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


def _ground_truth_sizes(path: str) -> dict[str, int] | None:
    """Items per population of the configured ground truth (None when it cannot be read here)."""
    from evals.ground_truth import load_ground_truth
    from pipeline.errors import BadInput

    try:
        gt = load_ground_truth(path)
    except BadInput:
        return None
    answer = [i for i in gt.items if not i.should_refuse]
    return {"all": len(gt.items), "answer": len(answer), "refuse": len(gt.items) - len(answer),
            "grounded": sum(1 for i in answer if i.contexts)}


def _scorer_error() -> dict[str, float]:
    """The offline refusal scorer's plausible error rate (1 - the lower end of its held-out agreement), which
    shrinks a refusal margin at gate time; none when it has no trusted calibration on record."""
    from evals.calibration import trust_for as scorer_trust
    from evals.refusal import VERSION

    trust = scorer_trust(f"offline-refusal/{VERSION}")
    return {"refusal": trust.error_rate} if trust is not None and trust.held_out else {}


def _check_design(policy: Policy, cfg: PipelineConfig, path: Path) -> None:
    """Print what the policy needs; refuse (exit 2) sizes that cannot support its margins and thresholds."""
    from pipeline.errors import BadInput
    from pipeline.gates import sizing

    b = cfg.bench
    stored = not (b.same_run_baseline and b.shape == "concurrency")
    items = _ground_truth_sizes(cfg.eval.ground_truth)
    eps = _scorer_error()
    n, needs = sizing.bench_requests(policy, stored=stored)
    against = "a stored baseline" if stored else "a baseline measured in the same run"
    shown = b.requests if b.requests is not None else min(n, b.max_requests)
    out.print(plain(f"sizing: the bench sends {shown} requests per side (comparisons against {against}; "
                    f"{'configured' if b.requests is not None else 'derived from this policy'})"))
    for need in [*needs[:4], *sizing.item_needs(policy, eps)]:
        out.print(plain(f"  {need.gate}: {need.why}"))
    if items is None:
        out.print(plain(f"  ground truth {cfg.eval.ground_truth} not readable here: item sizes not checked"))
    problems = sizing.design_problems(policy, items=items, requests=b.requests, max_requests=b.max_requests,  # type: ignore[arg-type]
                                      stored=stored, scorer_error=eps)
    if problems:
        raise BadInput("the planned sizes cannot support this policy:\n" + "\n".join(f"  {k}: {m}" for k, m in problems),
                       where=str(path))


@policy_app.command("check")
@handle_errors
def policy_check(
    path: Annotated[Path, typer.Argument(help="Policy file to validate.")],
    plan: Annotated[str | None, typer.Option("--plan", help="Also check that this plan feeds every required gate.",
                                             metavar="local|dagger")] = None,
    config: ConfigOpt = None,
) -> None:
    """Validate a policy (and what it extends); exit 0 if valid, 2 with every problem named by key (a
    threshold that cannot fail, a margin the planned ground truth or bench cannot support: the n needed),
    1 when `--plan` runs no stage that feeds a required gate (it would block every release).

    The planned sizes come from the config (-c, default ./llmgate.yaml or the embedded default): the ground
    truth's items per population and the bench's request count (unset: derived from this policy).

    Example: llmgate policy check gates.yaml --plan dagger
    """
    from pipeline.config import load_config
    from pipeline.gates.policy import load_policy
    from pipeline.orchestrate.plan import get_plan
    from pipeline.orchestrate.plan_check import unfed_gates
    from pipeline.supplychain.gate_sections import SECTIONS

    chosen = get_plan(plan) if plan is not None else None  # an unknown plan is bad input before anything else
    cfg = load_config(config)
    policy = load_policy(path, sections=SECTIONS, catalogue=chosen.catalogue if chosen is not None else None)
    _check_design(policy, cfg, path)
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
