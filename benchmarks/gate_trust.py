"""Gate trust: how often the gate engine blocks a release that did not change (A/A), and how often
it catches a planted regression. It replays simulated per-item scores and latency samples through
the real engine (`pipeline.gates.engine.evaluate`) with the comparison gates of the shipped policy
(`gates.yaml`: correctness, refusal, ttft_p99 — margins, tests, alpha, Holm, seeds as configured;
their absolute thresholds are dropped so only the comparison is measured).

Simulation (paired, as the real data are): each item has a difficulty shared by both runs.
- correctness: item level p_i ~ Beta(4, 2); a run's score = clip(p_i + e, 0, 1), e ~ N(0, noise)
  independently per run (sampling/batching nondeterminism). Planted drop: the new run's item levels
  are shifted so that the mean score drops by exactly `--drop` (0.05).
- refusal: behaved-as-expected ~ Bernoulli(q_i) independently per run; 80 % of items are near-
  deterministic (q_i = 0.99), 20 % borderline (q_i ~ Beta(2, 1)); the planted drop lowers every q_i
  proportionally so the mean falls by `--drop`.
- TTFT: log-normal, median 0.2 s, sigma 0.35 (+ 2 % stragglers at 3x); planted shift multiplies
  every sample by 1.25.

Usage: python benchmarks/gate_trust.py [--trials 200] [--n 200] [--requests 200] [--noise 0.12]
Targets (issue 5): A/A false-block rate <= 5 %; detection >= 80 % for the -0.05 drop at n = 200 and
for the +25 % TTFT shift.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import yaml

from pipeline.gates.baseline import Baseline, BaselineKind
from pipeline.gates.engine import evaluate
from pipeline.gates.policy import Policy, policy_from_dict
from pipeline.models import GateStatus, ImageRef, ItemResult, RunRecord, StageResult, StageStatus

REPO = Path(__file__).resolve().parents[1]
GATES = ("correctness", "refusal", "ttft_p99")


def shipped_comparison_policy(path: Path) -> Policy:
    raw = yaml.safe_load(path.read_text())
    keep = []
    for g in raw["gates"]:
        if g["name"] in GATES:
            g = {k: v for k, v in g.items() if k not in ("threshold", "direction", "min_agreement")}
            keep.append(g)
    missing = set(GATES) - {g["name"] for g in keep}
    if missing:
        raise SystemExit(f"{path} lacks gates {sorted(missing)}")
    top = {k: raw[k] for k in ("alpha", "power", "seed", "resamples") if k in raw}
    return policy_from_dict({**top, "gates": keep}, where=str(path))


def _run(run_id: str, corr: np.ndarray, refusal: np.ndarray, ttft: np.ndarray) -> RunRecord:
    items = [
        ItemResult(item_id=f"i{i}", question="q", scores={"correctness": float(c), "refusal": float(r)})
        for i, (c, r) in enumerate(zip(corr, refusal, strict=True))
    ]
    ev = StageResult(
        stage="eval",
        status=StageStatus.OK,
        metrics={"correctness_mean": float(corr.mean()), "refusal_accuracy": float(refusal.mean())},
        items=items,
    )
    bench = StageResult(
        stage="bench",
        status=StageStatus.OK,
        metrics={"ttft_p99_s": float(np.percentile(ttft, 99))},
        samples={"ttft_s": [float(x) for x in ttft]},
    )
    return RunRecord(run_id=run_id, image=ImageRef(repository="sim"), stages={"eval": ev, "bench": bench})


class World:
    """One benchmark: fixed item population, fresh run-level noise per trial."""

    def __init__(self, n: int, requests: int, noise: float, drop: float, rng: np.random.Generator) -> None:
        self.n, self.requests, self.noise, self.rng = n, requests, noise, rng
        self.p = rng.beta(4, 2, size=n)
        self.q = np.where(rng.random(n) < 0.8, 0.99, rng.beta(2, 1, size=n))
        self.corr_shift = self._solve_shift(drop)
        self.q_drop = np.clip(self.q - drop / self.q.mean() * self.q, 0, 1)  # proportional: mean drops by `drop`

    def _solve_shift(self, drop: float) -> float:
        # Shift item levels so that the *expected clipped* mean falls by exactly `drop`.
        big = np.random.default_rng(0).normal(0, self.noise, size=(200, self.n))
        base = np.clip(self.p + big, 0, 1).mean()
        lo, hi = 0.0, 0.5
        for _ in range(40):
            mid = (lo + hi) / 2
            if base - np.clip(self.p - mid + big, 0, 1).mean() < drop:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def correctness(self, shifted: bool) -> np.ndarray:
        level = self.p - (self.corr_shift if shifted else 0.0)
        return np.clip(level + self.rng.normal(0, self.noise, self.n), 0, 1)

    def refusal(self, shifted: bool) -> np.ndarray:
        return (self.rng.random(self.n) < (self.q_drop if shifted else self.q)).astype(float)

    def ttft(self, factor: float) -> np.ndarray:
        x = np.exp(np.log(0.2) + self.rng.normal(0, 0.35, self.requests))
        stragglers = self.rng.random(self.requests) < 0.02
        x[stragglers] *= 3
        return x * factor


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


def scenario(policy: Policy, world: World, trials: int, *, corr: bool, refusal: bool, ttft: float) -> dict[str, object]:
    fails = {g: 0 for g in GATES}
    warns = {g: 0 for g in GATES}
    blocked = 0
    for t in range(trials):
        base = _run(f"b{t}", world.correctness(False), world.refusal(False), world.ttft(1.0))
        new = _run(f"n{t}", world.correctness(corr), world.refusal(refusal), world.ttft(ttft))
        ev = evaluate(policy, new, Baseline(BaselineKind.SAME, "simulated", base), calibration=lambda _sid: 1.0)
        for v in ev.verdicts:
            fails[v.name] += v.status is GateStatus.FAIL
            warns[v.name] += v.status is GateStatus.WARN
        blocked += ev.decision.value == "blocked"
    return {"fails": fails, "warns": warns, "blocked": blocked, "trials": trials}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--n", type=int, default=200, help="ground-truth items per run")
    ap.add_argument("--requests", type=int, default=200, help="TTFT samples per run")
    ap.add_argument("--noise", type=float, default=0.12, help="per-run score noise sd (correctness)")
    ap.add_argument("--drop", type=float, default=0.05)
    ap.add_argument("--shift", type=float, default=1.25)
    ap.add_argument("--policy", type=Path, default=REPO / "gates.yaml")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    policy = shipped_comparison_policy(args.policy)
    for g in policy.gates:
        print(
            f"gate {g.name}: compare {g.parsed_compare}, test {g.resolved_test}, margin {g.margin}, alpha {g.alpha or policy.alpha}"
        )
    print(
        f"n={args.n} items, {args.requests} TTFT samples/run, noise sd={args.noise}, trials={args.trials}, B={policy.resamples}"
    )
    world = World(args.n, args.requests, args.noise, args.drop, np.random.default_rng(args.seed))
    runs = [
        ("A/A (no change)", {"corr": False, "refusal": False, "ttft": 1.0}, None),
        (f"correctness -{args.drop}", {"corr": True, "refusal": False, "ttft": 1.0}, "correctness"),
        (f"refusal -{args.drop}", {"corr": False, "refusal": True, "ttft": 1.0}, "refusal"),
        (f"TTFT x{args.shift}", {"corr": False, "refusal": False, "ttft": args.shift}, "ttft_p99"),
    ]
    t0 = time.monotonic()
    for label, kw, target in runs:
        r = scenario(policy, world, args.trials, **kw)  # type: ignore[arg-type]
        n = r["trials"]
        fails, warns = r["fails"], r["warns"]  # type: ignore[assignment]
        per_gate = ", ".join(f"{g} fail {fails[g] / n:.1%} warn {warns[g] / n:.1%}" for g in GATES)  # type: ignore[index]
        if target is None:
            lo, hi = wilson(r["blocked"], n)  # type: ignore[arg-type]
            print(f"{label:22s} release false-block {r['blocked'] / n:.1%} (95% CI {lo:.1%}-{hi:.1%})  [{per_gate}]")  # type: ignore[operator]
        else:
            k = fails[target]  # type: ignore[index]
            lo, hi = wilson(k, n)
            print(f"{label:22s} detection by {target} {k / n:.1%} (95% CI {lo:.1%}-{hi:.1%})  [{per_gate}]")
    print(f"wall {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
