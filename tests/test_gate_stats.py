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
    res = stats.paired_binary(new, base, seed=1)
    assert res.discordant == (lost, gained)
    assert res.p_regression == pytest.approx(sps.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue)
    assert res.mean_diff == pytest.approx((gained - lost) / len(ids))
    # Llama-2 over-refuses safe XSTest prompts far more than GPT-4 (the paper's finding): a clear regression.
    assert lost > gained and res.p_regression < 1e-6
    assert res.ci_high < 0


def test_mann_whitney_matches_scipy_and_effect_sizes() -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(np.log(0.25), 0.3, 60)
    y = rng.lognormal(np.log(0.2), 0.3, 50)
    res = stats.rank_shift(x, y, seed=1)
    ref = sps.mannwhitneyu(x, y, alternative="greater")
    assert res.p_regression == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.cles == pytest.approx(ref.statistic / (60 * 50))
    assert res.rel_shift == pytest.approx(np.median(x) / np.median(y) - 1)
    assert res.ci_low < res.rel_shift < res.ci_high
    sep = stats.rank_shift([4.0, 5.0, 6.0], [1.0, 2.0, 3.0], seed=1)
    assert sep.cliffs_delta == 1.0 and sep.cles == 1.0
    assert sep.p_regression == pytest.approx(0.05)  # exact: 1 / C(6,3)


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
