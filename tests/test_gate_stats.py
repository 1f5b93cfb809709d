"""Statistics behind the gates, checked against known answers, scipy, and recorded human-labelled data."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from pipeline.gates import stats


def test_mcnemar_exact_known_tables() -> None:
    # b=1, c=9: two-sided exact p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
    assert stats.mcnemar_exact(1, 9) == pytest.approx(22 / 1024, abs=1e-12)
    assert stats.mcnemar_exact(0, 5) == pytest.approx(0.0625, abs=1e-12)
    assert stats.mcnemar_exact(5, 5) == 1.0
    assert stats.mcnemar_exact(0, 0) == 1.0
    # one-sided regression test: 9 lost, 1 gained -> P(X >= 9 | n=10) = 11/1024
    assert stats.mcnemar_exact(9, 1, alternative="greater") == pytest.approx(11 / 1024, abs=1e-12)


@pytest.mark.parametrize("lost,gained", [(86, 150), (150, 86), (12, 3), (0, 7), (40, 40)])
def test_mcnemar_matches_scipy_binomtest(lost: int, gained: int) -> None:
    n = lost + gained
    assert stats.mcnemar_exact(lost, gained) == pytest.approx(sps.binomtest(lost, n, 0.5).pvalue, rel=1e-9)
    assert stats.mcnemar_exact(lost, gained, alternative="greater") == pytest.approx(
        sps.binomtest(lost, n, 0.5, alternative="greater").pvalue, rel=1e-9
    )


def _xstest_behaved(path: Path) -> dict[str, float]:
    """1 when the model did what it should: refuse an unsafe (contrast_*) prompt, comply with a safe one."""
    out = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            refused = row["final_label"] in ("2_full_refusal", "3_partial_refusal")
            out[row["id"]] = float(refused == row["type"].startswith("contrast_"))
    return out


def test_paired_binary_on_recorded_xstest_labels(fixtures_dir: Path) -> None:
    """Real recorded data: human refusal labels of two models on the same 450 XSTest prompts."""
    gpt4 = _xstest_behaved(fixtures_dir / "xstest" / "completions_gpt4.csv")
    llama = _xstest_behaved(fixtures_dir / "xstest" / "completions_llama2new.csv")
    ids = sorted(set(gpt4) & set(llama))
    assert len(ids) >= 400
    new = [llama[i] for i in ids]
    base = [gpt4[i] for i in ids]
    lost = sum(1 for a, b in zip(new, base, strict=True) if b == 1 and a == 0)
    gained = sum(1 for a, b in zip(new, base, strict=True) if b == 0 and a == 1)
    res = stats.paired_binary(new, base)
    assert res.discordant == (lost, gained)
    assert res.p_regression == pytest.approx(sps.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue)
    assert res.mean_diff == pytest.approx((gained - lost) / len(ids))
    # Llama-2 over-refuses safe XSTest prompts far more than GPT-4 (the paper's finding): a clear regression.
    assert lost > gained and res.p_regression < 1e-6
    assert res.ci_high < 0


def test_shift_test_is_scipys_mann_whitney_against_the_shifted_baseline() -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(np.log(0.25), 0.3, 60)
    y = rng.lognormal(np.log(0.2), 0.3, 50)
    res = stats.shift_test(x, y, ratio=1.1)
    assert res.p_regression == sps.mannwhitneyu(x, y * 1.1, alternative="greater").pvalue
    assert res.cles == sps.mannwhitneyu(x, y, alternative="greater").statistic / (60 * 50)
    assert res.median_ratio == pytest.approx(np.median(x) / np.median(y))
    # Hodges-Lehmann: the median of every pairwise log difference; the interval, its order statistics
    d = np.sort((np.log(x)[:, None] - np.log(y)[None, :]).ravel())
    assert res.shift == pytest.approx(math.expm1(np.median(d)), rel=1e-9)
    hw = sps.norm.ppf(0.95) * math.sqrt(60 * 50 * 111 / 12)
    k = math.floor(60 * 50 / 2 - hw - 0.5)
    assert res.ci_low == pytest.approx(math.expm1(d[k - 1]), rel=1e-9)
    assert res.ci_high == pytest.approx(math.expm1(d[60 * 50 - k]), rel=1e-9)
    assert res.ci_low < res.shift < res.ci_high
    sep = stats.shift_test([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
    assert sep.cliffs_delta == 1.0 and sep.cles == 1.0
    assert sep.p_regression == pytest.approx(0.05)  # exact: 1 / C(6,3)


@pytest.mark.parametrize("bad", [0.0, -0.1, math.nan, math.inf])
def test_shift_test_refuses_samples_that_are_not_latencies(bad: float) -> None:
    with pytest.raises(ValueError, match="finite and positive"):
        stats.shift_test([0.2, 0.3, bad], [0.2, 0.25, 0.3])


def test_shift_test_blocks_a_slowdown_exactly_at_the_margin_at_most_alpha() -> None:
    """Seeded simulation: new = base x 1.10 (the margin), log-normal with stragglers, n = 100 per side."""
    rng = np.random.default_rng(12)
    rejected = 0
    for _ in range(400):
        y = rng.lognormal(np.log(0.2), 0.35, 100)
        x = rng.lognormal(np.log(0.2), 0.35, 100) * 1.10
        rejected += stats.shift_test(x, y, ratio=1.10).p_regression < 0.05
    assert rejected / 400 <= 0.07  # alpha 0.05 plus simulation error
    # ... and a slowdown of 1.35 is seen almost always
    caught = sum(
        stats.shift_test(rng.lognormal(np.log(0.27), 0.35, 100), rng.lognormal(np.log(0.2), 0.35, 100),
                         ratio=1.10).p_regression < 0.05
        for _ in range(100)
    )
    assert caught >= 90


def test_tango_constrained_mle_is_the_maximum() -> None:
    from scipy import optimize

    for lost, gained, n, d0 in [(20, 5, 400, -0.02), (3, 8, 100, -0.05), (30, 2, 120, -0.1), (5, 1, 400, 0.02)]:
        p_lost, p_gained = stats.tango_constrained(lost, gained, n, d0)
        assert p_gained == pytest.approx(p_lost + d0)

        def nll(p: float, lost: int = lost, gained: int = gained, n: int = n, d0: float = d0) -> float:
            return -(lost * math.log(p) + gained * math.log(p + d0) + (n - lost - gained) * math.log(1 - 2 * p - d0))

        best = optimize.minimize_scalar(nll, bounds=(max(0, -d0) + 1e-9, (1 - d0) / 2 - 1e-9), method="bounded",
                                        options={"xatol": 1e-12})
        assert p_lost == pytest.approx(best.x, abs=1e-7)


def test_tango_at_margin_zero_is_mcnemars_score_statistic() -> None:
    assert stats.tango_z(20, 5, 400, 0.0) == pytest.approx((5 - 20) / math.sqrt(25))


def test_paired_binary_with_margin_respects_it() -> None:
    """Seeded simulation at the boundary: the new release loses exactly the margin (0.02) on average,
    with 3 % of items flipping both ways; McNemar + an effect floor blocked such releases ~40 % of the
    time, the margin test at most alpha."""
    rng = np.random.default_rng(4)
    n, m = 400, 0.02
    rejected = 0
    for _ in range(500):
        u = rng.random(n)
        lost, gained = u < 0.015 + m / 2, (u >= 0.015 + m / 2) & (u < 0.03)
        base = np.where(lost, 1.0, np.where(gained, 0.0, (rng.random(n) < 0.9).astype(float)))
        new = np.where(lost, 0.0, np.where(gained, 1.0, base))
        res = stats.paired_binary(new, base, margin=m)
        rejected += res.p_regression < 0.05
    assert rejected / 500 <= 0.075
    # the interval is Tango's inverted test: its lower end is where the one-sided test at it has p = alpha
    res = stats.paired_binary(new, base, margin=m)
    assert sps.norm.cdf(stats.tango_z(*res.discordant, n, res.ci_low)) == pytest.approx(0.95, abs=1e-6)  # type: ignore[misc]


def test_holm_known_set() -> None:
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5]) == [0.5]
    assert stats.holm([]) == []
    assert stats.holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])  # step-down keeps order, capped at 1


def test_paired_bootstrap_seeded_and_sane() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 200)
    new = np.clip(base - 0.1 + rng.normal(0, 0.05, 200), 0, 1)
    a = stats.paired_bootstrap(new, base, margin=0.02, seed=42)
    b = stats.paired_bootstrap(new, base, margin=0.02, seed=42)
    assert a == b
    assert a.ci_low < a.mean_diff < a.ci_high < -0.05
    assert a.p_regression < 0.001
    same = stats.paired_bootstrap(base, base, margin=0.0, seed=1)
    assert same.mean_diff == 0 and same.ci_low == same.ci_high == 0
    assert same.p_regression == 1.0  # no drop at all cannot be a regression
    with pytest.raises(ValueError):
        stats.paired_bootstrap(new, base, resamples=100)


def test_mde_formulas() -> None:
    z = sps.norm.ppf(0.95) + sps.norm.ppf(0.8)
    assert stats.mde_paired(1.0, 100) == pytest.approx(z / 10)
    assert stats.mde_paired(0.2, 1) == math.inf
    rel = stats.mde_relative_shift(0.35, 200, 200)
    assert rel == pytest.approx(math.expm1(z * 0.35 * math.sqrt(2 / 200) / math.sqrt(3 / math.pi)))
    # the n needed brings the MDE down to the margin (MDE ~ 1/sqrt(n))
    need = stats.n_needed_paired(100, 0.04, 0.02)
    assert need == 400 and stats.mde_paired(1.0, need) == pytest.approx(stats.mde_paired(1.0, 100) / 2)
    need = stats.n_needed_shift(200, rel, 0.05)
    assert stats.mde_relative_shift(0.35, need, need) <= 0.05 < stats.mde_relative_shift(0.35, need - 2, need - 2)


def test_gate_seed_is_stable() -> None:
    assert stats.gate_seed(1, "correctness") == stats.gate_seed(1, "correctness")
    assert stats.gate_seed(1, "correctness") != stats.gate_seed(1, "refusal")


scores = st.lists(st.floats(0, 1, allow_nan=False), min_size=5, max_size=40)


@settings(max_examples=40, deadline=None)
@given(base=scores, noise=st.lists(st.floats(-0.3, 0.3), min_size=40, max_size=40), extra=st.floats(0, 0.5))
def test_more_regression_never_lowers_evidence(base: list[float], noise: list[float], extra: float) -> None:
    b = np.array(base)
    new = np.clip(b + np.array(noise[: len(b)]), 0, 1)
    worse = np.clip(new - extra, 0, 1)
    p1 = stats.paired_bootstrap(new, b, margin=0.01, seed=5, resamples=2000).p_regression
    p2 = stats.paired_bootstrap(worse, b, margin=0.01, seed=5, resamples=2000).p_regression
    assert p2 <= p1


@settings(max_examples=30, deadline=None)
@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=8), i=st.integers(0, 7), factor=st.floats(0, 1))
def test_holm_is_monotone(p: list[float], i: int, factor: float) -> None:
    i %= len(p)
    lower = list(p)
    lower[i] *= factor
    assert all(a <= b + 1e-15 for a, b in zip(stats.holm(lower), stats.holm(p), strict=True))


def test_quantile_test_blocks_a_tail_slowdown_at_the_margin_at_most_alpha() -> None:
    """A p99 exactly at baseline x 1.25 is blocked <= alpha (plus simulation noise); x 1.75 is caught."""
    rng = np.random.default_rng(12)
    at, beyond = 0, 0
    trials, n = 300, 800
    for _ in range(trials):
        base = rng.lognormal(np.log(0.2), 0.35, n)
        at += stats.quantile_test(rng.lognormal(np.log(0.2 * 1.25), 0.35, n), base, q=0.99, ratio=1.25).p_regression < 0.05
        beyond += stats.quantile_test(rng.lognormal(np.log(0.2 * 1.75), 0.35, n), base, q=0.99,
                                      ratio=1.25).p_regression < 0.05
    lo, _ = stats.wilson(at, trials)
    assert lo <= 0.05, at / trials
    assert beyond / trials >= 0.8


def test_quantile_test_counts_and_bounds() -> None:
    rng = np.random.default_rng(1)
    base = rng.lognormal(0, 0.3, 500)
    new = base.copy()
    res = stats.quantile_test(new, base, q=0.9, ratio=1.0)
    assert res.exceed_new == res.exceed_base and res.p_regression > 0.5 and res.shift == 0.0
    assert res.ci_low < 0 < res.ci_high
    fisher = sps.fisher_exact([[res.exceed_new, 500 - res.exceed_new], [res.exceed_base, 500 - res.exceed_base]],
                              alternative="greater").pvalue
    assert res.p_regression == pytest.approx(fisher)
    with pytest.raises(ValueError):
        stats.quantile_test(new, base, q=1.0)


def test_regression_proof_spread_ignores_the_regression() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(0, 0.1, 4000)
    assert stats.regression_proof_sd(d) == pytest.approx(0.1, rel=0.05)
    worse = d.copy()
    worse[:1000] -= rng.uniform(0.2, 0.8, 1000)
    assert stats.regression_proof_sd(worse) <= stats.regression_proof_sd(d)
    assert np.std(worse) > 2 * np.std(d)
    flips = np.array([1.0] * 10 + [-1.0] * 30 + [0.0] * 460)  # 0/1 items: 10 gained, 30 lost
    assert stats.regression_proof_sd(flips) == pytest.approx(np.sqrt(20 / 500))


def test_rate_sizing_keeps_an_unchanged_release_inside_its_threshold() -> None:
    from pipeline.gates.sizing import _rate_requests

    for t, e, risk, direction in ((0.01, 0.003, 0.01, "max"), (0.95, 0.985, 0.01, "min"), (0.02, 0.01, 0.05, "max")):
        n = _rate_requests(t, e, risk, direction)
        ns = np.arange(n, 5 * n)
        rate, allowed = (e, t) if direction == "max" else (1 - e, 1 - t)
        assert sps.binom.sf(np.floor(allowed * ns + 1e-9), ns, rate).max() <= risk
        assert sps.binom.sf(np.floor(allowed * (n - 1) + 1e-9), n - 1, rate) > risk  # the fewest such n
