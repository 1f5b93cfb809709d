"""The statistics behind a gate verdict: regression tests against a margin, their intervals, Holm, MDE.

Conventions (stated once, used everywhere):
- Quality comparisons work on paired per-item differences `d = new - baseline` (higher is better).
- Latency comparisons work on the ratio of the new to the baseline latency distribution (lower is
  better), estimated on the log scale (a multiplicative shift, as machine speed acts).
- Every test is a *regression* test against the margin: H0 "not worse than the margin", H1 "worse
  by more than the margin". A true regression exactly at the margin is therefore blocked with
  probability <= alpha. Its p-value is what Holm adjusts across the gates of one release.
- Intervals are one-sided at level 1 - alpha on each side (together a 1 - 2*alpha interval).
Every random draw is seeded, so the same inputs give the same verdict.
"""

from __future__ import annotations

import math
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


def _z(q: float) -> float:
    return float(sps.norm.ppf(q))


# -- paired per-item scores --------------------------------------------------------------------


@dataclass(frozen=True)
class PairedResult:
    n: int
    mean_diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    p_regression: float  # H0: mean difference >= -margin
    method: str
    discordant: tuple[int, int] | None = None  # 0/1 scores: (lost, gained)


def _bootstrap_means(x: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(x)
    out = np.empty(resamples)
    # 16-bit indices draw about twice as fast as numpy's default 64-bit ones (same uniform draws)
    dtype = np.uint16 if n <= np.iinfo(np.uint16).max else np.int64
    for start in range(0, resamples, _CHUNK):
        stop = min(resamples, start + _CHUNK)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=dtype)
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
    """Percentile bootstrap of the mean paired difference, resampling items (pairs stay together).

    p = share of resampled means on the H0 side (>= -margin), i.e. the interval inverted at the margin."""
    d = np.asarray(new, dtype=float) - np.asarray(base, dtype=float)
    if d.size < 2:
        raise ValueError("a paired bootstrap needs at least 2 paired items")
    if not np.isfinite(d).all():
        raise ValueError("paired scores must be finite")
    if resamples < 1000:
        raise ValueError("resamples must be >= 1000")
    boot = _bootstrap_means(d, resamples, seed)
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
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


def tango_constrained(lost: int, gained: int, n: int, delta0: float) -> tuple[float, float]:
    """Maximum-likelihood (p_lost, p_gained) of the paired 2x2 table under p_gained - p_lost = delta0.

    Tango (1998), Statistics in Medicine 17:891-908, eq. 3: the root of
    2n p^2 - (b + c - delta0 (2n + b - c)) p - b delta0 (1 - delta0) = 0, with b = lost, c = gained
    (the score equation of the multinomial likelihood under the constraint, solved for p_lost)."""
    a = 2.0 * n
    bq = -(lost + gained) + (2.0 * n + lost - gained) * delta0
    cq = -lost * delta0 * (1.0 - delta0)
    disc = max(bq * bq - 4.0 * a * cq, 0.0)
    p_lost = (-bq + math.sqrt(disc)) / (2.0 * a)
    p_lost = min(max(p_lost, max(0.0, -delta0)), (1.0 - delta0) / 2.0)
    return p_lost, p_lost + delta0


def tango_z(lost: int, gained: int, n: int, delta0: float) -> float:
    """Tango's score statistic for H0: p_gained - p_lost = delta0 (large = the data lie above delta0)."""
    p_lost, p_gained = tango_constrained(lost, gained, n, delta0)
    var = (p_lost + p_gained - delta0 * delta0) / n
    diff = (gained - lost) / n - delta0
    if var <= 0.0:
        return math.copysign(math.inf, diff) if diff else 0.0
    return diff / math.sqrt(var)


def _tango_bound(lost: int, gained: int, n: int, z: float) -> float:
    """The delta0 where Tango's statistic equals z (it decreases in delta0): an interval end."""
    lo, hi = -1.0 + 1e-12, 1.0 - 1e-12
    for _ in range(100):
        mid = (lo + hi) / 2
        if tango_z(lost, gained, n, mid) > z:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def paired_binary(
    new: Sequence[float],
    base: Sequence[float],
    *,
    margin: float = 0.0,
    alpha: float = 0.05,
) -> PairedResult:
    """0/1 scores: exact McNemar when the margin is 0; Tango's score test of H0 "drop <= margin"
    otherwise (McNemar only tests "no change", so it cannot respect a margin). The interval is
    Tango's score interval (the test inverted), one-sided 1 - alpha at each end."""
    a = np.asarray(new, dtype=float)
    b = np.asarray(base, dtype=float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError("paired 0/1 scores need at least 2 pairs of equal length")
    if not (np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
        raise ValueError("McNemar needs 0/1 scores")
    n = int(a.size)
    lost = int(np.count_nonzero((b == 1) & (a == 0)))
    gained = int(np.count_nonzero((b == 0) & (a == 1)))
    d = a - b
    if margin == 0.0:
        p = mcnemar_exact(lost, gained, alternative="greater")
        method = "McNemar exact (one-sided)"
    else:
        p = float(sps.norm.cdf(tango_z(lost, gained, n, -margin)))
        method = f"Tango score test (one-sided, margin {margin:g})"
    z = _z(1 - alpha)
    return PairedResult(
        n=n,
        mean_diff=float(d.mean()),
        sd_diff=float(d.std(ddof=1)),
        ci_low=_tango_bound(lost, gained, n, z),
        ci_high=_tango_bound(lost, gained, n, -z),
        p_regression=p,
        method=method,
        discordant=(lost, gained),
    )


# -- latency samples -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftResult:
    n_new: int
    n_base: int
    median_new: float
    median_base: float
    median_ratio: float  # median(new) / median(base)
    shift: float  # Hodges-Lehmann estimate of the multiplicative shift, as new/base - 1
    ci_low: float  # one-sided 1 - alpha bounds of `shift`
    ci_high: float
    tested_ratio: float  # H0: new <= base x tested_ratio
    p_regression: float  # Mann-Whitney U, H1: new slower than base x tested_ratio
    cliffs_delta: float  # P(new > base) - P(new < base), unshifted
    cles: float  # P(new > base) + P(tie)/2, unshifted
    log_sd: float  # pooled sd of log latency (for the MDE)


def _kth_pairwise(u: np.ndarray, v_sorted: np.ndarray, k: int) -> float:
    """The k-th smallest (1-based) of all u_i - v_j, found by bisection on the value; counting
    pairs below a value takes one searchsorted, so no n1 x n2 array is ever built."""
    n2 = v_sorted.size
    lo = float(u.min() - v_sorted[-1])
    hi = float(u.max() - v_sorted[0])
    for _ in range(200):
        mid = (lo + hi) / 2
        # pairs with u_i - v_j <= mid  <=>  v_j >= u_i - mid
        count = int((n2 - np.searchsorted(v_sorted, u - mid, side="left")).sum())
        if count >= k:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):
            break
    return hi


def shift_test(
    new: Sequence[float],
    base: Sequence[float],
    *,
    ratio: float = 1.0,
    alpha: float = 0.05,
) -> ShiftResult:
    """Is `new` slower than `base` x `ratio`? A shifted Mann-Whitney test (scipy's, on new vs
    base * ratio), so a true slowdown of exactly `ratio` is blocked with probability <= alpha.

    The effect is the Hodges-Lehmann estimate of the log-scale shift (the median of all pairwise
    log differences) with the distribution-free interval that inverts the same rank test
    (Lehmann 1975, ch. 2; normal approximation with continuity correction)."""
    x = np.asarray(new, dtype=float)
    y = np.asarray(base, dtype=float)
    if x.size < 2 or y.size < 2:
        raise ValueError("a rank test needs at least 2 samples on each side")
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or (x <= 0).any() or (y <= 0).any():
        raise ValueError("latency samples must be finite and positive")
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError("ratio must be finite and positive")
    res = sps.mannwhitneyu(x, y * ratio, alternative="greater", method="auto")
    plain = sps.mannwhitneyu(x, y, alternative="greater", method="auto")
    n1, n2 = int(x.size), int(y.size)
    cles = float(plain.statistic) / (n1 * n2)
    lx, ly = np.log(x), np.log(y)
    ly_sorted = np.sort(ly)
    total = n1 * n2
    half_width = _z(1 - alpha) * math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)
    k = max(1, math.floor(total / 2.0 - half_width - 0.5))
    lower = _kth_pairwise(lx, ly_sorted, k)
    upper = _kth_pairwise(lx, ly_sorted, total - k + 1)
    if total % 2:
        hl = _kth_pairwise(lx, ly_sorted, (total + 1) // 2)
    else:
        hl = (_kth_pairwise(lx, ly_sorted, total // 2) + _kth_pairwise(lx, ly_sorted, total // 2 + 1)) / 2
    pooled = np.concatenate([lx - lx.mean(), ly - ly.mean()])
    return ShiftResult(
        n_new=n1,
        n_base=n2,
        median_new=float(np.median(x)),
        median_base=float(np.median(y)),
        median_ratio=float(np.median(x) / np.median(y)),
        shift=math.expm1(hl),
        ci_low=math.expm1(lower),
        ci_high=math.expm1(upper),
        tested_ratio=float(ratio),
        p_regression=float(res.pvalue),
        cliffs_delta=2 * cles - 1,
        cles=cles,
        log_sd=float(pooled.std(ddof=2)) if pooled.size > 2 else 0.0,
    )


# -- the family and the design -------------------------------------------------------------------


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


def mde_paired(sd_diff: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean paired drop beyond the margin a one-sided level-alpha test detects with `power`."""
    if n < 2:
        return float("inf")
    return float((_z(1 - alpha) + _z(power)) * sd_diff / np.sqrt(n))


def mde_relative_shift(log_sd: float, n_new: int, n_base: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest relative slowdown beyond the margin the rank test detects with `power` (log-normal
    latencies): normal approximation with the rank test's efficiency 3/pi against the t-test on
    log latency."""
    if n_new < 2 or n_base < 2:
        return float("inf")
    se = log_sd * np.sqrt(1 / n_new + 1 / n_base) / np.sqrt(3 / np.pi)
    return float(np.expm1((_z(1 - alpha) + _z(power)) * se))


def n_needed_paired(n: int, mde: float, margin: float) -> int:
    """Items needed for the MDE to reach the margin (the MDE falls as 1/sqrt(n))."""
    return math.ceil(n * (mde / margin) ** 2)


def n_needed_shift(n: int, mde: float, margin: float) -> int:
    """Requests per side needed for the latency MDE to reach the margin (log scale, 1/sqrt(n))."""
    return math.ceil(n * (math.log1p(mde) / math.log1p(margin)) ** 2)


# -- power that a regression cannot inflate --------------------------------------------------------


def regression_proof_sd(diffs: Sequence[float] | np.ndarray) -> float:
    """The A/A spread of paired differences (new - baseline, higher is better), estimated from the
    changes in the release's favour only: sqrt(2/n * sum of d^2 over d > 0).

    An unchanged release has differences symmetric around 0, so the favourable half carries half of
    their second moment; a regression moves items the other way and cannot inflate it (0/1 scores:
    twice the share of items gained). A bigger regression therefore never looks "more underpowered"."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return 0.0
    pos = d[d > 0]
    return float(math.sqrt(2.0 * float(np.sum(pos * pos)) / d.size))


def baseline_log_sd(base: Sequence[float]) -> float:
    """Spread of the baseline's log latency: what a latency comparison's power is computed from (the
    candidate's own spread grows with a tail regression, the baseline's cannot)."""
    y = np.log(np.asarray(base, dtype=float))
    return float(y.std(ddof=1)) if y.size > 1 else 0.0


def latency_target(margin: float, tested: float) -> float:
    """Log-scale distance between the tested bound (1 + tested) and twice the margin (1 + 2 margin):
    the design rule is that a regression of twice the margin is caught with the policy's power, also
    against a stored baseline whose drift allowance widens the tested bound."""
    return math.log((1 + 2 * margin) / (1 + tested))


# -- tail latency: a quantile compared as a quantile ------------------------------------------------


@dataclass(frozen=True)
class QuantileResult:
    q: float  # the quantile compared (0.99 for p99)
    n_new: int
    n_base: int
    quantile_new: float
    quantile_base: float
    shift: float  # quantile_new / quantile_base - 1
    ci_low: float  # distribution-free bounds of `shift` (order statistics), one-sided 1 - alpha each
    ci_high: float
    tested_ratio: float
    cut: float  # the common cut: the pooled q-quantile of new and baseline x tested_ratio
    exceed_new: int  # samples above the cut
    exceed_base: int
    p_regression: float  # Fisher's exact test: more of the new samples lie above the cut
    log_sparsity: float  # d log Q / dq at q, estimated from the baseline (for the MDE)


def _order_stat_bounds(sorted_x: np.ndarray, q: float, level: float) -> tuple[float, float]:
    """Distribution-free one-sided `level` bounds of the q-quantile: the order statistics whose
    binomial coverage is at least `level` (Conover 1999, 3.2)."""
    n = sorted_x.size
    lo = int(sps.binom.ppf(1 - level, n, q))  # P(Bin(n,q) < lo) <= 1 - level: x_(lo) is a lower bound
    hi = int(sps.binom.ppf(level, n, q)) + 1
    return float(sorted_x[max(lo - 1, 0)]), float(sorted_x[min(hi, n) - 1])


def log_sparsity(base: np.ndarray, q: float) -> float:
    """d log Q(p) / dp at p = q under a log-normal with the baseline's log spread: sd / phi(z_q). The
    baseline's spread over all its samples is stable where a tail difference quotient is not, and a
    regression of the candidate cannot inflate it."""
    return baseline_log_sd(base) / float(sps.norm.pdf(sps.norm.ppf(q)))


def quantile_test(
    new: Sequence[float],
    base: Sequence[float],
    *,
    q: float,
    ratio: float = 1.0,
    alpha: float = 0.05,
) -> QuantileResult:
    """Is the q-quantile of `new` above the baseline's x `ratio`? A two-sample quantile test (Mood's
    median test moved to the q-quantile): cut the pooled new and baseline x `ratio` samples at their
    q-quantile, count each side's samples above the cut, and test with Fisher's exact test whether the
    new side has more of them. Under "new's q-quantile <= baseline's x ratio" the new side holds no
    more than its share of the pooled tail, so a true tail slowdown of exactly `ratio` is blocked with
    probability <= alpha. A scale shift of the whole distribution is not what it measures: the median
    test is the shifted Mann-Whitney (`shift_test`)."""
    x = np.sort(np.asarray(new, dtype=float))
    y = np.sort(np.asarray(base, dtype=float))
    if not 0 < q < 1:
        raise ValueError("q must lie strictly between 0 and 1")
    if x.size < 2 or y.size < 2:
        raise ValueError("a quantile test needs at least 2 samples on each side")
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or (x <= 0).any() or (y <= 0).any():
        raise ValueError("latency samples must be finite and positive")
    scaled = y * ratio
    cut = float(np.quantile(np.concatenate([x, scaled]), q, method="inverted_cdf"))
    k_new = int(np.count_nonzero(x > cut))
    k_base = int(np.count_nonzero(scaled > cut))
    table = [[k_new, x.size - k_new], [k_base, y.size - k_base]]
    p = 1.0 if k_new + k_base == 0 else float(sps.fisher_exact(table, alternative="greater").pvalue)
    qn, qb = float(np.quantile(x, q)), float(np.quantile(y, q))
    # each side's bound at 1 - alpha/2, so the ratio's bound holds at >= 1 - alpha (Bonferroni)
    ln, un = _order_stat_bounds(x, q, 1 - alpha / 2)
    lb, ub = _order_stat_bounds(y, q, 1 - alpha / 2)
    return QuantileResult(
        q=q, n_new=int(x.size), n_base=int(y.size), quantile_new=qn, quantile_base=qb, shift=qn / qb - 1,
        ci_low=ln / ub - 1, ci_high=un / lb - 1, tested_ratio=float(ratio), cut=cut, exceed_new=k_new,
        exceed_base=k_base, p_regression=p, log_sparsity=log_sparsity(y, q),
    )


def mde_quantile(log_sparsity: float, q: float, n_new: int, n_base: int, *, alpha: float = 0.05,
                 power: float = 0.8) -> float:
    """Smallest relative tail slowdown beyond the tested bound the quantile test detects with `power`:
    se(log Q_q) = sparsity x sqrt(q(1 - q) / n) on each side (the quantile's asymptotic variance)."""
    if n_new < 2 or n_base < 2:
        return float("inf")
    se = log_sparsity * math.sqrt(q * (1 - q)) * math.sqrt(1 / n_new + 1 / n_base)
    return float(np.expm1((_z(1 - alpha) + _z(power)) * se))


def n_needed_log(n: int, mde: float, target_log: float) -> int:
    """Samples per side for a latency MDE (relative) to reach a log-scale target (1/sqrt(n))."""
    if target_log <= 0:
        return 0
    return math.ceil(n * (math.log1p(mde) / target_log) ** 2)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))
