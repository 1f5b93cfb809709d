"""What a checking stage found, apart from whether it ran.

A leak, scan, sign or manifests stage that ran to the end has status `ok` even when it found a leaked
secret, a blocking CVE or a bad signature: `ok` says the check was made, not that it passed. Every line
that reports such a stage says which (`outcome`), so "leak: ok" is never printed for a release that
leaks (the exit code already said 1). Each stage's check is its spec's (`StageSpec.check`).
"""

from __future__ import annotations

from pipeline.models import StageResult
from pipeline.stages.registry import STAGES, Registry


def check_passed(res: StageResult, registry: Registry = STAGES) -> bool | None:
    """Whether a checking stage that ran found the release fit; None for a stage that checks nothing
    or did not run to the end."""
    spec = registry.get(res.stage)
    return None if spec is None else spec.passed(res)


def outcome(res: StageResult, registry: Registry = STAGES) -> str:
    """The word to show for the stage: its status, or "blocked" for a check that ran and failed."""
    spec = registry.get(res.stage)
    return res.status.value if spec is None else spec.outcome(res)
