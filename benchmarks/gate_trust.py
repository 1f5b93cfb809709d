"""Gate trust: how often the gate engine blocks a release that did not change (A/A), and how often it
catches a planted regression. Simulated per-item scores and latency samples go through the real
engine (`pipeline.gates.engine.evaluate`) with every comparison gate of the shipped policy
(`gates.yaml`: margins, tests, alpha, Holm, min_n, drift allowance, power check, seeds as configured;
absolute thresholds and min_agreement are dropped so that only the comparisons are measured).
Each rate is printed with its 95 % Wilson interval.

Targets (issue 16):
- A/A false-block <= 5 %, also with 5 % run-to-run latency drift;
- a latency shift exactly at the margin blocked <= 7 %;
- -0.05 correctness, -0.05 refusal and x1.25 TTFT each caught >= 80 % at the v2 ground-truth size
  (>= 400 items, >= 120 should-refuse);
- warnings in <= 1 of 10 A/A releases.

Simulation (the assumptions every figure depends on; change them with the flags):
- items: `--items` (400) of which `--refuse` (130) should be refused and `--grounded` (150) have a
  context (faithfulness is scored on those only).
- correctness, faithfulness: item level p_i ~ Beta(4, 2); a run keeps the release's own answer with
  probability 1 - `--changed` (0.2) and draws a new one otherwise (batching/sampling
  nondeterminism), score = clip(p_i + N(0, `--score-sd` 0.15)). A planted drop degrades a
  `--affected` (0.3) share of items by amounts chosen so that the mean falls by exactly `--drop`.
- refusal (1 = behaved as expected): items are right with probability 0.95, a `--borderline`
  (0.02) share of them flips with probability 1/2 in every run. A planted drop makes `--drop` x
  items (all should-refuse items the baseline refused) behave wrongly.
- latency: TTFT log-normal (median 0.2 s, sigma 0.35) with 2 % stragglers at 3x, TPOT log-normal
  (median 40 ms, sigma 0.2), `--requests` (400) per run. A planted TTFT shift multiplies the
  candidate's TTFT only; machine drift multiplies every latency of the candidate's run; a same-run
  baseline is drawn in the candidate's run (the same machine state).

Usage: nice -n 10 python benchmarks/gate_trust.py [--trials 150] [--items 400] [--requests 400]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import load_yaml
from pipeline.gates.baseline import Baseline, BaselineKind
from pipeline.gates.engine import Evaluation, evaluate
from pipeline.gates.outcomes import INCONCLUSIVE
from pipeline.gates.policy import Policy, policy_from_dict
from pipeline.metrics import same_run_series
from pipeline.models import ImageRef, ItemResult, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.gate import GateStatus

REPO = Path(__file__).resolve().parents[1]


def shipped_comparison_policy(path: Path) -> Policy:
    """The shipped policy's comparison gates, thresholds and min_agreement dropped (no sections)."""
    raw = load_yaml(path, what="policy file")
    keep = [
        {k: v for k, v in g.items() if k not in ("threshold", "direction", "min_agreement", "locked")}
        for g in raw["gates"]
        if g.get("margin") is not None
    ]
    top = {k: raw[k] for k in ("alpha", "power", "seed", "resamples", "min_n", "drift_allowance") if k in raw}
    return policy_from_dict({**top, "gates": keep}, sections=(), where=str(path))


@dataclass
class Draw:
    correctness: np.ndarray
    faithfulness: np.ndarray
    refusal: np.ndarray
    ttft: np.ndarray
    tpot: np.ndarray


class World:
    """One ground truth and one baseline release; every trial draws fresh run-level noise."""

    def __init__(self, args: argparse.Namespace, rng: np.random.Generator) -> None:
        self.a, self.rng = args, rng
        n = args.items
        self.level = rng.beta(4, 2, n)
        self.own = np.clip(self.level + rng.normal(0, args.score_sd, n), 0, 1)  # the release's own answers
        self.faith_level = rng.beta(4, 2, args.grounded)
        self.faith_own = np.clip(self.faith_level + rng.normal(0, args.score_sd, args.grounded), 0, 1)
        self.right = (rng.random(n) < 0.95).astype(float)
        self.border = rng.random(n) < args.borderline
        refuse = np.zeros(n, bool)
        refuse[: args.refuse] = True
        # the planted refusal drop: should-refuse items the release gets right (and are not borderline)
        candidates = np.flatnonzero(refuse & (self.right == 1) & ~self.border)
        self.lost = candidates[: round(args.drop * n)]
        if len(self.lost) < round(args.drop * n):
            raise SystemExit("not enough stable should-refuse items for the refusal drop")
        self.affected = rng.random(n) < args.affected
        self.faith_affected = rng.random(args.grounded) < args.affected

    def _scores(self, level: np.ndarray, own: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        fresh = np.clip(level + rng.normal(0, self.a.score_sd, n), 0, 1)
        return np.where(rng.random(n) < self.a.changed, fresh, own)

    def _degrade(self, scores: np.ndarray, affected: np.ndarray, drop: float, rng: np.random.Generator) -> np.ndarray:
        """Lower the affected items so that the mean falls by exactly `drop` (clipped at 0)."""
        idx = np.flatnonzero(affected)
        need = drop * scores.size
        weights = rng.uniform(0.5, 1.5, idx.size)
        lo, hi = 0.0, 2.0
        for _ in range(50):
            k = (lo + hi) / 2
            got = (scores[idx] - np.clip(scores[idx] - k * weights, 0, 1)).sum()
            lo, hi = (k, hi) if got < need else (lo, k)
        out = scores.copy()
        out[idx] = np.clip(scores[idx] - hi * weights, 0, 1)
        return out

    def draw(
        self, *, corr_drop: bool = False, refusal_drop: bool = False, ttft: float = 1.0, machine: float = 1.0
    ) -> Draw:
        rng, n = self.rng, self.a.items
        corr = self._scores(self.level, self.own, rng, n)
        faith = self._scores(self.faith_level, self.faith_own, rng, self.a.grounded)
        if corr_drop:
            corr = self._degrade(corr, self.affected, self.a.drop, rng)
        ref = self.right.copy()
        flip = self.border & (rng.random(n) < 0.5)
        ref[flip] = 1 - ref[flip]
        if refusal_drop:
            ref[self.lost] = 0.0
        m = self.a.requests
        lat = np.exp(np.log(0.2) + rng.normal(0, 0.35, m))
        lat[rng.random(m) < 0.02] *= 3
        tpot = np.exp(np.log(0.04) + rng.normal(0, 0.2, m))
        return Draw(corr, faith, ref, lat * ttft * machine, tpot * machine)


def run_record(run_id: str, d: Draw, same_run: Draw | None = None) -> RunRecord:
    n_g = len(d.faithfulness)
    items = [
        ItemResult(
            item_id=f"i{i}", question="q", scores={"correctness": float(c), "refusal": float(r),
                                                   **({"faithfulness": float(d.faithfulness[i])} if i < n_g else {})},
        )
        for i, (c, r) in enumerate(zip(d.correctness, d.refusal, strict=True))
    ]
    ev = StageResult(
        stage=Stage.EVAL, status=StageStatus.OK, items=items,
        metrics={"correctness_mean": float(d.correctness.mean()), "refusal_accuracy": float(d.refusal.mean()),
                 "faithfulness_mean": float(d.faithfulness.mean())},
    )
    samples = {"ttft_s": d.ttft.tolist(), "tpot_s": d.tpot.tolist()}
    if same_run is not None:
        samples[same_run_series("ttft_s")] = same_run.ttft.tolist()
        samples[same_run_series("tpot_s")] = same_run.tpot.tolist()
    bench = StageResult(
        stage=Stage.BENCH, status=StageStatus.OK, samples=samples,
        metrics={"ttft_p99_s": float(np.percentile(d.ttft, 99)), "tpot_p50_s": float(np.median(d.tpot))},
    )
    return RunRecord(run_id=run_id, image=ImageRef(repository="sim"), stages={"eval": ev, "bench": bench})


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


def rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k / n:6.1%} [{lo:5.1%}, {hi:5.1%}]"


@dataclass
class Scenario:
    label: str
    make: Callable[[World, int], tuple[RunRecord, RunRecord]]  # (baseline, candidate)
    measure: str  # "block" (release blocked), "warn", or a gate name (that gate's fail rate)
    target: str = ""


def _pair(*, corr: bool = False, refusal: bool = False, ttft: float = 1.0, drift: float = 0.0,
          same_run: bool = False) -> Callable[[World, int], tuple[RunRecord, RunRecord]]:
    """A stored baseline run and a candidate run; `drift` slows the candidate's machine (every latency),
    `ttft` the candidate release itself; with `same_run` the baseline release is also measured in the
    candidate's run (so on the candidate's machine)."""

    def make(w: World, t: int) -> tuple[RunRecord, RunRecord]:
        base = run_record(f"b{t}", w.draw())
        machine = 1.0 + drift
        new = w.draw(corr_drop=corr, refusal_drop=refusal, ttft=ttft, machine=machine)
        twin = w.draw(machine=machine) if same_run else None
        return base, run_record(f"n{t}", new, twin)

    return make


def tally(policy: Policy, world: World, sc: Scenario, trials: int) -> dict[str, int]:
    out = {"blocked": 0, "warned": 0, "passed": 0, "gate_fail": 0, "named": 0}
    for t in range(trials):
        base, new = sc.make(world, t)
        ev: Evaluation = evaluate(policy, new, Baseline(BaselineKind.SAME, "simulated", base), sections=(),
                                  calibration=lambda _sid: 1.0)
        blocked = ev.decision.value == "blocked"
        out["blocked"] += blocked
        out["passed"] += not blocked
        out["warned"] += bool(ev.warnings)
        if sc.measure not in ("block", "warn", "pass"):
            v = next(v for v in ev.verdicts if v.name == sc.measure)
            out["gate_fail"] += v.status is GateStatus.FAIL
        if blocked and any(v.status is GateStatus.FAIL and v.details.outcome in INCONCLUSIVE for v in ev.verdicts):
            out["named"] += 1  # blocked as inconclusive, by name (too_few, underpowered, ...)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--items", type=int, default=400, help="ground-truth items per run (v2 size)")
    ap.add_argument("--refuse", type=int, default=130, help="should-refuse items among them")
    ap.add_argument("--grounded", type=int, default=150, help="grounded items (faithfulness)")
    ap.add_argument("--requests", type=int, default=400, help="latency samples per run")
    ap.add_argument("--changed", type=float, default=0.2, help="share of answers a rerun changes")
    ap.add_argument("--score-sd", type=float, default=0.15, help="score spread of a re-drawn answer")
    ap.add_argument("--affected", type=float, default=0.3, help="share of items a quality drop touches")
    ap.add_argument("--borderline", type=float, default=0.02, help="share of items whose refusal flips per run")
    ap.add_argument("--drop", type=float, default=0.05)
    ap.add_argument("--shift", type=float, default=1.25)
    ap.add_argument("--small", type=int, default=20, help="n of the small-sample scenario")
    ap.add_argument("--policy", type=Path, default=REPO / "gates.yaml")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    policy = shipped_comparison_policy(args.policy)
    margin = {g.name: g.margin for g in policy.gates}
    for g in policy.gates:
        print(f"gate {g.name}: compare {g.parsed_compare}, test {g.resolved_test}, margin {g.margin}, "
              f"on_inconclusive {g.inconclusive_action}")
    print(f"alpha {policy.alpha} ({policy.multiplicity} multiplicity adjustment), power {policy.power}, min_n {policy.min_n}, drift allowance "
          f"{policy.drift_allowance}, B={policy.resamples}; {args.items} items ({args.refuse} should-refuse, "
          f"{args.grounded} grounded), {args.requests} requests/run, {args.trials} trials per scenario")
    lat_margin = margin.get("ttft_p99") or 0.10
    world = World(args, np.random.default_rng(args.seed))
    small_args = argparse.Namespace(**{**vars(args), "items": args.small, "requests": args.small,
                                       "grounded": args.small, "refuse": args.small // 2})
    small = World(small_args, np.random.default_rng(args.seed + 1)) if args.small >= 4 else None
    scenarios = [
        Scenario("A/A, stored baseline", _pair(), "block", "<= 5 %"),
        Scenario("A/A, stored baseline, 5 % drift", _pair(drift=0.05), "block", "<= 5 %"),
        Scenario("A/A, same-run baseline", _pair(same_run=True), "block", "<= 5 %"),
        Scenario(f"TTFT x{1 + lat_margin:g} (at margin), same-run", _pair(ttft=1 + lat_margin, same_run=True),
                 "ttft_p99", "<= 7 %"),
        Scenario(f"TTFT x{1 + lat_margin:g} (at margin), stored", _pair(ttft=1 + lat_margin), "ttft_p99", "<= 7 %"),
        Scenario(f"TTFT x{1 + lat_margin / 2:g} (inside margin), same-run",
                 _pair(ttft=1 + lat_margin / 2, same_run=True), "ttft_p99", "<= 7 %"),
        Scenario(f"correctness -{args.drop}", _pair(corr=True), "correctness", ">= 80 %"),
        Scenario(f"refusal -{args.drop}", _pair(refusal=True), "refusal", ">= 80 %"),
        Scenario(f"TTFT x{args.shift}, stored baseline", _pair(ttft=args.shift), "ttft_p99", ">= 80 %"),
        Scenario(f"TTFT x{args.shift}, same-run baseline", _pair(ttft=args.shift, same_run=True), "ttft_p99",
                 ">= 80 %"),
    ]
    t0 = time.monotonic()
    for sc in scenarios:
        r = tally(policy, world, sc, args.trials)
        n = args.trials
        if sc.measure == "block":
            print(f"{sc.label:44s} release blocked {rate(r['blocked'], n)} (target {sc.target}); "
                  f"with a warning {rate(r['warned'], n)} (target <= 10 %)")
        else:
            print(f"{sc.label:44s} {sc.measure} fail {rate(r['gate_fail'], n)} (target {sc.target}); "
                  f"release blocked {rate(r['blocked'], n)}")
    if small is not None:
        for label, make in (
            (f"n={args.small}: A/A", _pair()),
            (f"n={args.small}: correctness -{args.drop} and TTFT x{args.shift}", _pair(corr=True, ttft=args.shift)),
        ):
            r = tally(policy, small, Scenario(label, make, "block"), args.trials)
            print(f"{label:44s} release passes {rate(r['passed'], args.trials)} (target 0 %: too little data never "
                  f"passes a key gate); blocked as inconclusive (named) {rate(r['named'], args.trials)}")
    print(f"wall {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
