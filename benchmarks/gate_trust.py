"""Gate trust: how often the gate engine lets an unchanged release through, and how often it stops a planted
regression, through the real engine (`pipeline.gates.engine.evaluate`) with the shipped policy
(`gates.yaml`: every bench and eval gate as shipped, thresholds, margins, tests, alpha, power, the tail test,
the per-category check, under-refusal) on ground truth v2's own items (ids, categories, expected behaviour),
with the bench request count the policy derives (`pipeline.gates.sizing`) and the refusal scorer's trust from
its calibration record on file. Each rate is printed with its 95 % Wilson interval.

A release "passes" only with the decision `pass`; blocked and inconclusive are both "not passed".

Targets (issue 27):
- unchanged releases at the shipped defaults (same-run and stored baselines, true error rate 0.3 %):
  blocked or inconclusive <= 5 %;
- a disturbed bench machine with thresholds violated (TTFT x3, TPOT 4x its threshold, goodput 0.10): never pass;
- refusal -0.05 and -0.03, the netted exfiltration case, a one-category collapse, a p99 tail x1.5 and a uniform
  x1.20 against a stored baseline: not passed >= 80 %;
and (issue 16) a latency shift at its margin blocked <= 7 %, correctness -0.05 caught >= 80 %.

Simulation (the assumptions every figure depends on; change them with the flags):
- items: ground truth v2 (505 items, 149 should-refuse, 168 grounded should-answer; 46 categories).
- correctness, faithfulness: item level p_i ~ Beta(6, 2); a run keeps the release's own answer with
  probability 1 - `--changed` (0.2) and draws a new one otherwise (batching/sampling nondeterminism),
  score = clip(p_i + N(0, `--score-sd` 0.15)). A planted drop degrades a `--affected` (0.3) share of items
  so that the mean falls by exactly `--drop`.
- refusal (1 = behaved as expected): should-refuse items right with probability 0.985 (under-refusal 1.5 %),
  should-answer items 0.95 (over-refusal 5 %); a `--borderline` (0.02) share flips with probability 1/2 in
  every run. A planted drop makes k stable should-refuse items behave wrongly.
- latency per request: TTFT log-normal (median 0.2 s, sigma 0.35: true p99 0.45 s, 90 % of the 0.5 s SLO, as
  issue 27's audit had it), TPOT log-normal (median 30 ms, sigma 0.2); a request fails with probability
  `--error-rate` (0.003); goodput = ok and TTFT <= 0.5 s and TPOT <= 50 ms. Machine drift multiplies every
  latency of the candidate's run; a same-run baseline is drawn on the candidate's machine.
- answer_relevance (judge, no per-item data here) is recorded as 0.85, eval item errors as 0. The LLM judge
  is taken as calibrated (agreement 0.95 on 400 held-out labels); the refusal scorer's trust is its record's.

Usage: nice -n 10 python benchmarks/gate_trust.py [--trials 100] [--quick] [--only A/A]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evals.calibration import trust_for
from pipeline.gates import sizing
from pipeline.gates.baseline import Baseline, BaselineKind, first_release
from pipeline.gates.engine import Calibration, Evaluation, evaluate
from pipeline.gates.policy import Policy, load_policy, policy_from_dict
from pipeline.gates.stats import wilson
from pipeline.metrics import same_run_series
from pipeline.models import ImageRef, ItemResult, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.bench import BenchDetails
from pipeline.schemas.eval import EvalDetails, ScorerInfo
from pipeline.schemas.gate import GateStatus
from pipeline.schemas.trust import ScorerTrust
from pipeline.stages.registry import CATALOGUE  # noqa: F401  (installs the metric catalogue)
from pipeline.supplychain.gate_sections import SECTIONS

REFUSAL_SCORER = "offline-refusal/2"
JUDGE = "judge/{}/simulated"  # the LLM judge: not simulated, trusted at the figures below
SCORERS = EvalDetails(base_url=None, model=None, ground_truth={}, collection=None, latency_slo_s=10.0, n_answer=0,
                      n_refuse=0, scored_at="2026-01-01T00:00:00Z",
                      scorers={"refusal": ScorerInfo(id=REFUSAL_SCORER), "correctness": ScorerInfo(id="minilm"),
                               **{d: ScorerInfo(id=JUDGE.format(d)) for d in ("faithfulness", "answer_relevance")}})


def shipped_policy(path: Path) -> Policy:
    """The shipped policy's bench and eval gates, exactly as shipped (the supply-chain, boot and
    manifests gates read stages this simulation does not make)."""
    full = load_policy(path, sections=SECTIONS)
    keep = [g.model_dump(exclude_none=True, exclude_defaults=True) for g in full.gates
            if g.parsed_source.stage in (Stage.BENCH, Stage.EVAL)]
    top = {k: getattr(full, k) for k in ("alpha", "power", "seed", "resamples", "min_n", "drift_allowance",
                                         "multiplicity", "planning_risk")}
    return policy_from_dict({**top, "gates": keep}, sections=(), where=str(path))


@dataclass
class Draw:
    correctness: np.ndarray
    faithfulness: np.ndarray
    refusal: np.ndarray
    ttft: np.ndarray
    tpot: np.ndarray
    errors: int


class World:
    """Ground truth v2 and one baseline release; every trial draws fresh run-level noise."""

    def __init__(self, args: argparse.Namespace, rng: np.random.Generator, rows: list[dict[str, object]]) -> None:
        self.a, self.rng, self.rows = args, rng, rows
        n = len(rows)
        self.ids = [str(r["id"]) for r in rows]
        self.category = np.array([str(r["category"]) for r in rows])
        self.refuse = np.array([r["expected_behaviour"] == "refuse" for r in rows])
        self.grounded = np.array([r["expected_behaviour"] == "answer" and bool(r["contexts"]) for r in rows])
        self.level = rng.beta(6, 2, n)
        self.own = np.clip(self.level + rng.normal(0, args.score_sd, n), 0, 1)
        self.faith_level = rng.beta(6, 2, n)
        self.faith_own = np.clip(self.faith_level + rng.normal(0, args.score_sd, n), 0, 1)
        p_right = np.where(self.refuse, 0.985, 0.95)
        self.right = (rng.random(n) < p_right).astype(float)
        self.border = rng.random(n) < args.borderline
        self.affected = rng.random(n) < args.affected
        self.stable_refuse = np.flatnonzero(self.refuse & (self.right == 1) & ~self.border)

    def _scores(self, level: np.ndarray, own: np.ndarray) -> np.ndarray:
        n = level.size
        fresh = np.clip(level + self.rng.normal(0, self.a.score_sd, n), 0, 1)
        return np.where(self.rng.random(n) < self.a.changed, fresh, own)

    def _degrade(self, scores: np.ndarray, affected: np.ndarray, drop: float) -> np.ndarray:
        """Lower the affected items so that the mean falls by exactly `drop` (clipped at 0)."""
        idx = np.flatnonzero(affected)
        need = drop * scores.size
        weights = self.rng.uniform(0.5, 1.5, idx.size)
        lo, hi = 0.0, 2.0
        for _ in range(50):
            k = (lo + hi) / 2
            got = (scores[idx] - np.clip(scores[idx] - k * weights, 0, 1)).sum()
            lo, hi = (k, hi) if got < need else (lo, k)
        out = scores.copy()
        out[idx] = np.clip(scores[idx] - hi * weights, 0, 1)
        return out

    def latency(self, m: int, machine: float = 1.0, ttft: float = 1.0, tail: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        lat = np.exp(np.log(0.2) + rng.normal(0, 0.35, m))
        if tail != 1.0:  # the slowest 3 % of requests `tail` times slower, the median untouched
            slow = np.argsort(lat)[-max(1, round(0.03 * m)):]
            lat[slow] *= tail
        tpot = np.exp(np.log(0.03) + rng.normal(0, 0.2, m))
        return lat * ttft * machine, tpot * machine

    def draw(self, m: int, *, corr_drop: float = 0.0, refusal_lost: int = 0, machine: float = 1.0,
             ttft: float = 1.0, tail: float = 1.0, tpot: float = 1.0) -> Draw:
        n = len(self.rows)
        corr = self._scores(self.level, self.own)
        if corr_drop:
            corr = self._degrade(corr, self.affected, corr_drop)
        faith = self._scores(self.faith_level, self.faith_own)
        ref = self.right.copy()
        flip = self.border & (self.rng.random(n) < 0.5)
        ref[flip] = 1 - ref[flip]
        if refusal_lost:
            ref[self.stable_refuse[:refusal_lost]] = 0.0
        lat, tp = self.latency(m, machine, ttft, tail)
        return Draw(corr, faith, ref, lat, tp * tpot, int(self.rng.binomial(m, self.a.error_rate)))


def run_record(w: World, run_id: str, d: Draw, same_run: Draw | None = None,
               bench_extra: dict[str, float] | None = None) -> RunRecord:
    items = []
    for i, item_id in enumerate(w.ids):
        scores: dict[str, float | None] = {"correctness": float(d.correctness[i]), "refusal": float(d.refusal[i])}
        if w.grounded[i]:
            scores["faithfulness"] = float(d.faithfulness[i])
        items.append(ItemResult(item_id=item_id, question="q", category=str(w.category[i]),
                                expected_behaviour="refuse" if w.refuse[i] else "answer", scores=scores))
    eval_metrics = {
        "correctness_mean": float(d.correctness.mean()), "refusal_accuracy": float(d.refusal.mean()),
        "under_refusal_rate": float(1 - d.refusal[w.refuse].mean()),
        "over_refusal_rate": float(1 - d.refusal[~w.refuse].mean()),
        "faithfulness_mean": float(d.faithfulness[w.grounded].mean()), "answer_relevance_mean": 0.85,
        "item_error_rate": 0.0,
    }
    ev = StageResult(stage=Stage.EVAL, status=StageStatus.OK, items=items, metrics=eval_metrics, details=SCORERS)
    m = d.ttft.size
    ok = np.ones(m, bool)
    ok[:d.errors] = False  # which requests failed does not matter to the figures
    samples = {"ttft_s": d.ttft[ok].tolist(), "tpot_s": d.tpot[ok].tolist()}
    if same_run is not None:
        samples[same_run_series("ttft_s")] = same_run.ttft.tolist()
        samples[same_run_series("tpot_s")] = same_run.tpot.tolist()
    good = ok & (d.ttft <= 0.5) & (d.tpot <= 0.05)
    bench_metrics = {
        "ttft_p50_s": float(np.percentile(d.ttft[ok], 50)), "ttft_p99_s": float(np.percentile(d.ttft[ok], 99)),
        "tpot_p50_s": float(np.percentile(d.tpot[ok], 50)), "tpot_p99_s": float(np.percentile(d.tpot[ok], 99)),
        "error_rate": d.errors / m, "goodput": float(good.mean()), "env_disturbed": 0.0, **(bench_extra or {}),
    }
    details = BenchDetails(base_url="sim", model=None, shape="concurrency", prompts="synthetic",
                           exact_input_tokens=True, requests=m, warmup=0, max_tokens=32, ignore_eos="sent",
                           tokens_estimated=False, slo={"ttft_s": 0.5, "tpot_s": 0.05})
    bench = StageResult(stage=Stage.BENCH, status=StageStatus.OK, samples=samples, metrics=bench_metrics,
                        details=details)
    return RunRecord(run_id=run_id, image=ImageRef(repository="sim"), stages={"eval": ev, "bench": bench})


def rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k / n:6.1%} [{lo:5.1%}, {hi:5.1%}]"


Make = Callable[[World, int], tuple[RunRecord | None, RunRecord]]  # (baseline or None, candidate)


@dataclass
class Scenario:
    label: str
    make: Make
    measure: str  # "passed" / "not_passed": the release decision; "gate": how often `gate` failed
    target: str
    gate: str | None = None  # also show this gate's not-passed rate


def tally(policy: Policy, world: World, sc: Scenario, trials: int,
          calibration: Calibration) -> tuple[dict[str, int], Counter[str]]:
    """Decisions and the named gate's results over `trials`, and which gates kept a release from passing."""
    out = {"pass": 0, "blocked": 0, "inconclusive": 0, "gate": 0, "gate_fail": 0, "gate_compared": 0}
    why: Counter[str] = Counter()
    for t in range(trials):
        base, new = sc.make(world, t)
        baseline = Baseline(BaselineKind.SAME, "simulated", base) if base is not None else first_release("sim")
        ev: Evaluation = evaluate(policy, new, baseline, sections=(), calibration=calibration)
        out[ev.decision.value] += 1
        for v in ev.verdicts:
            if v.required and v.status not in (GateStatus.PASS, GateStatus.WARN):
                why[f"{v.name} {v.details.outcome}"] += 1
        if sc.gate is not None:
            v = next(v for v in ev.verdicts if v.name == sc.gate)
            out["gate"] += v.status not in (GateStatus.PASS, GateStatus.WARN)
            out["gate_fail"] += v.status is GateStatus.FAIL
            # the comparison's own finding, whatever the threshold says
            out["gate_compared"] += v.p_value is not None and v.p_value < (v.details.alpha or policy.alpha) or bool(
                v.details.categories)
    return out, why


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="only the issue-27 scenarios")
    ap.add_argument("--only", default="", help="only scenarios whose label contains this text (e.g. A/A)")
    ap.add_argument("--scorer-lower", type=float, default=None,
                    help="replace the refusal scorer's record by a held-out agreement interval with this lower end "
                         "(n=400): what a better-calibrated scorer changes")
    ap.add_argument("--changed", type=float, default=0.2, help="share of answers a rerun changes")
    ap.add_argument("--score-sd", type=float, default=0.15, help="score spread of a re-drawn answer")
    ap.add_argument("--affected", type=float, default=0.3, help="share of items a quality drop touches")
    ap.add_argument("--borderline", type=float, default=0.02, help="share of items whose refusal flips per run")
    ap.add_argument("--error-rate", type=float, default=0.003, help="true share of failed requests")
    ap.add_argument("--policy", type=Path, default=REPO / "gates.yaml")
    ap.add_argument("--ground-truth", type=Path, default=REPO / "ground_truth/v2/data/test.jsonl")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    policy = shipped_policy(args.policy)
    rows = [json.loads(x) for x in args.ground_truth.read_text().splitlines() if x.strip()]
    n_same, _ = sizing.bench_requests(policy, stored=False)
    n_stored, _ = sizing.bench_requests(policy, stored=True)
    trust = trust_for(REFUSAL_SCORER)
    if args.scorer_lower is not None:
        trust = ScorerTrust(scorer_id=REFUSAL_SCORER, agreement=min(1.0, args.scorer_lower + 0.02),
                            lower=args.scorer_lower, upper=min(1.0, args.scorer_lower + 0.04), n=400, held_out=True)
    lo, hi = wilson(380, 400)
    judge = ScorerTrust(scorer_id="judge", agreement=0.95, lower=lo, upper=hi, n=400, held_out=True)
    calibration: Calibration = lambda sid: trust if sid == REFUSAL_SCORER else judge
    for g in policy.gates:
        extra = f", margin {g.margin:g} on {g.parsed_compare} ({g.resolved_test})" if g.margin is not None else ""
        print(f"gate {g.name}: {g.source} {g.direction or ''} {g.threshold if g.threshold is not None else ''}{extra}"
              f"{', key' if g.key else ''}")
    print(f"alpha {policy.alpha}, power {policy.power}, min_n {policy.min_n}, drift allowance {policy.drift_allowance}, "
          f"planning_risk {policy.planning_risk}; ground truth {len(rows)} items; bench per side: {n_same} requests "
          f"(same-run baseline), {n_stored} (stored baseline), as the policy sizes it")
    if trust is not None:
        print(f"refusal scorer {trust.scorer_id}: agreement {trust.agreement:.3f} on n={trust.n} held-out labels, "
              f"95% interval [{trust.lower:.3f}, {trust.upper:.3f}]: the refusal margins are tested at "
              f"x (1 - 2 x {1 - trust.lower:.3f})")
    print(f"{args.trials} trials per scenario; rates with 95% Wilson intervals")
    world = World(args, np.random.default_rng(args.seed), rows)

    def pair(*, stored: bool = False, drift: float = 0.0, disturbed: dict[str, float] | None = None,
             **planted: float) -> Make:
        def make(w: World, t: int) -> tuple[RunRecord | None, RunRecord]:
            m = n_stored if stored else n_same
            base = run_record(w, f"b{t}", w.draw(m))
            machine = 1.0 + drift
            new = w.draw(m, machine=machine, **planted)  # type: ignore[arg-type]
            twin = None if stored else w.draw(m, machine=machine)
            return base, run_record(w, f"n{t}", new, twin, disturbed)
        return make

    exfil_items = np.flatnonzero(world.category == "refuse_exfiltration")
    flags = np.isin(world.category, ["vllm_flags", "tgi_flags"])

    def exfiltration(w: World, t: int) -> tuple[RunRecord | None, RunRecord]:
        base_d = w.draw(n_same)
        new_d = w.draw(n_same)
        new_d.refusal[exfil_items] = 0.0  # every exfiltration request answered
        over = np.flatnonzero(~w.refuse & (new_d.refusal == 0))
        new_d.refusal[over[:15]] = 1.0  # while 15 over-refusals are fixed
        return run_record(w, f"b{t}", base_d), run_record(w, f"n{t}", new_d, w.draw(n_same))

    def category_collapse(w: World, t: int) -> tuple[RunRecord | None, RunRecord]:
        base_d = w.draw(n_same)
        new_d = w.draw(n_same)
        new_d.correctness = np.clip(np.where(flags, base_d.correctness - 0.5, new_d.correctness + 0.03), 0, 1)
        return run_record(w, f"b{t}", base_d), run_record(w, f"n{t}", new_d, w.draw(n_same))

    shares = np.random.default_rng(args.seed + 3)

    def disturbed(known: bool) -> Make:
        def make(w: World, t: int) -> tuple[RunRecord | None, RunRecord]:
            share = float(shares.uniform(0.05, 0.6))
            env = {"env_disturbed": 1.0, "env_steal_during": 0.09, "goodput": 0.10,
                   **({"env_disturbance": share} if known else {})}
            return pair(ttft=3.0, tpot=4 * 0.05 / 0.03, disturbed=env)(w, t)
        return make

    margin50 = policy.gate("ttft_p50").margin or 0.10
    scenarios = [
        Scenario("A/A, same-run baseline", pair(), "not_passed", "<= 5 %"),
        Scenario("A/A, stored baseline", pair(stored=True), "not_passed", "<= 5 %"),
        Scenario("A/A, stored baseline, 5 % machine drift", pair(stored=True, drift=0.05), "not_passed", "<= 5 %"),
        Scenario("disturbed, TTFT x3 TPOT 4x goodput 0.10 (share known)", disturbed(True), "passed", "0 %"),
        Scenario("disturbed, same (share of machine unknown)", disturbed(False), "passed", "0 %"),
        Scenario("refusal -0.05 (25 should-refuse items)", pair(refusal_lost=25), "not_passed", ">= 80 %", "refusal"),
        Scenario("refusal -0.03 (15 should-refuse items)", pair(refusal_lost=15), "not_passed", ">= 80 %", "refusal"),
        Scenario("exfiltration answered, 15 over-refusals fixed", exfiltration, "not_passed", ">= 80 %",
                 "under_refusal"),
        Scenario("correctness +0.03, vLLM/TGI flags -0.5", category_collapse, "not_passed", ">= 80 %", "correctness"),
        Scenario("p99 tail x1.5 (3 % slowest x2.5), same-run", pair(tail=2.5), "not_passed", ">= 80 %", "ttft_p99"),
        Scenario("uniform TTFT x1.20, stored baseline", pair(stored=True, ttft=1.2), "not_passed", ">= 80 %",
                 "ttft_p50"),
    ]
    if not args.quick:
        scenarios += [
            Scenario(f"TTFT x{1 + margin50:g} (at the ttft_p50 margin), same-run", pair(ttft=1 + margin50),
                     "gate", "<= 7 %", "ttft_p50"),
            Scenario("correctness -0.05", pair(corr_drop=0.05), "not_passed", ">= 80 %", "correctness"),
        ]
    t0 = time.monotonic()
    for sc in [s for s in scenarios if args.only in s.label]:
        r, why = tally(policy, world, sc, args.trials, calibration)
        n = args.trials
        not_passed = r["blocked"] + r["inconclusive"]
        split = f"(blocked {r['blocked']}, inconclusive {r['inconclusive']})"
        if sc.measure == "passed":
            print(f"{sc.label:56s} passed {rate(r['pass'], n)} (target {sc.target}) {split}")
        elif sc.measure == "not_passed":
            gate = (f"; {sc.gate} not passed {rate(r['gate'], n)}, its comparison alone shows the regression "
                    f"{rate(r['gate_compared'], n)}") if sc.gate else ""
            print(f"{sc.label:56s} not passed {rate(not_passed, n)} (target {sc.target}) {split}{gate}")
        else:
            print(f"{sc.label:56s} {sc.gate} failed {rate(r['gate_fail'], n)} (target {sc.target}); "
                  f"not passed {rate(r['gate'], n)}")
        if sc.gate is None and why:
            print(f"{'':56s} kept from passing by: " + ", ".join(f"{k} x{c}" for k, c in why.most_common()))
        sys.stdout.flush()
    print(f"wall {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
