"""Power by design: how many ground-truth items and bench requests a policy's gates need, worked out
before anything is measured, from the policy's margins and thresholds and planning values.

Rules (docs/GATES.md, "Sizing"):
- Comparison: a regression of twice the margin is caught with the policy's power at its alpha.
  Items: n = ((z_(1-alpha) + z_power) x sd / margin)^2, sd the A/A spread of the paired differences.
  Latency, per side, with sigma the sd of log latency and the log-scale target
  log((1 + 2 margin) / (1 + tested)) (tested = margin, or (1 + margin)(1 + drift) - 1 against a stored
  baseline): shift test n = 2 ((z + z) sigma / target)^2 / (3 / pi) (the rank test's efficiency);
  quantile test (p90 and above) n = 2 ((z + z) sigma sqrt(q (1 - q)) / phi(z_q) / target)^2 (the
  asymptotic variance of a sample quantile under a log-normal).
- Rate threshold on the bench (`error_rate <= 0.01`, `goodput >= 0.95`): the fewest requests, n, with
  which an unchanged release at its `expected` rate exceeds the threshold with probability at most
  `planning_risk` (binomial), for n and every count up to 2n, so one unlucky request never blocks it.
  Default `expected`: 30 % of a `max` rate's threshold (error_rate 1 % -> 0.3 %), or 30 % of the
  allowed shortfall of a `min` rate (goodput 0.95 -> 0.985).
- Percentile threshold on the bench (`ttft_p99_s <= 0.5`): n such that the sample quantile of an
  unchanged release at its `expected` value (default 90 % of the threshold) crosses the threshold with
  probability at most `planning_risk`: n = (z_(1-risk) sigma sqrt(q (1 - q)) / phi(z_q) / log(t / e))^2,
  and at least 1 / (1 - q) requests so that the quantile is not the slowest one.
The planning spreads (`planning_sd`, per gate) default to `PLANNING_SD`; they are assumptions a policy
author can replace with measured A/A figures. At gate time the engine judges power again, from a spread a
regression cannot inflate (pipeline/gates/engine.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from pipeline.gates.policy import GateSpec, Policy
from pipeline.models import Stage

# A/A spread of what a comparison compares, per `compare` source: items, the sd of the paired
# differences between two runs of the same release (0/1 items: sqrt of the share of items that flip,
# 0.17 ~ 3 %); samples, the sd of log latency.
PLANNING_SD: dict[str, float] = {
    "items:eval.correctness": 0.15,
    "items:eval.correctness_string": 0.15,
    "items:eval.faithfulness": 0.15,
    "items:eval.answer_relevance": 0.15,
    "items:eval.refusal": 0.17,
    "items:eval.latency_ok": 0.2,
    "samples:bench.ttft_s": 0.40,
    "samples:bench.tpot_s": 0.30,
    "samples:bench.e2e_s": 0.35,
    "samples:boot.load_time_s": 0.25,
}
DEFAULT_EXPECTED_RATE_SHARE = 0.3  # an unchanged release's rate, as a share of what the threshold allows
DEFAULT_EXPECTED_LATENCY_SHARE = 0.9  # an unchanged release's percentile, as a share of its SLO
MAX_PLANNED = 1_000_000

# Which items a dimension is scored on (evals/scoring.py), to size an item comparison by the ground truth.
Population = Literal["all", "answer", "refuse", "grounded"]
POPULATION: dict[str, Population] = {
    "correctness": "all", "correctness_string": "all", "refusal": "all", "latency_ok": "all",
    "faithfulness": "grounded", "answer_relevance": "answer",
}
POPULATION_TEXT: dict[Population, str] = {
    "all": "items", "answer": "should-answer items", "refuse": "should-refuse items",
    "grounded": "grounded should-answer items",
}


@dataclass(frozen=True)
class Need:
    """What one gate needs: `n` items of `population`, or `n` bench requests (per side)."""

    gate: str
    kind: Literal["items", "requests"]
    n: int
    why: str
    population: Population | None = None


def _z(p: float) -> float:
    return float(sps.norm.ppf(p))


def planning_sd(g: GateSpec) -> float | None:
    cmp = g.parsed_compare
    if g.planning_sd is not None:
        return g.planning_sd
    return PLANNING_SD.get(str(cmp)) if cmp is not None else None


def _series_sd(g: GateSpec) -> tuple[str | None, float | None]:
    """The sample series a bench percentile metric summarises, and its planning spread."""
    cmp = g.parsed_compare
    if cmp is not None and cmp.kind == "samples":
        return str(cmp), planning_sd(g)
    info = g.parsed_source.info
    series = info.compare if info is not None else None
    if series is None or not series.startswith("samples:"):
        return None, None
    key = f"samples:{g.parsed_source.stage.value}.{series.removeprefix('samples:')}"
    return key, g.planning_sd if g.planning_sd is not None else PLANNING_SD.get(key)


def _cap(x: float) -> int:
    return MAX_PLANNED if not math.isfinite(x) or x > MAX_PLANNED else max(1, math.ceil(x))


def comparison_need(g: GateSpec, policy: Policy, *, stored: bool = False,
                    scorer_error: dict[str, float] | None = None) -> Need | None:
    """Items or requests per side that catch a regression of twice the margin with the policy's power
    (and, for a key gate, show an unchanged release non-inferior with that probability). `scorer_error`:
    the plausible error rate of the scorer of a 0/1 dimension, which shrinks the tested margin by
    (1 - 2 eps) (pipeline/gates/engine.py)."""
    cmp, margin, sd = g.parsed_compare, g.margin, planning_sd(g)
    if cmp is None or margin is None or margin <= 0 or sd is None:
        return None
    zz = _z(1 - (g.alpha or policy.alpha)) + _z(policy.power)
    if cmp.kind == "items":
        population: Population = g.subset or POPULATION.get(cmp.name, "all")
        dim = cmp.dimension
        eps = (scorer_error or {}).get(cmp.name, 0.0) if dim is not None and dim.binary else 0.0
        tested = margin * (1 - 2 * eps)
        n = MAX_PLANNED if tested <= 0 else _cap((zz * sd / tested) ** 2)
        scorer = f", tested at {tested:.3g} for a scorer error rate of {eps:.1%}" if eps else ""
        why = (f"margin {margin:g} on {cmp} (planning sd {sd:g}{scorer}): {n} {POPULATION_TEXT[population]} catch a "
               f"drop of {2 * margin:g} with power {policy.power:g}")
        return Need(g.name, "items", n, why, population)
    drift = policy.drift_for(g) if stored else 0.0
    tested = (1 + margin) * (1 + drift) - 1
    target = math.log((1 + 2 * margin) / (1 + tested))
    if target <= 0:
        return Need(g.name, "requests", MAX_PLANNED, f"margin {margin:g} lies inside the drift allowance {drift:g}")
    q = g.parsed_source.quantile
    if g.resolved_test == "quantile" and q is not None:
        eff = sd * math.sqrt(q * (1 - q)) / float(sps.norm.pdf(sps.norm.ppf(q)))
        method = f"p{round(q * 100)} quantile test"
    else:
        eff = sd / math.sqrt(3 / math.pi)
        method = "shift test"
    n = _cap(2 * (zz * eff / target) ** 2)
    against = f"a stored baseline (drift allowance {drift:.0%})" if stored else "a same-run baseline"
    why = (f"margin {margin:.0%} on {cmp}, {method} against {against} (planning log-sd {sd:g}): {n} requests per "
           f"side catch +{2 * margin:.0%} with power {policy.power:g}")
    return Need(g.name, "requests", n, why)


def _rate_requests(threshold: float, expected: float, risk: float, direction: str) -> int:
    """Fewest requests n such that, for n and every larger count, a release at `expected` crosses the
    threshold with probability <= risk (binomial, counting failures). The chance rises within each step
    of the allowed failure count and drops at the next step; its peaks fall as n grows."""
    if direction == "max":
        rate, allowed = expected, threshold
    else:
        rate, allowed = 1 - expected, 1 - threshold
    if rate <= 0:
        return 1
    if rate >= allowed:
        return MAX_PLANNED
    horizon = 256
    while horizon <= 4 * MAX_PLANNED:
        ns = np.arange(1, horizon + 1)
        bad = sps.binom.sf(np.floor(allowed * ns + 1e-9), ns, rate) > risk
        last = int(ns[bad][-1]) if bad.any() else 0
        if last < horizon // 2:  # a whole quiet half: past every peak above the risk
            return last + 1
        horizon *= 4
    return MAX_PLANNED


def threshold_need(g: GateSpec, policy: Policy) -> Need | None:
    """Bench requests a threshold needs so that an unchanged release at its expected value passes it
    with probability >= 1 - planning_risk."""
    src, t = g.parsed_source, g.threshold
    if src.stage is not Stage.BENCH or src.kind != "metric" or t is None or g.direction is None:
        return None
    risk = policy.planning_risk
    unit = src.unit
    q = src.quantile
    if unit == "ratio":
        share = DEFAULT_EXPECTED_RATE_SHARE
        expected = g.expected if g.expected is not None else (
            t * share if g.direction == "max" else 1 - (1 - t) * share)
        n = _rate_requests(t, expected, risk, g.direction)
        why = (f"{src} {'<=' if g.direction == 'max' else '>='} {t:g} with an unchanged release at {expected:g}: "
               f"{n} requests keep the chance that sampling alone fails it <= {risk:g}")
        return Need(g.name, "requests", n, why)
    if unit == "s" and q is not None and g.direction == "max" and t > 0:
        _, sd = _series_sd(g)
        if sd is None:
            return None
        expected = g.expected if g.expected is not None else t * DEFAULT_EXPECTED_LATENCY_SHARE
        eff = sd * math.sqrt(q * (1 - q)) / float(sps.norm.pdf(sps.norm.ppf(q)))
        n = max(_cap((_z(1 - risk) * eff / math.log(t / expected)) ** 2), math.ceil(1 / (1 - q)))
        why = (f"{src} <= {t:g} with an unchanged release at {expected:g} (planning log-sd {sd:g}): {n} requests "
               f"keep the chance that its sample p{round(q * 100)} crosses the threshold <= {risk:g}")
        return Need(g.name, "requests", n, why)
    return None


def bench_needs(policy: Policy, *, stored: bool, comparisons: bool = True) -> list[Need]:
    """Every bench requirement of the policy's required gates, largest first (`comparisons` False: a
    first release, whose latency has nothing to be compared with)."""
    out: list[Need] = []
    for g in policy.gates:
        if not g.required:
            continue
        cmp = g.parsed_compare
        if comparisons and cmp is not None and cmp.kind == "samples" and cmp.stage is Stage.BENCH:
            need = comparison_need(g, policy, stored=stored)
            if need is not None:
                out.append(need)
        need = threshold_need(g, policy)
        if need is not None:
            out.append(need)
    return sorted(out, key=lambda n: -n.n)


def bench_requests(policy: Policy, *, stored: bool, comparisons: bool = True) -> tuple[int, list[Need]]:
    """The bench request count the policy needs (at least its min_n), and why."""
    needs = bench_needs(policy, stored=stored, comparisons=comparisons)
    return max([policy.min_n, *(n.n for n in needs)]), needs


def item_needs(policy: Policy, scorer_error: dict[str, float] | None = None) -> list[Need]:
    """Ground-truth items every required item comparison needs, per population."""
    out = []
    for g in policy.gates:
        cmp = g.parsed_compare
        if g.required and cmp is not None and cmp.kind == "items":
            need = comparison_need(g, policy, scorer_error=scorer_error)
            if need is not None:
                out.append(need)
    return out


def remeasure_need(policy: Policy, new: dict[str, list[float]], base: dict[str, list[float]]) -> Need | None:
    """After a bench with a same-run baseline: the largest number of requests per side that a required
    latency comparison needs, by the engine's power rule on the measured series (the baseline's own
    spread), when the series measured are fewer; None when every comparison is powered."""
    from pipeline.gates import stats

    worst: Need | None = None
    for g in policy.gates:
        cmp, margin = g.parsed_compare, g.margin
        if not g.required or cmp is None or cmp.kind != "samples" or cmp.stage is not Stage.BENCH or not margin:
            continue
        x, y = new.get(cmp.name) or [], base.get(cmp.name) or []
        if len(x) < 3 or len(y) < 3 or min(y) <= 0 or min(y) == max(y):
            continue
        alpha = g.alpha or policy.alpha
        target = stats.latency_target(margin, margin)
        sd = stats.baseline_log_sd(y)
        q = g.parsed_source.quantile
        if g.resolved_test == "quantile" and q is not None:
            sparsity = sd / float(sps.norm.pdf(sps.norm.ppf(q)))
            mde = stats.mde_quantile(sparsity, q, len(x), len(y), alpha=alpha, power=policy.power)
        else:
            mde = stats.mde_relative_shift(sd, len(x), len(y), alpha=alpha, power=policy.power)
        if math.log1p(mde) <= target:
            continue
        n = stats.n_needed_log(min(len(x), len(y)), mde, target)
        if worst is None or n > worst.n:
            worst = Need(g.name, "requests", n, f"{g.name}: {min(len(x), len(y))} requests per side catch "
                         f"+{2 * margin:.0%} with power below {policy.power:g} (measured log-sd {sd:.3g}); "
                         f"{n} needed")
    return worst


def design_problems(
    policy: Policy,
    *,
    items: dict[Population, int] | None,
    requests: int | None,
    max_requests: int,
    stored: bool,
    scorer_error: dict[str, float] | None = None,
) -> list[tuple[str, str]]:
    """(key path, problem) for every margin or threshold the planned sizes cannot support: ground-truth
    `items` per population (None: not checked), the configured bench `requests` (None: derived from the
    policy, at most `max_requests`)."""
    out: list[tuple[str, str]] = []
    if items is not None:
        for need in item_needs(policy, scorer_error):
            have = items.get(need.population or "all", 0)
            if have < need.n:
                out.append((f"gates.{need.gate}.margin", (f"{need.why}; the ground truth has {have}: {need.n} needed "
                                                          "(a larger ground truth, a wider margin, or a measured "
                                                          "planning_sd)")))
    for need in bench_needs(policy, stored=stored):
        if requests is not None and requests < need.n:
            out.append((f"gates.{need.gate}", (f"{need.why}; bench.requests={requests} is configured: {need.n} "
                                               "needed (leave bench.requests unset to size the bench by the policy)")))
        elif requests is None and need.n > max_requests:
            out.append((f"gates.{need.gate}", f"{need.why}; above bench.max_requests={max_requests}: {need.n} needed"))
    return out
