"""The gate engine's finer rules, each pinned by a case where getting it wrong changes a verdict, a
recorded figure or the reason a person reads: how figures are written, how a failed item is scored,
what an identical comparison records, which test runs on which scores, whom a verdict names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.models import ItemResult, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.gate import GateStatus
from tests.test_gate_engine import CORR, REFUSAL, by_name, judge, make_run, policy


@pytest.fixture(scope="module")
def scores() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(23)
    level = rng.beta(4, 2, 200)
    return {
        "base": np.clip(level + rng.normal(0, 0.05, 200), 0, 1),
        "same": np.clip(level + rng.normal(0, 0.05, 200), 0, 1),
        "refusal": (rng.random(200) < 0.95).astype(float),
    }


def _items_run(items: list[ItemResult], *, run_id: str | None = None) -> RunRecord:
    ev = StageResult(stage=Stage.EVAL, status=StageStatus.OK, items=items,
                     metrics={"correctness_mean": 0.5})
    kw = {"run_id": run_id} if run_id else {}
    return make_run(extra_stages={"eval": ev}, **kw)


# -- figures in the reason --------------------------------------------------------------------------


def test_a_threshold_verdict_writes_its_figures_to_four_significant_digits() -> None:
    bench = StageResult(stage=Stage.BENCH, status=StageStatus.OK, metrics={"error_rate": 0.0123456})
    run = make_run(extra_stages={"bench": bench})
    v = by_name(judge(policy({"name": "err", "source": "bench.error_rate", "threshold": 0.05}), run).verdicts)["err"]
    assert v.status is GateStatus.PASS
    assert v.reason.startswith("0.01235 <= 0.05")


# -- how items are scored -----------------------------------------------------------------------------


def test_an_item_that_failed_as_a_whole_scores_zero_in_an_item_gate() -> None:
    items = [ItemResult(item_id=f"q{i}", question="?", scores={"correctness": 1.0}) for i in range(3)]
    items.append(ItemResult(item_id="q3", question="?", error="HTTP 500 from the server"))
    gate = {"name": "corr", "source": "items:correctness", "threshold": 0.5}
    v = by_name(judge(policy(gate), _items_run(items)).verdicts)["corr"]
    assert v.value == pytest.approx(0.75)  # three 1.0 and the failed item's 0


def test_a_failed_item_pairs_with_a_baseline_zero_as_the_same_score(scores: dict[str, np.ndarray]) -> None:
    """A whole-item failure is a 0, so against a baseline that scored the item 0 nothing changed."""
    base_scores = scores["base"].copy()
    base_scores[0] = 0.0
    base = make_run(base_scores, run_id="base0001")
    new = make_run(base_scores)
    new.stages["eval"].items[0] = ItemResult(item_id="q0", question="?", error="timeout")
    v = by_name(judge(policy(CORR), new, base).verdicts)["correctness"]
    assert v.details.outcome == "identical" and v.status is GateStatus.PASS


# -- what a comparison records --------------------------------------------------------------------------


def test_an_identical_comparison_records_a_zero_difference_and_interval(scores: dict[str, np.ndarray]) -> None:
    base = make_run(scores["base"], scores["refusal"], run_id="base0001")
    v = by_name(judge(policy(CORR, REFUSAL), make_run(scores["base"], scores["refusal"]), base).verdicts)
    for name in ("correctness", "refusal"):
        assert v[name].details.outcome == "identical"
        assert (v[name].difference, v[name].ci_low, v[name].ci_high) == (0.0, 0.0, 0.0)


def test_mcnemar_on_scores_that_are_not_0_1_falls_back_to_the_bootstrap_and_says_so(
    scores: dict[str, np.ndarray],
) -> None:
    """A refusal gate tests with McNemar; a scorer that answered 0.5 for some item makes that test wrong."""
    half = scores["refusal"].copy()
    half[:5] = 0.5
    base = make_run(scores["base"], scores["refusal"], run_id="base0001")
    v = by_name(judge(policy(REFUSAL), make_run(scores["base"], half), base).verdicts)["refusal"]
    assert "bootstrap" in v.details.test.lower() and "McNemar" not in v.details.test
    assert "scores are not 0/1: paired bootstrap used instead of McNemar" in v.reason
    # a gate that asked for the bootstrap on continuous scores has nothing to fall back from
    plain = by_name(judge(policy(CORR), make_run(scores["same"]), base).verdicts)["correctness"]
    assert "instead of McNemar" not in plain.reason


def test_a_paired_comparison_names_the_baseline_run_it_was_made_against(scores: dict[str, np.ndarray]) -> None:
    base = make_run(scores["base"], run_id="base0001")
    v = by_name(judge(policy(CORR), make_run(scores["same"]), base).verdicts)["correctness"]
    assert "vs baseline base0001: diff " in v.reason
    assert math.isfinite(v.difference)
