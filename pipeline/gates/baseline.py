"""Which earlier run a release is compared with, and why (or why no comparison is possible).

The baseline is the last *promoted* run for the same target, scored on the same ground-truth version
(same version and same sha256: a silently edited dataset is a different dataset). If the last
promoted run was scored on another version, the caller's `rescore` re-scores that run's stored
responses on this run's ground truth; a re-score that fails is a stated outcome (`rescore_failed`,
with the error), and without a `rescore` the verdicts say that no quality comparison is possible.
A run that was already gated keeps the baseline it was gated against (`run.baseline_run_id`, or none
when it was gated as its target's first release), so rerunning the gate gives the same verdict even
after later promotions: re-gating an older promoted run never compares it with its successors.

Latency series compared against a stored baseline carry run-to-run machine drift; a baseline
measured in the same run (pipeline/bench/interleave.py) does not, and the engine prefers it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pipeline.errors import BadInput, LlmgateError
from pipeline.models import GroundTruthRef, RunRecord
from pipeline.schemas.gate import BaselineInfo, GateDetails

# Re-scores the baseline run's stored responses on this run's ground truth; returns the re-scored
# baseline record (its eval stage replaced, its ground_truth set to the given one).
Rescore = Callable[[RunRecord, GroundTruthRef], RunRecord]


class BaselineStore(Protocol):
    """What choosing a baseline reads from the results store."""

    def get(self, run_id: str) -> RunRecord: ...

    def last_promoted(self, target: str, *, ground_truth_version: str | None = None) -> RunRecord | None: ...


class BaselineKind(StrEnum):
    SAME = "same_ground_truth"  # directly comparable
    RESCORED = "rescored"  # a promoted run on another version, re-scored on this run's version
    NONE = "first_release"  # nothing promoted for this target yet
    INCOMPARABLE = "incomparable"  # promoted runs exist but their items cannot be paired with this run's
    RESCORE_FAILED = "rescore_failed"  # re-scoring the baseline on this run's ground truth raised


@dataclass(frozen=True)
class Baseline:
    kind: BaselineKind
    reason: str
    run: RunRecord | None = None
    items_comparable: bool = True  # False: per-item scores cannot be paired (latency samples still can)

    @property
    def run_id(self) -> str | None:
        return self.run.run_id if self.run else None

    def info(self) -> BaselineInfo:
        return BaselineInfo(
            kind=self.kind.value,
            run_id=self.run_id,
            items_comparable=self.items_comparable and self.run is not None,
            reason=self.reason,
            model_digest=self.run.model.digest if self.run is not None and self.run.model is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        return self.info().model_dump(mode="json")


def first_release(target: str) -> Baseline:
    return Baseline(BaselineKind.NONE, f"first release for target '{target}': absolute thresholds only")


def given(run: RunRecord) -> Baseline:
    return Baseline(BaselineKind.SAME, f"baseline {run.run_id} (given)", run)


def _gt(run: RunRecord) -> tuple[str | None, str | None]:
    return (run.ground_truth.version, run.ground_truth.sha256) if run.ground_truth else (None, None)


def _rescored(baseline: RunRecord, run: RunRecord, rescore: Rescore) -> Baseline:
    gt = run.ground_truth
    assert gt is not None
    was, now = _gt(baseline)[0], gt.version
    try:
        out = rescore(baseline, gt)
    except LlmgateError as exc:
        why = exc.render()
    except Exception as exc:  # noqa: BLE001 - any failure is the stated outcome `rescore_failed`, never lost
        why = f"{type(exc).__name__}: {exc}"
    else:
        if not isinstance(out, RunRecord):
            why = f"the re-scoring returned {type(out).__name__}, not a run record"
        elif _gt(out) != _gt(run):
            why = f"the re-scored record is on ground truth {_gt(out)[0]}, not {now}"
        else:
            return Baseline(
                BaselineKind.RESCORED,
                f"last promoted run {baseline.run_id} was scored on ground truth {was}; its stored responses were "
                f"re-scored on {now} for the quality comparison (latency samples compared as recorded)",
                out,
            )
    return Baseline(
        BaselineKind.RESCORE_FAILED,
        f"re-scoring promoted run {baseline.run_id} (ground truth {was}) on {now} failed: {why}",
        baseline,
        items_comparable=False,
    )


def _without_rescore(run: RunRecord, other: RunRecord) -> Baseline:
    version = _gt(run)[0]
    ov = _gt(other)[0]
    why = (
        f"ground truth {version} has a different sha256 than the one promoted run {other.run_id} was scored on"
        if ov == version
        else f"last promoted run {other.run_id} was scored on ground truth {ov}, this run on {version}"
    )
    return Baseline(
        BaselineKind.INCOMPARABLE,
        f"{why}, and no re-scoring was given: per-item scores cannot be paired (latency samples still compared)",
        other,
        items_comparable=False,
    )


def find_baseline(run: RunRecord, store: BaselineStore, *, rescore: Rescore | None) -> Baseline:
    """The baseline for `run` (see the module doc); never the run itself."""
    earlier = run.details_as(GateDetails)
    if earlier is not None and not run.baseline_run_id and earlier.baseline.kind == BaselineKind.NONE.value:
        return Baseline(BaselineKind.NONE, f"first release for target '{run.target}' (as when this run was first "
                                           "gated): absolute thresholds only")
    if run.baseline_run_id:
        try:
            pinned: RunRecord | None = store.get(run.baseline_run_id)
        except BadInput:
            pinned = None
        if pinned is not None and pinned.run_id != run.run_id:
            if _gt(pinned) == _gt(run):
                return Baseline(
                    BaselineKind.SAME, f"baseline {pinned.run_id} (pinned by an earlier gate of this run)", pinned
                )
            if run.ground_truth is not None:
                return _rescored(pinned, run, rescore) if rescore else _without_rescore(run, pinned)
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
            "per-item scores cannot be paired (latency samples still compared)",
            latest,
            items_comparable=False,
        )
    other = candidate if candidate is not None and candidate.run_id != run.run_id else latest
    return _rescored(other, run, rescore) if rescore else _without_rescore(run, other)
