"""Which function runs a step, and the check its inputs must pass first: both read from the step's
stage spec (pipeline/stages/<x>.py, listed in pipeline/stages/registry.py)."""

from __future__ import annotations

from pipeline.models import Stage
from pipeline.orchestrate.plan import Plan, Step
from pipeline.stages.spec import Precheck, StageFn


def stage_fn(stage: Stage, *, plan: Plan) -> StageFn:
    return plan.step(stage).spec.fn(plan.name)


def stage_precheck(step: Step) -> Precheck | None:
    """The check a stage's inputs must pass before the runner marks or records anything for it: a refusal
    here (exit 1) leaves the stored record exactly as it was."""
    return step.spec.precheck
