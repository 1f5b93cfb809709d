"""The gate engine's finer rules, each pinned by a case where getting it wrong changes a verdict, a
recorded figure or the reason a person reads: how figures are written, how a failed item is scored,
what an identical comparison records, which test runs on which scores, whom a verdict names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.gates import stats
from pipeline.models import ItemResult, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.gate import GateStatus
from tests.test_gate_engine import CORR, REFUSAL, TRUSTED, by_name, judge, make_run, policy, trust


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
    items.append(ItemResult(item_id="q4", question="?", errors={"correctness": "judge timed out"}))
    for i in (5, 6):  # correctness does not apply to these two
        items.append(ItemResult(item_id=f"q{i}", question="?", scores={"refusal": 1.0}))
    gate = {"name": "corr", "source": "items:correctness", "threshold": 0.5}
    v = by_name(judge(policy(gate), _items_run(items)).verdicts)["corr"]
    assert v.value == pytest.approx(3 / 5)  # three 1.0 and the two failures' 0; q5 and q6 are not counted


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


# -- thresholds ------------------------------------------------------------------------------------------


def test_a_value_equal_to_its_threshold_meets_it_in_either_direction() -> None:
    bench = StageResult(stage=Stage.BENCH, status=StageStatus.OK, metrics={"error_rate": 0.01, "goodput": 0.9})
    run = make_run(extra_stages={"bench": bench})
    pol = policy({"name": "err", "source": "bench.error_rate", "threshold": 0.01},
                 {"name": "good", "source": "bench.goodput", "threshold": 0.9},
                 {"name": "good_hi", "source": "bench.goodput", "threshold": 0.95})
    v = by_name(judge(pol, run).verdicts)
    assert v["err"].status is GateStatus.PASS and v["err"].reason.startswith("0.01 <= 0.01")
    assert v["err"].details.outcome == "met"  # judged against a baseline-free threshold, no first release here
    assert v["good"].status is GateStatus.PASS and v["good"].reason.startswith("0.9 >= 0.9")
    assert v["good"].details.threshold_met is True
    assert v["good_hi"].status is GateStatus.FAIL and v["good_hi"].reason.startswith("0.9 violates >= 0.95")
    assert v["good_hi"].details.outcome == "threshold_violated" and v["good_hi"].details.threshold_met is False


# -- items: pairing, subsets, categories -----------------------------------------------------------------


def item_run(scores: dict[str, float], *, cats: dict[str, str] | None = None, refuse: set[str] = frozenset(),
             dim: str = "correctness", run_id: str | None = None) -> RunRecord:
    """An eval stage over the given items (id -> score of `dim`), with categories and should-refuse items."""
    items = [ItemResult(item_id=i, question="?", category=(cats or {}).get(i, ""),
                        expected_behaviour="refuse" if i in refuse else "answer", scores={dim: s})
             for i, s in scores.items()]
    metric = {"correctness": "correctness_mean", "refusal": "refusal_accuracy"}[dim]
    # the stage's mean over the finite scores (a scorer that dropped a NaN before averaging)
    ev = StageResult(stage=Stage.EVAL, status=StageStatus.OK, items=items, details=TRUSTED,
                     metrics={metric: float(np.mean([x for x in scores.values() if math.isfinite(x)]))})
    kw = {"run_id": run_id} if run_id else {}
    return make_run(extra_stages={"eval": ev}, **kw)


def _small_categories_collapse(scores: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float],
                                                                        dict[str, str]]:
    """(new, base, categories) of 60 items: 51 in "rest", 5 in "five", 4 in "four"; both small categories
    collapse while the rest improves, so the average alone shows no regression."""
    ids = [f"q{i}" for i in range(60)]
    cats = {i: "rest" for i in ids[:51]} | {i: "five" for i in ids[51:56]} | {i: "four" for i in ids[56:]}
    base = {i: 0.8 * float(s) for i, s in zip(ids, scores["base"][:60], strict=True)} | {i: 0.5 for i in ids[51:]}
    new = {i: base[i] + 0.1 for i in ids[:51]} | {i: 0.0 for i in ids[51:]}
    return new, base, cats


def test_a_category_is_checked_from_five_paired_items_by_default(scores: dict[str, np.ndarray]) -> None:
    new, base, cats = _small_categories_collapse(scores)
    gate = {**CORR, "threshold": None, "key": False, "category_margin": 0.1}
    v = by_name(judge(policy(gate), item_run(new, cats=cats), item_run(base, cats=cats, run_id="b1")).verdicts)
    g = v["correctness"]
    assert g.status is GateStatus.FAIL and g.details.outcome == "category_regression"
    assert g.details.categories == ["five"] and g.details.categories_checked == 2  # "four" is below 5
    assert "five (-0.50 on 5 items, p=" in g.reason
    assert "categories dropped beyond the category margin 0.1 (Holm over 2 categories)" in g.reason
    # four items are not enough by default; a policy may lower the bar
    low = by_name(judge(policy({**gate, "category_min_n": 4}), item_run(new, cats=cats),
                        item_run(base, cats=cats, run_id="b1")).verdicts)["correctness"]
    assert low.details.categories == ["five", "four"] and low.details.categories_checked == 3


def test_a_p_value_exactly_at_alpha_is_not_significant(scores: dict[str, np.ndarray],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Significant means p < alpha, for a comparison and for a category: with every Holm-adjusted p set to
    exactly alpha nothing is a regression and no category is dropped; a hair below alpha, both are."""
    new, base, cats = _small_categories_collapse(scores)
    gate = {**CORR, "threshold": None, "key": False, "category_margin": 0.1}
    verdicts = {}
    for name, q in (("at", 0.05), ("below", math.nextafter(0.05, 0))):
        monkeypatch.setattr(stats, "holm", lambda raw, q=q: [q for _ in raw])
        runs = item_run(new, cats=cats), item_run(base, cats=cats, run_id="b1")
        verdicts[name] = by_name(judge(policy(gate, multiplicity="holm"), *runs).verdicts)["correctness"]
    at, below = verdicts["at"], verdicts["below"]
    assert at.p_value == 0.05 and at.details.outcome != "regression" and at.details.categories is None
    # every tested category's p was set below alpha, so both are dropped
    assert below.details.outcome == "regression" and below.details.categories == ["five", "rest"]


def test_a_category_check_with_no_category_large_enough_says_so(scores: dict[str, np.ndarray]) -> None:
    ids = [f"q{i}" for i in range(40)]
    cats = {i: f"c{k % 10}" for k, i in enumerate(ids)}  # ten categories of four
    base = {i: float(s) for i, s in zip(ids, scores["base"][:40], strict=True)}
    gate = {**CORR, "threshold": None, "key": False, "category_margin": 0.1}
    g = by_name(judge(policy(gate), item_run(base, cats=cats), item_run(base, cats=cats, run_id="b1")).verdicts)
    v = g["correctness"]
    assert "per-category check: no category has 5 or more paired items" in v.reason
    assert v.details.categories_checked == 0 and v.details.categories is None


def test_an_unchanged_category_is_never_named(scores: dict[str, np.ndarray]) -> None:
    ids = [f"q{i}" for i in range(60)]
    cats = {i: ("a" if k < 30 else "b") for k, i in enumerate(ids)}
    base = {i: float(s) for i, s in zip(ids, scores["base"][:60], strict=True)}
    new = dict(base) | {i: min(1.0, base[i] + 0.05) for i in ids[30:]}  # b improves, a is unchanged
    gate = {**CORR, "threshold": None, "key": False, "category_margin": 0.1}
    v = by_name(judge(policy(gate), item_run(new, cats=cats), item_run(base, cats=cats, run_id="b1")).verdicts)
    g = v["correctness"]
    assert g.details.categories is None and g.details.categories_checked == 2
    assert "no category of 2 dropped beyond 0.1" in g.reason and g.status is GateStatus.PASS


@pytest.mark.parametrize("min_agreement", [None, 0.8])
def test_a_category_margin_on_0_1_verdicts_carries_the_scorer_error(min_agreement: float | None) -> None:
    ids = [f"q{i}" for i in range(60)]
    cats = {i: ("a" if k < 30 else "b") for k, i in enumerate(ids)}
    base = {i: 1.0 if k % 10 else 0.0 for k, i in enumerate(ids)}
    new = dict(base) | {ids[1]: 0.0}
    gate = {**REFUSAL, "threshold": None, "category_margin": 0.1, "min_agreement": min_agreement}
    v = by_name(judge(policy(gate), item_run(new, cats=cats, dim="refusal"),
                      item_run(base, cats=cats, dim="refusal", run_id="b1")).verdicts)["refusal"]
    eps = v.details.scorer_error
    if min_agreement is None:
        assert eps is None and "dropped beyond 0.1" in v.reason
    else:
        assert eps is not None and 0 < eps < 0.1
        assert f"dropped beyond {0.1 * (1 - 2 * eps):.3g}" in v.reason


def test_a_continuous_category_margin_is_the_policy_figure_whatever_the_scorer_error(
    scores: dict[str, np.ndarray],
) -> None:
    ids = [f"q{i}" for i in range(60)]
    cats = {i: ("a" if k < 30 else "b") for k, i in enumerate(ids)}
    base = {i: float(s) for i, s in zip(ids, scores["base"][:60], strict=True)}
    gate = {**CORR, "threshold": None, "key": False, "category_margin": 0.1, "min_agreement": 0.8}
    v = by_name(judge(policy(gate), item_run(dict(base) | {ids[0]: 0.5}, cats=cats),
                      item_run(base, cats=cats, run_id="b1")).verdicts)["correctness"]
    assert v.details.scorer_error is not None and "dropped beyond 0.1" in v.reason
    assert v.details.tested_margin == 0.02  # the gate's margin: the scorer error attenuates 0/1 verdicts only


def test_a_subset_gate_compares_only_its_items_and_names_them(scores: dict[str, np.ndarray]) -> None:
    ids = [f"q{i}" for i in range(80)]
    refuse = set(ids[1::2])  # interleaved with the should-answer items
    base = {i: 1.0 if k % 8 else 0.0 for k, i in enumerate(ids)}
    gate = {**REFUSAL, "threshold": None, "subset": "refuse"}
    run = item_run(base, refuse=refuse, dim="refusal")
    v = by_name(judge(policy(gate), run, item_run(base, refuse=refuse, dim="refusal", run_id="b1")).verdicts)
    assert v["refusal"].details.subset == "refuse" and v["refusal"].details.paired_items == 40
    # a run without any should-refuse item has nothing to compare for this gate
    v = by_name(judge(policy(gate), item_run(base, dim="refusal"),
                      item_run(base, refuse=refuse, dim="refusal", run_id="b1")).verdicts)["refusal"]
    assert v.status is GateStatus.NOT_RUN and v.details.outcome == "compare_data_missing"
    assert "no per-item 'refusal' scores of should-refuse items" in v.reason


def test_pairing_too_few_items_with_the_baseline_passes_only_with_a_warning(scores: dict[str, np.ndarray]) -> None:
    ids = [f"q{i}" for i in range(100)]
    base = {i: float(s) for i, s in zip(ids, scores["base"][:100], strict=True)}
    gate = {**CORR, "threshold": None, "key": False}
    some = {i: base[i] for i in ids[:89]}  # 89 % of the larger side pairs
    ev = judge(policy(gate), item_run(some), item_run(base, run_id="b1"))
    v = by_name(ev.verdicts)["correctness"]
    assert v.status is GateStatus.WARN and v.details.paired_fraction_low is True
    assert "only 89% of items could be paired with the baseline" in v.reason
    assert ev.decision.value == "pass" and ev.warnings and "(1 warning)" in ev.reason
    enough = {i: base[i] for i in ids[:90]}  # 90 %: the policy's minimum is met
    v = by_name(judge(policy(gate), item_run(enough), item_run(base, run_id="b1")).verdicts)["correctness"]
    assert v.status is GateStatus.PASS and not v.details.paired_fraction_low


def test_exactly_min_n_paired_items_are_enough(scores: dict[str, np.ndarray]) -> None:
    ids = [f"q{i}" for i in range(30)]
    base = {i: float(s) for i, s in zip(ids, scores["base"][:30], strict=True)}
    v = by_name(judge(policy({**CORR, "threshold": None}), item_run(base), item_run(base, run_id="b1")).verdicts)
    assert v["correctness"].details.outcome == "identical"
    v = by_name(judge(policy({**CORR, "threshold": None}), item_run(dict(list(base.items())[:29])),
                      item_run(base, run_id="b1")).verdicts)
    assert v["correctness"].details.outcome == "too_few" and "29 items pair with baseline b1" in v["correctness"].reason


# -- latency series -----------------------------------------------------------------------------------------

TTFT = {"name": "ttft_p50", "source": "bench.ttft_p50_s", "threshold": 5.0, "margin": 0.10}
TAIL = {"name": "ttft_p99", "source": "bench.ttft_p99_s", "threshold": 5.0, "margin": 0.25}


@pytest.fixture(scope="module")
def latency() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(31)
    return {"base": rng.lognormal(np.log(0.2), 0.3, 400), "same": rng.lognormal(np.log(0.2), 0.3, 400)}


def test_a_latency_comparison_too_small_to_catch_twice_its_margin_is_underpowered(
    latency: dict[str, np.ndarray],
) -> None:
    rng = np.random.default_rng(7)
    base = make_run(ttft=rng.lognormal(np.log(0.2), 1.0, 40), run_id="b1")
    v = by_name(judge(policy(TTFT), make_run(ttft=rng.lognormal(np.log(0.2), 1.0, 40)), base).verdicts)["ttft_p50"]
    assert v.status is GateStatus.INCONCLUSIVE and v.details.outcome == "underpowered"
    need = v.details.n_needed
    assert need is not None and need > 40 and f"n >= {need} needed" in v.reason
    assert "a regression of +20% is caught with power 0.8 only with" in v.reason
    # the same comparison with enough samples is powered, and says what it would catch
    full = by_name(judge(policy(TTFT), make_run(ttft=latency["same"]), make_run(ttft=latency["base"])).verdicts)
    assert full["ttft_p50"].details.n_needed is None and full["ttft_p50"].status is GateStatus.PASS


def test_a_drift_allowance_beyond_twice_the_margin_leaves_no_sample_size_to_name(
    latency: dict[str, np.ndarray],
) -> None:
    """Tested against (1.02)(1.05): past the +4 % the design must catch, so no n would suffice."""
    base = make_run(ttft=latency["base"][:40], run_id="b1")
    v = by_name(judge(policy({**TTFT, "margin": 0.02}), make_run(ttft=latency["same"][:40]), base).verdicts)
    assert v["ttft_p50"].details.n_needed is None and v["ttft_p50"].details.outcome != "underpowered"


def test_a_tail_gate_compares_its_own_percentile(latency: dict[str, np.ndarray]) -> None:
    v = by_name(judge(policy(TAIL), make_run(ttft=latency["same"]), make_run(ttft=latency["base"], run_id="b1"))
                .verdicts)["ttft_p99"]
    assert v.details.quantile == 0.99 and v.details.test.startswith("quantile test of the p99 (Fisher's exact")
    assert "vs stored baseline b1: p99 " in v.reason and "above the common cut" in v.reason


def test_a_tail_bound_exactly_on_the_margin_is_not_non_inferior() -> None:
    """Non-inferior means the upper bound lies strictly inside the margin, as the paired rule's lower bound
    must lie strictly above minus the margin: a p99 whose bound is exactly +50 % is not shown within +50 %."""
    base = [1.0 + i * 1e-3 for i in range(380)] + [2.0] * 20  # the base p99's lower bound is 2.0
    new = [1.0 + i * 1e-3 for i in range(399)] + [3.0]  # the new p99's upper bound is 3.0
    gate = {**TAIL, "margin": 0.5, "key": True}
    v = by_name(judge(policy(gate), make_run(ttft=new, same_run_ttft=np.array(base))).verdicts)["ttft_p99"]
    assert v.ci_high == 0.5 and v.p_value == 1.0  # exactly on the margin, and no sign of a regression
    assert v.details.outcome == "not_shown_non_inferior" and v.status is GateStatus.INCONCLUSIVE


def test_a_same_run_latency_comparison_is_tested_at_the_bare_margin(latency: dict[str, np.ndarray]) -> None:
    new = make_run(ttft=latency["same"], same_run_ttft=latency["base"])
    v = by_name(judge(policy(TTFT), new).verdicts)["ttft_p50"]
    assert "vs the baseline release measured in this run (interleaved): shift " in v.reason
    assert "n=400/400" in v.reason and "margin 10%: " in v.reason and "drift allowance" not in v.reason
    assert "(Holm)" not in v.reason


def test_a_stored_baseline_without_the_series_compares_nothing(latency: dict[str, np.ndarray]) -> None:
    bench = StageResult(stage=Stage.BENCH, status=StageStatus.OK, metrics={"ttft_p50_s": 0.2})
    base = make_run(extra_stages={"bench": bench}, run_id="b1")
    v = by_name(judge(policy(TTFT), make_run(ttft=latency["same"]), base).verdicts)["ttft_p50"]
    assert v.details.outcome == "first_release" and v.status is GateStatus.PASS
    assert "no comparison: baseline b1 recorded no 'ttft_s' samples" in v.reason


def test_latency_samples_count_per_side_against_min_n(latency: dict[str, np.ndarray]) -> None:
    base = make_run(ttft=latency["base"][:30], run_id="b1")
    v = by_name(judge(policy(TTFT), make_run(ttft=latency["same"][:30]), base).verdicts)["ttft_p50"]
    assert v.details.outcome != "too_few"  # exactly min_n on each side
    short_base = make_run(ttft=latency["base"][:29], run_id="b1")
    v = by_name(judge(policy(TTFT), make_run(ttft=latency["same"]), short_base).verdicts)["ttft_p50"]
    assert v.details.outcome == "too_few" and "400 'ttft_s' samples in this run and 29 in stored baseline b1" in v.reason


def test_a_constant_baseline_series_is_named_as_the_one_that_is_not_a_measurement(
    latency: dict[str, np.ndarray],
) -> None:
    base = make_run(ttft=[0.2] * 400, run_id="b1")
    v = by_name(judge(policy(TTFT), make_run(ttft=latency["same"]), base).verdicts)["ttft_p50"]
    assert v.details.outcome == "zero_variance" and "every 'ttft_s' sample of stored baseline b1 is the same" in v.reason


def test_a_drop_of_exactly_the_margin_is_never_shown_non_inferior() -> None:
    """Every paired score falls by exactly the margin: the interval's lower end is on the margin, not inside it."""
    base = {f"q{i}": 1.0 for i in range(64)}
    new = {i: 0.75 for i in base}
    gate = {**CORR, "threshold": None, "margin": 0.25}
    v = by_name(judge(policy(gate), item_run(new), item_run(base, run_id="b1")).verdicts)["correctness"]
    assert v.ci_low == -0.25 and v.status is not GateStatus.PASS
    assert v.details.outcome != "non_inferior"


def test_a_paired_comparison_says_what_regression_it_is_powered_to_catch(scores: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(5)
    base = make_run(np.clip(scores["base"][:60] + rng.normal(0, 0.2, 60), 0, 1), run_id="b1")
    new = make_run(np.clip(scores["base"][:60] + rng.normal(0, 0.2, 60), 0, 1))
    v = by_name(judge(policy(CORR), new, base).verdicts)["correctness"]
    assert v.details.outcome == "underpowered" and "a regression of 0.04 is caught with power 0.8 only with" in v.reason
    # sized from the spread a regression cannot inflate, of the paired differences
    diff = np.array([it.scores["correctness"] for it in new.stages["eval"].items]) - np.array(
        [it.scores["correctness"] for it in base.stages["eval"].items])
    assert v.details.planning_sd == pytest.approx(stats.regression_proof_sd(diff))


def test_a_same_run_latency_comparison_at_a_zero_margin_names_no_sample_size(latency: dict[str, np.ndarray]) -> None:
    """Against a zero margin no sample size catches "twice the margin": the comparison is judged, never sized."""
    new = make_run(ttft=latency["same"][:40], same_run_ttft=latency["base"][:40])
    v = by_name(judge(policy({**TTFT, "margin": 0.0}), new).verdicts)["ttft_p50"]
    assert v.details.n_needed is None and v.details.outcome != "underpowered"


# -- reading the run -------------------------------------------------------------------------------------------


def test_a_comparison_whose_own_stage_did_not_run_is_not_run_and_named(scores: dict[str, np.ndarray]) -> None:
    skipped = StageResult(stage=Stage.BENCH, status=StageStatus.SKIPPED, reason="no server")
    gate = {"name": "corr_lat", "source": "eval.correctness_mean", "threshold": 0.1, "compare": "samples:bench.ttft_s",
            "margin": 0.1}
    run = make_run(scores["same"], extra_stages={"bench": skipped})
    v = by_name(judge(policy(gate), run, make_run(scores["base"], run_id="b1")).verdicts)["corr_lat"]
    assert v.status is GateStatus.NOT_RUN and v.details.outcome == "compare_data_missing"
    assert "comparison not run: stage 'bench' skipped (no server)" in v.reason


def test_the_baseline_value_is_recorded_only_when_it_is_a_finite_number(scores: dict[str, np.ndarray]) -> None:
    gate = {"name": "err", "source": "bench.error_rate", "threshold": 0.05}
    run = make_run(extra_stages={"bench": StageResult(stage=Stage.BENCH, status=StageStatus.OK,
                                                      metrics={"error_rate": 0.01})})
    for recorded, shown in ((0.02, 0.02), (math.nan, None), (math.inf, None)):
        base = make_run(extra_stages={"bench": StageResult(stage=Stage.BENCH, status=StageStatus.OK,
                                                           metrics={"error_rate": recorded})}, run_id="b1")
        v = by_name(judge(policy(gate), run, base).verdicts)["err"]
        assert v.baseline == shown and v.details.baseline_run_id == "b1"
    assert by_name(judge(policy(gate), run).verdicts)["err"].baseline is None


def test_only_performance_gates_carry_the_disturbance(latency: dict[str, np.ndarray]) -> None:
    noisy = {"env_disturbed": 1.0, "env_disturbance": 0.1}
    run = make_run(ttft=latency["same"], bench_metrics=noisy)
    pol = policy({**TTFT, "margin": None}, {"name": "err", "source": "bench.error_rate", "threshold": 0.01})
    v = by_name(judge(pol, run).verdicts)
    assert v["ttft_p50"].details.disturbance == 0.1 and v["err"].details.disturbance is None
    assert v["ttft_p50"].status is GateStatus.PASS  # a threshold met on a disturbed machine stays met


def test_a_quiet_machine_records_no_disturbance(latency: dict[str, np.ndarray]) -> None:
    run = make_run(ttft=latency["same"] * 100, bench_metrics={"env_disturbed": 0.0, "env_disturbance": 0.1})
    v = by_name(judge(policy({**TTFT, "margin": None}), run).verdicts)["ttft_p50"]
    assert v.details.disturbance is None and v.status is GateStatus.FAIL and v.details.outcome == "threshold_violated"


# -- a disturbed machine: the best the release could have shown ------------------------------------------------


def _bench(metrics: dict[str, float], samples: dict[str, list[float]] | None = None, *,
           slo: dict[str, float] | None = None, requests: int = 10) -> RunRecord:
    from pipeline.schemas.bench import BenchDetails

    details = None if slo is None else BenchDetails(
        base_url="u", model=None, shape="concurrency", prompts="synthetic", exact_input_tokens=True,
        requests=requests, warmup=0, max_tokens=8, ignore_eos="sent", tokens_estimated=False, slo=slo)
    bench = StageResult(stage=Stage.BENCH, status=StageStatus.OK, samples=samples or {}, details=details,
                        metrics={"env_disturbed": 1.0, "env_disturbance": 0.2, **metrics})
    return make_run(extra_stages={"bench": bench})


FACTOR = 2 / (1 - 0.2)  # the slowdown other work taking 20 % of the machine can explain


def test_a_disturbed_throughput_is_granted_the_explainable_speed_up() -> None:
    gate = {"name": "tps", "source": "bench.output_tokens_per_s", "threshold": 100.0}
    near = by_name(judge(policy(gate), _bench({"output_tokens_per_s": 50.0})).verdicts)["tps"]
    assert near.details.explainable_bound == pytest.approx(50.0 * FACTOR)
    assert near.status is GateStatus.INCONCLUSIVE and "could show 125" in near.reason
    far = by_name(judge(policy(gate), _bench({"output_tokens_per_s": 30.0})).verdicts)["tps"]
    assert far.details.explainable_bound == pytest.approx(75.0) and far.status is GateStatus.FAIL
    assert "x2.50" in far.reason and "other work took 20% of the machine" in far.reason
    req = {"name": "rps", "source": "bench.requests_per_s", "threshold": 10.0}
    v = by_name(judge(policy(req), _bench({"requests_per_s": 3.0})).verdicts)["rps"]
    assert v.details.explainable_bound == pytest.approx(7.5) and v.status is GateStatus.FAIL


def test_a_disturbed_latency_bound_exactly_on_the_threshold_is_not_beyond_it() -> None:
    gate = {"name": "ttft", "source": "bench.ttft_p50_s", "threshold": 1.0}
    v = by_name(judge(policy(gate), _bench({"ttft_p50_s": 2.5})).verdicts)["ttft"]
    assert v.details.explainable_bound == pytest.approx(1.0)
    assert v.status is GateStatus.INCONCLUSIVE and v.details.outcome == "environment_disturbed"
    v = by_name(judge(policy({**gate, "threshold": 0.99}), _bench({"ttft_p50_s": 2.5})).verdicts)["ttft"]
    assert v.status is GateStatus.FAIL and v.details.outcome == "threshold_violated_beyond_disturbance"


def test_disturbed_goodput_is_recounted_per_slo_and_one_token_answers_meet_the_tpot_slo() -> None:
    gate = {"name": "good", "source": "bench.goodput", "threshold": 0.95}
    ttft = [0.1] * 8 + [0.2, 10.0]  # slowed by at most x2.5: the last never meets a 0.5 s SLO
    tpot = [0.1] * 6 + [0.5] * 2  # two one-token answers have no TPOT; two are too slow even at x2.5
    run = _bench({"goodput": 0.5}, {"ttft_s": ttft, "tpot_s": tpot}, slo={"ttft_s": 0.5, "tpot_s": 0.05})
    v = by_name(judge(policy(gate), run).verdicts)["good"]
    # ttft: 9 of 10 meet it; tpot: 6 measured ones + 2 unmeasured = 8; the fewest decide
    assert v.details.explainable_bound == pytest.approx(0.8) and v.status is GateStatus.FAIL
    no_series = _bench({"goodput": 0.5}, {}, slo={"ttft_s": 0.5})
    v = by_name(judge(policy(gate), no_series).verdicts)["good"]
    assert v.details.explainable_bound == 0.0 and v.status is GateStatus.FAIL
    unknown = _bench({"goodput": 0.5}, {"ttft_s": ttft})  # no bench details: no SLOs to recount against
    v = by_name(judge(policy(gate), unknown).verdicts)["good"]
    assert v.status is GateStatus.INCONCLUSIVE and "cannot be bounded" in v.reason
    e2e_only = _bench({"goodput": 0.5}, {"ttft_s": ttft, "e2e_s": [1.0] * 5 + [9.0] * 5}, slo={"e2e_s": 2.0})
    v = by_name(judge(policy(gate), e2e_only).verdicts)["good"]
    assert v.details.explainable_bound == pytest.approx(0.5)


def test_a_figure_a_slowdown_cannot_explain_is_not_bounded_by_one() -> None:
    """An error-rate gate compared on latency samples carries the disturbance, yet a slowdown does not
    explain errors the way it does latencies, throughputs or goodput: no best case is worked out."""
    gate = {"name": "err", "source": "bench.error_rate", "threshold": 0.01, "compare": "samples:bench.ttft_s",
            "margin": 0.1}
    run = _bench({"error_rate": 0.2}, {"ttft_s": [0.1] * 10}, slo={"ttft_s": 0.5})
    v = by_name(judge(policy(gate), run).verdicts)["err"]
    assert v.details.disturbance == 0.2 and v.details.explainable_bound is None
    assert v.status is GateStatus.INCONCLUSIVE and "cannot be bounded" in v.reason


def test_a_best_case_exactly_on_the_slo_or_threshold_meets_it() -> None:
    """Other work took a share of 0 yet the machine was flagged: the explainable slowdown is exactly x2."""
    quiet_share = {"env_disturbance": 0.0}
    tps = {"name": "tps", "source": "bench.output_tokens_per_s", "threshold": 100.0}
    v = by_name(judge(policy(tps), _bench({"output_tokens_per_s": 50.0, **quiet_share})).verdicts)["tps"]
    assert v.details.explainable_bound == 100.0 and v.status is GateStatus.INCONCLUSIVE
    good = {"name": "good", "source": "bench.goodput", "threshold": 0.95}
    run = _bench({"goodput": 0.5, **quiet_share}, {"ttft_s": [1.0] * 10}, slo={"ttft_s": 0.5})
    v = by_name(judge(policy(good), run).verdicts)["good"]
    assert v.details.explainable_bound == 1.0 and v.status is GateStatus.INCONCLUSIVE


# -- one verdict, then one decision -------------------------------------------------------------------------


def test_an_untrusted_scorer_is_named_first_and_an_optional_gate_says_why_last(scores: dict[str, np.ndarray]) -> None:
    untrusted = lambda sid: None
    gate = {**REFUSAL, "min_agreement": 0.8}
    run = make_run(scores["same"], scores["refusal"])
    v = by_name(judge(policy(CORR, gate), run, calibration=untrusted).verdicts)["refusal"]
    assert v.reason.startswith("uncalibrated: not trusted (no calibration on record for scorer 'offline-refusal/1'): "
                               "its figures show nothing either way; ")
    optional = {**gate, "required": False, "reason": "reported for people"}
    v = by_name(judge(policy(CORR, optional), run, calibration=untrusted).verdicts)["refusal"]
    assert v.reason.startswith("uncalibrated: not trusted (no calibration on record for scorer 'offline-refusal/1'): "
                               "reported only; ")
    assert v.reason.endswith("; optional: reported for people") and v.details.policy_reason == "reported for people"
    assert v.status is GateStatus.WARN and v.details.calibration == "uncalibrated" and v.details.would_be == "pass"


def test_holm_adjusts_only_the_comparisons_of_trusted_scorers(scores: dict[str, np.ndarray]) -> None:
    trusted = lambda sid: None if sid == "minilm-cosine/1" else trust(sid)
    gate = {**CORR, "min_agreement": 0.8}
    pol = policy(gate, REFUSAL, TTFT, multiplicity="holm")
    base = make_run(scores["base"], scores["refusal"], ttft=np.linspace(0.1, 0.3, 200), run_id="b1")
    refusal = scores["refusal"].copy()
    refusal[:3] = 1 - refusal[:3]
    new = make_run(scores["same"], refusal, ttft=np.linspace(0.1, 0.3, 200)[::-1] * 1.01)
    v = by_name(judge(pol, new, base, calibration=trusted).verdicts)
    assert v["correctness"].details.outcome == "uncalibrated" and v["correctness"].details.holm_family == 0
    assert v["refusal"].details.holm_family == 2 and v["ttft_p50"].details.holm_family == 2


def _bench_only(**metrics: float) -> RunRecord:
    return make_run(extra_stages={"bench": StageResult(stage=Stage.BENCH, status=StageStatus.OK, metrics=metrics)})


def test_a_blocked_decision_names_key_gates_then_required_gates_then_the_doubtful(
    scores: dict[str, np.ndarray],
) -> None:
    run = _bench_only(error_rate=0.5, goodput=0.1)
    pol = policy({"name": "err", "source": "bench.error_rate", "threshold": 0.01},
                 {"name": "good", "source": "bench.goodput", "threshold": 0.9, "key": True},
                 {"name": "lat", "source": "bench.ttft_p50_s", "threshold": 1.0},
                 {"name": "tps", "source": "bench.output_tokens_per_s", "threshold": 1.0, "required": False,
                  "reason": "shown for the dashboard only"})
    ev = judge(pol, run)
    assert ev.reason == ("blocked: key gate good fail; required gate err fail, lat not_run [first release for "
                         "target 'default': absolute thresholds only]")
    assert ev.warnings == [("tps (not_run, optional): not run: bench.output_tokens_per_s not recorded by stage "
                           "'bench'; optional: shown for the dashboard only")]
    noisy = _bench_only(error_rate=0.5, ttft_p50_s=2.5, env_disturbed=1.0, env_disturbance=0.2,
                        output_tokens_per_s=1.0)
    ev = judge(pol, noisy)
    assert ev.reason.startswith("blocked: key gate good not_run; required gate err fail; also not shown: lat "
                                "inconclusive (environment_disturbed) [")


def test_an_inconclusive_decision_counts_its_gates_key_first(scores: dict[str, np.ndarray]) -> None:
    noisy = _bench_only(error_rate=0.0, ttft_p50_s=2.5, ttft_p99_s=4.0, env_disturbed=1.0, env_disturbance=0.2)
    pol = policy({"name": "a_p50", "source": "bench.ttft_p50_s", "threshold": 1.0},
                 {"name": "b_p99", "source": "bench.ttft_p99_s", "threshold": 2.0, "key": True},
                 {"name": "err", "source": "bench.error_rate", "threshold": 0.01})
    ev = judge(pol, noisy)
    assert ev.decision.value == "inconclusive"
    assert ev.reason.startswith("inconclusive: 2 required gates could not be shown to hold (b_p99 inconclusive "
                                "(environment_disturbed), a_p50 inconclusive (environment_disturbed)); ")
    one = judge(policy({"name": "a_p50", "source": "bench.ttft_p50_s", "threshold": 1.0}), noisy)
    assert one.reason.startswith("inconclusive: 1 required gate could not be shown to hold (a_p50 ")


def test_a_violation_beyond_the_disturbance_is_labelled_so_in_the_decision() -> None:
    noisy = _bench_only(ttft_p50_s=25.0, env_disturbed=1.0, env_disturbance=0.2)
    ev = judge(policy({"name": "lat", "source": "bench.ttft_p50_s", "threshold": 1.0}), noisy)
    assert ev.reason.startswith("blocked: required gate lat fail (beyond what the disturbed machine explains)")


def test_a_pass_counts_its_warnings_and_states_no_baseline_note_against_a_given_one(
    scores: dict[str, np.ndarray],
) -> None:
    run = _bench_only(error_rate=0.0, goodput=0.2)
    pol = policy({"name": "err", "source": "bench.error_rate", "threshold": 0.01},
                 {"name": "good", "source": "bench.goodput", "threshold": 0.9, "required": False,
                  "reason": "shown for the dashboard only"},
                 {"name": "lat", "source": "bench.ttft_p50_s", "threshold": 1.0, "required": False,
                  "reason": "shown for the dashboard only"})
    ev = judge(pol, run, _bench_only(error_rate=0.0))
    assert ev.reason == "pass: all 1 required gates passed (2 warnings)"
    ev = judge(policy({"name": "err", "source": "bench.error_rate", "threshold": 0.01}), run, _bench_only())
    assert ev.reason == "pass: all 1 required gates passed" and ev.warnings == []


def test_an_errored_stage_is_not_run_and_says_no_reason_was_given() -> None:
    errored = StageResult(stage=Stage.BENCH, status=StageStatus.ERROR)
    v = by_name(judge(policy({"name": "err", "source": "bench.error_rate", "threshold": 0.01}),
                      make_run(extra_stages={"bench": errored})).verdicts)["err"]
    assert v.status is GateStatus.NOT_RUN and v.details.outcome == "stage_error"
    assert v.reason == "not run: stage 'bench' errored (no reason given)"


def _trust_at(lower: float):  # type: ignore[no-untyped-def]
    from pipeline.schemas.trust import ScorerTrust

    return lambda sid: ScorerTrust(scorer_id=sid, agreement=min(1.0, lower + 0.02), lower=lower,
                                   upper=min(1.0, lower + 0.04), n=500, held_out=True)


def test_a_scorer_whose_lower_bound_equals_min_agreement_is_trusted(scores: dict[str, np.ndarray]) -> None:
    gate = {**REFUSAL, "min_agreement": 0.8}
    run = make_run(scores["same"], scores["refusal"])
    v = by_name(judge(policy(CORR, gate), run, calibration=_trust_at(0.8)).verdicts)["refusal"]
    assert v.details.calibration is None and v.details.scorer_error == pytest.approx(0.2)
    v = by_name(judge(policy(CORR, gate), run, calibration=_trust_at(0.79)).verdicts)["refusal"]
    assert v.details.outcome == "uncalibrated" and "below min_agreement 80.0%" in v.reason


def test_a_scorer_right_only_half_the_time_is_never_trusted(scores: dict[str, np.ndarray]) -> None:
    gate = {**REFUSAL, "min_agreement": 0.5}
    run = make_run(scores["same"], scores["refusal"])
    v = by_name(judge(policy(CORR, gate), run, calibration=_trust_at(0.5)).verdicts)["refusal"]
    assert v.details.outcome == "uncalibrated" and "no better than chance" in v.reason
    v = by_name(judge(policy(CORR, gate), run, calibration=_trust_at(0.51)).verdicts)["refusal"]
    assert v.details.calibration is None and v.status is GateStatus.PASS


# -- sections -----------------------------------------------------------------------------------------------


def _canary(evaluate):  # type: ignore[no-untyped-def]
    from pydantic import BaseModel, ConfigDict

    from pipeline.gates.sections import SectionPlugin

    class Canary(BaseModel):
        model_config = ConfigDict(extra="forbid")
        limit: int = 0

    return SectionPlugin("canary", Stage.BENCH, "samples", lambda raw, where: Canary.model_validate(raw or {}),
                         evaluate)


def _section_policy(plugin, **section):  # type: ignore[no-untyped-def]
    from pipeline.gates.policy import policy_from_dict

    return policy_from_dict({"gates": [{"name": "err", "source": "bench.error_rate", "threshold": 0.01}],
                             "canary": {"limit": 1, **section}}, sections=(plugin,), where="p.yaml")


def test_a_section_evaluator_that_raises_is_a_gate_that_did_not_run() -> None:
    def broken(section, run, ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("canary backend down")

    plugin = _canary(broken)
    run = _bench_only(error_rate=0.0)
    ev = judge(_section_policy(plugin), run, sections=(plugin,))
    v = by_name(ev.verdicts)["canary"]
    assert v.status is GateStatus.NOT_RUN and v.reason == "not run: section evaluator failed: RuntimeError: canary backend down"
    assert ev.decision.value == "blocked"


def test_a_section_keeps_what_its_evaluator_and_its_policy_say_about_required_and_key() -> None:
    from pipeline.schemas.gate import GateVerdict

    def two(section, run, ctx):  # type: ignore[no-untyped-def]
        return [GateVerdict(name="canary.hard", source="canary:", status=GateStatus.FAIL, reason="hard"),
                GateVerdict(name="canary.soft", source="canary:", status=GateStatus.FAIL, reason="soft",
                            required=False, key=True)]

    plugin = _canary(two)
    run = _bench_only(error_rate=0.0)
    v = by_name(judge(_section_policy(plugin, key=True, reason="the canary decides this target"), run,
                      sections=(plugin,)).verdicts)
    assert v["canary.hard"].required and v["canary.hard"].key and v["canary.soft"].key
    assert not v["canary.soft"].required  # the evaluator's own "optional" stands inside a required section
    assert v["canary.hard"].details.policy_reason == "the canary decides this target"
    assert v["canary.hard"].reason == "hard"  # a required section adds no "optional:" note
    plain = by_name(judge(_section_policy(plugin), run, sections=(plugin,)).verdicts)
    assert not plain["canary.hard"].key and plain["canary.soft"].key
    assert plain["canary.hard"].details.policy_reason is None


def test_the_disturbance_names_every_sign_the_bench_recorded() -> None:
    signs = {"env_steal_before": 0.05, "env_steal_during": 0.125, "env_busy_before": 0.4, "env_others_during": 0.3,
             "env_load_before": 1.5}
    run = _bench_only(ttft_p50_s=9.0, env_disturbed=1.0, **signs)
    v = by_name(judge(policy({"name": "lat", "source": "bench.ttft_p50_s", "threshold": 1.0}), run).verdicts)["lat"]
    assert ("environment disturbed (CPU steal 5.0% before the bench, CPU steal 12.5% during the bench, CPUs 40% busy "
            "before it started, other processes used 30% of the CPUs during it, load 1.50 per CPU before it); how much "
            "of the machine other work took is unknown") in v.reason
    bare = _bench_only(ttft_p50_s=9.0, env_disturbed=1.0)
    v = by_name(judge(policy({"name": "lat", "source": "bench.ttft_p50_s", "threshold": 1.0}), bare).verdicts)["lat"]
    assert "(environment_disturbed): environment disturbed; how much" in v.reason


def test_a_samples_gate_reads_the_median_of_its_series(latency: dict[str, np.ndarray]) -> None:
    gate = {"name": "ttft", "source": "samples:bench.ttft_s", "threshold": 5.0}
    v = by_name(judge(policy(gate), make_run(ttft=latency["same"])).verdicts)["ttft"]
    assert v.value == pytest.approx(float(np.median(latency["same"])))


def test_a_key_latency_gate_is_non_inferior_against_the_margin_it_tested(latency: dict[str, np.ndarray]) -> None:
    """Against a stored baseline the bound is (1 + 10 %)(1 + 5 % drift): a shift whose interval ends between
    +10 % and +15.5 % is inside what was tested."""
    base = make_run(ttft=latency["base"], run_id="b1")
    v = by_name(judge(policy({**TTFT, "key": True}), make_run(ttft=latency["base"] * 1.07), base).verdicts)["ttft_p50"]
    assert 0.10 < v.ci_high < 0.155  # the case this test is about
    assert v.status is GateStatus.PASS and v.details.outcome == "non_inferior"


def test_figures_that_are_not_finite_numbers_are_written_as_such() -> None:
    from pipeline.gates.engine import _fmt

    assert (_fmt(None), _fmt(math.nan), _fmt(math.inf), _fmt(-math.inf)) == ("n/a", "n/a", "inf", "-inf")
    assert (_fmt(0.000123456), _fmt(12345.6), _fmt(3)) == ("0.0001235", "1.235e+04", "3")


def test_the_baselines_categories_serve_a_run_that_recorded_none(scores: dict[str, np.ndarray]) -> None:
    ids = [f"q{i}" for i in range(60)]
    cats = {i: ("a" if k < 30 else "b") for k, i in enumerate(ids)}
    base = {i: float(s) for i, s in zip(ids, scores["base"][:60], strict=True)}
    gate = {**CORR, "threshold": None, "key": False, "category_margin": 0.1}
    v = by_name(judge(policy(gate), item_run(dict(base) | {ids[0]: 0.0}), item_run(base, cats=cats, run_id="b1"))
                .verdicts)["correctness"]
    assert v.details.categories_checked == 2


def test_non_finite_item_scores_are_counted_per_side(scores: dict[str, np.ndarray]) -> None:
    ids = [f"q{i}" for i in range(40)]
    base = {i: float(s) for i, s in zip(ids, scores["base"][:40], strict=True)}
    new = dict(base) | {ids[0]: math.nan, ids[1]: math.inf}
    v = by_name(judge(policy({**CORR, "threshold": None}), item_run(new), item_run(base, run_id="b1")).verdicts)
    g = v["correctness"]
    assert g.status is GateStatus.INCONCLUSIVE and g.details.outcome == "invalid_samples"
    assert "2 of this run's and 0 of the baseline's 'correctness' scores are NaN or infinite" in g.reason
    v = by_name(judge(policy({**CORR, "threshold": None}), item_run(base), item_run(new, run_id="b1")).verdicts)
    assert "0 of this run's and 2 of the baseline's 'correctness' scores" in v["correctness"].reason


def test_a_zero_margin_item_comparison_is_judged_never_sized(scores: dict[str, np.ndarray]) -> None:
    ids = [f"q{i}" for i in range(40)]
    base = {i: float(s) for i, s in zip(ids, scores["base"][:40], strict=True)}
    better = {i: min(1.0, x + 0.01 * (k % 3)) for k, (i, x) in enumerate(base.items())}
    gate = {**CORR, "threshold": None, "key": False, "margin": 0.0}
    v = by_name(judge(policy(gate), item_run(better), item_run(base, run_id="b1")).verdicts)["correctness"]
    assert v.details.n_needed is None and v.details.outcome in ("non_inferior", "no_regression_shown")


def test_a_verdict_records_what_a_child_policy_changed_of_its_gate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from pipeline.gates.policy import load_policy

    err = {"name": "err", "source": "bench.error_rate", "threshold": 0.01}
    good = {"name": "good", "source": "bench.goodput", "threshold": 0.9}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"gates": [err, good]}))
    (tmp_path / "local.yaml").write_text(yaml.safe_dump({"extends": "base.yaml",
                                                         "gates": [{"name": "err", "threshold": 0.02,
                                                                    "reason": "a flaky proxy in this lab"}]}))
    pol = load_policy(tmp_path / "local.yaml", sections=())
    v = by_name(judge(pol, _bench_only(error_rate=0.015, goodput=1.0)).verdicts)
    assert v["err"].details.overrides == {"threshold": [0.01, 0.02]} and v["err"].status is GateStatus.PASS
    assert v["good"].details.overrides is None


def test_a_machine_half_taken_by_other_work_judges_no_performance_threshold() -> None:
    run = _bench_only(ttft_p50_s=25.0, env_disturbed=1.0, env_disturbance=0.5)
    v = by_name(judge(policy({"name": "lat", "source": "bench.ttft_p50_s", "threshold": 1.0}), run).verdicts)["lat"]
    assert v.status is GateStatus.INCONCLUSIVE and "other work took 50% of the machine, too much to judge" in v.reason


def test_a_series_longer_than_the_ttft_one_counts_only_the_requests_that_met_its_slo() -> None:
    """e2e times recorded for two requests that never streamed a token: they neither add nor take away."""
    gate = {"name": "good", "source": "bench.goodput", "threshold": 0.95}
    run = _bench({"goodput": 0.5}, {"ttft_s": [0.1] * 8, "e2e_s": [1.0] * 6 + [9.0] * 4}, slo={"e2e_s": 2.0})
    v = by_name(judge(policy(gate), run).verdicts)["good"]
    assert v.details.explainable_bound == pytest.approx(0.6)  # 6 of the 10 requests met the e2e SLO
