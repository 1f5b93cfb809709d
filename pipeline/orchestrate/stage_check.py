"""What a checking stage found, apart from whether it ran.

A leak, scan, sign or manifests stage that ran to the end has status `ok` even when it found a leaked
secret, a blocking CVE or a bad signature: `ok` says the check was made, not that it passed. Every line
that reports such a stage says which (`outcome`), so "leak: ok" is never printed for a release that
leaks (the exit code already said 1).
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.models import Stage, StageResult, StageStatus

CHECKS: dict[Stage, Callable[[StageResult], bool]] = {
    Stage.LEAK: lambda r: r.metrics.get("leaks") == 0,
    Stage.SCAN: lambda r: r.metrics.get("blocking") == 0,
    Stage.SIGN: lambda r: r.metrics.get("verified") == 1.0,
    Stage.MANIFESTS: lambda r: r.metrics.get("violations") == 0,
}


def check_passed(res: StageResult) -> bool | None:
    """Whether a checking stage that ran found the release fit; None for a stage that checks nothing
    or did not run to the end."""
    check = CHECKS.get(res.stage)
    if check is None or res.status is not StageStatus.OK:
        return None
    return check(res)


def outcome(res: StageResult) -> str:
    """The word to show for the stage: its status, or "blocked" for a check that ran and failed."""
    return "blocked" if check_passed(res) is False else res.status.value
