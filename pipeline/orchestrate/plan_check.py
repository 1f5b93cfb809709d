"""Which required gates of a policy a plan cannot feed.

A gate reads a stage's metric, sample series or per-item scores; a section reads a stage's result.
A plan feeds it when it runs that stage and the stage records that name in this plan (`Step.produces`
narrows what a step records, e.g. the Dagger plan's build step records no build time). A required
gate no step feeds would be `not_run` in every run, which blocks every release: the check names it
before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.gates.policy import Policy, gate_sources
from pipeline.gates.sections import SectionSet
from pipeline.orchestrate.plan import Plan


@dataclass(frozen=True)
class Unfed:
    gate: str
    stage: str
    name: str
    why: str


def unfed_gates(policy: Policy, plan: Plan, sections: SectionSet) -> list[Unfed]:
    """Every required gate input the plan does not produce."""
    steps = {s.stage: s for s in plan.steps}
    out: list[Unfed] = []
    for src in gate_sources(policy, sections):
        if not src.required:
            continue
        step = steps.get(src.stage)
        if step is None:
            out.append(Unfed(src.gate, src.stage.value, src.name,
                             f"the {plan.name} plan has no {src.stage.value} stage"))
        elif step.produces is not None and src.name not in step.produces:
            out.append(Unfed(src.gate, src.stage.value, src.name,
                             f"the {plan.name} plan's {src.stage.value} step records only {', '.join(step.produces)}"))
    return out
