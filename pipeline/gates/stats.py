"""The statistics behind a gate verdict: paired bootstrap, exact McNemar, Mann-Whitney, Holm, MDE.

Conventions (stated once, used everywhere):
- Quality comparisons work on paired per-item differences `d = new - baseline` (higher is better).
- Latency comparisons work on the relative shift of medians `new / baseline - 1` (lower is better).
- Every test here is a *regression* test: H0 "not worse than the margin", H1 "worse by more than the
  margin". Its p-value is what Holm adjusts across the gates of one release, so the chance that
  a release with no real regression is blocked stays at alpha however many gates it has.
- Confidence bounds are one-sided at level 1 - alpha on each side (together a 1 - 2*alpha interval):
  the lower bound of `d` above `-margin` proves non-inferiority.
Every random draw is seeded, so the same inputs give the same verdict.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

DEFAULT_RESAMPLES = 10_000
_CHUNK = 2_000  # bootstrap rows drawn at once, so memory stays bounded for large n


def gate_seed(base: int, name: str) -> int:
    """A per-gate seed that does not depend on gate order or Python's hash randomisation."""
    return (base * 1_000_003 + zlib.crc32(name.encode())) % 2**32


@dataclass(frozen=True)
class PairedResult:
    n: int
    mean_diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    p_regression: float  # H0: mean diff >= -margin
    method: str
    discordant: tuple[int, int] | None = None  # McNemar: (lost, gained)


def _bootstrap_means(x: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(x)
    out = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        stop = min(resamples, start + _CHUNK)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def paired_bootstrap(
    new: Sequence[float],
    base: Sequence[float],
    *,
    margin: float = 0.0,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedResult:
    """Percentile bootstrap of the mean paired difference, resampling items (pairs stay together)."""
    d = np.asarray(new, dtype=float) - np.asarray(base, dtype=float)
    if d.size < 2:
        raise ValueError("a paired bootstrap needs at least 2 paired items")
    if resamples < 1000:
        raise ValueError("resamples must be >= 1000")
    boot = _bootstrap_means(d, resamples, seed)
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    # Percentile p-value by inverting the interval: the share of resampled means on the H0 side.
    p = (1 + int(np.count_nonzero(boot >= -margin))) / (resamples + 1)
    return PairedResult(
        n=int(d.size),
        mean_diff=float(d.mean()),
        sd_diff=float(d.std(ddof=1)),
        ci_low=float(lo),
        ci_high=float(hi),
        p_regression=float(p),
        method=f"paired bootstrap (B={resamples})",
    )


def mcnemar_exact(lost: int, gained: int, *, alternative: str = "two-sided") -> float:
    """Exact McNemar test on the discordant pairs.

    `lost` = items right in the baseline and wrong now, `gained` = the reverse. Under H0 (no change)
    lost ~ Binomial(lost + gained, 1/2). `alternative="greater"` is the one-sided regression test.
    """
    n = lost + gained
    if n == 0:
        return 1.0
    if alternative == "greater":
        return float(sps.binom.sf(lost - 1, n, 0.5))
    if alternative == "less":
        return float(sps.binom.cdf(lost, n, 0.5))
    if alternative != "two-sided":
        raise ValueError(f"unknown alternative {alternative!r}")
    return float(min(1.0, 2 * sps.binom.cdf(min(lost, gained), n, 0.5)))


def paired_binary(
    new: Sequence[float],
    base: Sequence[float],
    *,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedResult:
    """McNemar for 0/1 scores: exact regression p-value; interval from the same paired bootstrap."""
    a = np.asarray(new, dtype=float)
    b = np.asarray(base, dtype=float)
    if not (np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
        raise ValueError("McNemar needs 0/1 scores")
    lost = int(np.count_nonzero((b == 1) & (a == 0)))
    gained = int(np.count_nonzero((b == 0) & (a == 1)))
    boot = paired_bootstrap(a, b, alpha=alpha, resamples=resamples, seed=seed)
    return PairedResult(
        n=boot.n,
        mean_diff=boot.mean_diff,
        sd_diff=boot.sd_diff,
        ci_low=boot.ci_low,
        ci_high=boot.ci_high,
        p_regression=mcnemar_exact(lost, gained, alternative="greater"),
        method="McNemar exact (one-sided)",
        discordant=(lost, gained),
    )


@dataclass(frozen=True)
class RankResult:
    n_new: int
    n_base: int
    median_new: float
    median_base: float
    rel_shift: float  # median(new) / median(base) - 1
    ci_low: float
    ci_high: float
    p_regression: float  # Mann-Whitney, H1: new tends to be larger (slower)
    cliffs_delta: float  # P(new > base) - P(new < base)
    cles: float  # common-language effect size P(new > base) + P(tie)/2
    log_sd: float


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a / b - 1.0


def rank_shift(
    new: Sequence[float],
    base: Sequence[float],
    *,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> RankResult:
    """Mann-Whitney U (new slower than base?) with the relative median shift as the effect size."""
    x = np.asarray(new, dtype=float)
    y = np.asarray(base, dtype=float)
    if x.size < 2 or y.size < 2:
        raise ValueError("a rank test needs at least 2 samples on each side")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("latency samples must be positive")
    res = sps.mannwhitneyu(x, y, alternative="greater", method="auto")
    u = float(res.statistic)
    cles = u / (x.size * y.size)
    rng = np.random.default_rng(seed)
    shifts = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        stop = min(resamples, start + _CHUNK)
        mx = np.median(x[rng.integers(0, x.size, size=(stop - start, x.size))], axis=1)
        my = np.median(y[rng.integers(0, y.size, size=(stop - start, y.size))], axis=1)
        shifts[start:stop] = _rel(mx, my)
    lo, hi = np.quantile(shifts, [alpha, 1 - alpha])
    pooled = np.concatenate([np.log(x) - np.log(x).mean(), np.log(y) - np.log(y).mean()])
    return RankResult(
        n_new=int(x.size),
        n_base=int(y.size),
        median_new=float(np.median(x)),
        median_base=float(np.median(y)),
        rel_shift=float(np.median(x) / np.median(y) - 1.0),
        ci_low=float(lo),
        ci_high=float(hi),
        p_regression=float(res.pvalue),
        cliffs_delta=float(2 * cles - 1),
        cles=float(cles),
        log_sd=float(pooled.std(ddof=2)) if pooled.size > 2 else 0.0,
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order (monotone in every raw p)."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj_sorted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj_sorted, 1.0)
    return [float(v) for v in out]


def _z(q: float) -> float:
    return float(sps.norm.ppf(q))


def mde_paired(sd_diff: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean paired drop a one-sided level-alpha test detects with `power` at this n."""
    if n < 2:
        return float("inf")
    return (_z(1 - alpha) + _z(power)) * sd_diff / np.sqrt(n)


def mde_relative_shift(log_sd: float, n_new: int, n_base: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest relative median shift Mann-Whitney detects with `power` (log-normal latencies).

    Uses the normal approximation with the asymptotic relative efficiency 3/pi of the rank test
    against the t-test on log latency.
    """
    if n_new < 2 or n_base < 2:
        return float("inf")
    se = log_sd * np.sqrt(1 / n_new + 1 / n_base) / np.sqrt(3 / np.pi)
    return float(np.expm1((_z(1 - alpha) + _z(power)) * se))
