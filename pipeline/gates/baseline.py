"""Which earlier run a release is compared with, and why (or why no comparison is possible).

The baseline is the last *promoted* run for the same target, scored on the same ground-truth
version (same version and same sha256: a silently edited dataset is a different dataset). If the
last promoted run used another version, its stored responses are re-scored against this run's
ground truth when the eval stage offers `pipeline.stages.evaluate.rescore`; otherwise the verdicts
say plainly that no comparison is possible. A run that was already gated keeps the baseline it was
gated against (`run.baseline_run_id`), so rerunning the gate gives the same verdict even after
later promotions.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.errors import BadInput
from pipeline.models import RunRecord, StageResult
from pipeline.store import Store


class BaselineKind(StrEnum):
    SAME = "same_ground_truth"  # directly comparable
    RESCORED = "rescored"  # a promoted run on another version, re-scored on this run's version
    NONE = "first_release"  # nothing promoted for this target yet
    INCOMPARABLE = "incomparable"  # promoted runs exist but none can be compared


@dataclass(frozen=True)
class Baseline:
    kind: BaselineKind
    reason: str
    run: RunRecord | None = None
    items_comparable: bool = True  # False: per-item scores cannot be paired (latency samples still can)

    @property
    def run_id(self) -> str | None:
        return self.run.run_id if self.run else None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "run_id": self.run_id,
            "items_comparable": self.items_comparable and self.run is not None,
            "reason": self.reason,
        }


def first_release(target: str) -> Baseline:
    return Baseline(BaselineKind.NONE, f"first release for target '{target}': absolute thresholds only")


def _gt(run: RunRecord) -> tuple[str | None, str | None]:
    return (run.ground_truth.version, run.ground_truth.sha256) if run.ground_truth else (None, None)


def _rescore_hook() -> Any | None:
    """`pipeline.stages.evaluate.rescore` when the eval stage provides it (owner: eval stage)."""
    try:
        mod = importlib.import_module("pipeline.stages.evaluate")
    except ModuleNotFoundError:
        return None
    hook = getattr(mod, "rescore", None)
    return hook if callable(hook) else None


def _rescored(candidate: RunRecord, run: RunRecord, hook: Any) -> Baseline:
    try:
        out = hook(candidate, run.ground_truth)
    except Exception as exc:  # noqa: BLE001 - a failed re-score means "no comparison", stated
        return Baseline(
            BaselineKind.INCOMPARABLE,
            f"last promoted run {candidate.run_id} used ground truth {_gt(candidate)[0]}, this run "
            f"{_gt(run)[0]}; re-scoring its stored responses failed ({type(exc).__name__}: {exc}): quality gates use "
            "absolute thresholds only, latency samples are still compared",
            candidate,
            items_comparable=False,
        )
    if isinstance(out, StageResult):
        copy = candidate.model_copy(deep=True)
        copy.stages["eval"] = out
        copy.ground_truth = run.ground_truth
        out = copy
    if not isinstance(out, RunRecord):
        return Baseline(
            BaselineKind.INCOMPARABLE,
            f"rescore hook returned {type(out).__name__}: quality gates use absolute thresholds only",
            candidate,
            items_comparable=False,
        )
    return Baseline(
        BaselineKind.RESCORED,
        f"last promoted run {candidate.run_id} used ground truth {_gt(candidate)[0]}; its stored responses were "
        f"re-scored on {_gt(run)[0]} for the quality comparison (latency samples compared as recorded)",
        out,
    )


def find_baseline(run: RunRecord, store: Store, *, rescore: Any | None = None) -> Baseline:
    """The baseline for `run` (see the module doc); never the run itself."""
    if run.baseline_run_id:
        try:
            pinned = store.get(run.baseline_run_id)
        except BadInput:
            pinned = None
        if pinned is not None and pinned.run_id != run.run_id:
            if _gt(pinned) == _gt(run):
                return Baseline(
                    BaselineKind.SAME, f"baseline {pinned.run_id} (pinned by an earlier gate of this run)", pinned
                )
            hook = rescore or _rescore_hook()
            if hook is not None:
                return _rescored(pinned, run, hook)
    version, sha = _gt(run)
    candidate = store.last_promoted(run.target, ground_truth_version=version) if version else None
    if candidate is not None and candidate.run_id != run.run_id and _gt(candidate)[1] == sha:
        return Baseline(
            BaselineKind.SAME,
            f"last promoted run {candidate.run_id} ({candidate.image.by_tag}) on ground truth {version}",
            candidate,
        )
    latest = store.last_promoted(run.target)
    if latest is None or latest.run_id == run.run_id:
        return first_release(run.target)
    if version is None:
        return Baseline(
            BaselineKind.INCOMPARABLE,
            f"this run records no ground-truth version, so it cannot be paired with promoted run {latest.run_id}: "
            "quality gates use absolute thresholds only, latency samples are still compared",
            latest,
            items_comparable=False,
        )
    hook = rescore or _rescore_hook()
    other = latest if candidate is None else candidate
    if hook is not None:
        return _rescored(other, run, hook)
    ov, _osha = _gt(other)
    why = (
        f"ground truth {version} has a different sha256 than the one promoted run {other.run_id} was scored on"
        if ov == version
        else f"last promoted run {other.run_id} was scored on ground truth {ov}, this run on {version}"
    )
    return Baseline(
        BaselineKind.INCOMPARABLE,
        f"{why}; per-item scores cannot be paired and the eval stage offers no re-scoring: quality gates use "
        "absolute thresholds only, latency samples are still compared",
        other,
        items_comparable=False,
    )
