"""The named outcomes of a gate (`GateVerdict.details.outcome`): why it has the status it has.

Every way a gate can end is one of these, so no edge case (no data, bad data, too little data, a
disturbed machine, a baseline that cannot be used, a scorer that is not trusted) is a silent pass or an
exception. Inconclusive outcomes never pass: the gate's `on_inconclusive` makes them `inconclusive`
(the default) or `fail`.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    # the gate's own stage and value
    STAGE_MISSING = "stage_missing"  # no result for the stage: not_run
    STAGE_SKIPPED = "stage_skipped"  # not_run
    STAGE_ERROR = "stage_error"  # not_run
    STAGE_FAILED = "stage_failed"  # the thing under test misbehaved: fail
    METRIC_MISSING = "metric_missing"  # not_run
    INVALID_VALUE = "invalid_value"  # the recorded value is NaN or infinite: not_run
    # absolute threshold only
    MET = "met"
    VIOLATED = "threshold_violated"
    # a threshold violated on a disturbed machine by more than the disturbance can explain: fail
    VIOLATED_DISTURBED = "threshold_violated_beyond_disturbance"
    # comparison against a baseline
    FIRST_RELEASE = "first_release"  # nothing to compare with: the threshold decides (none: inconclusive)
    APPROVED = "first_release_approved"  # no baseline and no threshold, a person approved the release
    COMPARE_DATA_MISSING = "compare_data_missing"  # this run lacks the series/items to compare: not_run
    REGRESSION = "regression"  # worse than the margin, shown at alpha (Holm): fail
    CATEGORY_REGRESSION = "category_regression"  # one ground-truth category collapsed: fail
    NON_INFERIOR = "non_inferior"  # the interval lies inside the margin: pass
    NO_REGRESSION_SHOWN = "no_regression_shown"  # not shown worse, and powered by design: pass (non-key)
    IDENTICAL = "identical"  # every paired item scored the same in both runs: pass
    # inconclusive: `on_inconclusive` decides (default: the gate is inconclusive)
    NOT_SHOWN_NON_INFERIOR = "not_shown_non_inferior"  # key gate: the bound does not clear the margin
    UNDERPOWERED = "underpowered"  # twice the margin would not be caught with the policy's power (`on_underpowered`)
    TOO_FEW = "too_few"  # fewer than min_n paired items or samples per side
    ZERO_VARIANCE = "zero_variance"  # a latency series with every sample equal: not a real measurement
    INVALID_SAMPLES = "invalid_samples"  # NaN, infinite, zero or negative samples/scores
    ENVIRONMENT_DISTURBED = "environment_disturbed"  # other work on the bench machine
    BASELINE_INCOMPARABLE = "baseline_incomparable"  # items cannot be paired with the baseline
    RESCORE_FAILED = "rescore_failed"  # re-scoring the baseline on this ground truth failed
    NO_BASELINE = "no_baseline"  # first release, a margin and no threshold: nothing shown
    UNCALIBRATED = "uncalibrated"  # the scorer is not trusted: its figures show nothing either way


INCONCLUSIVE = frozenset(
    {
        Outcome.NOT_SHOWN_NON_INFERIOR,
        Outcome.UNDERPOWERED,
        Outcome.TOO_FEW,
        Outcome.ZERO_VARIANCE,
        Outcome.INVALID_SAMPLES,
        Outcome.ENVIRONMENT_DISTURBED,
        Outcome.BASELINE_INCOMPARABLE,
        Outcome.RESCORE_FAILED,
        Outcome.NO_BASELINE,
        Outcome.UNCALIBRATED,
    }
)
