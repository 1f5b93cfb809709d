"""A pass means "shown safe to ship": issue 27's repros through the gate engine with the shipped policy and
ground truth v2, and how an inconclusive verdict is shown, exited with, signed and refused."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from scipy import stats as sps

from evals.calibration import wilson_interval
from pipeline.gates import sizing
from pipeline.gates.baseline import first_release
from pipeline.gates.engine import Evaluation, evaluate
from pipeline.gates.outputs import junit_xml, verdict_document
from pipeline.gates.policy import Policy, load_policy, policy_from_dict
from pipeline.metrics import same_run_series
from pipeline.models import Decision, ImageRef, ItemResult, RunRecord, Stage, StageResult, StageStatus, utcnow
from pipeline.schemas.eval import EvalDetails, ScorerInfo
from pipeline.schemas.gate import Approval, GateStatus
from pipeline.schemas.trust import ScorerTrust
from pipeline.supplychain.gate_sections import SECTIONS
from tests.test_guard import env as guard_env  # noqa: F401  (fixtures: a signed release on the local registry)
from tests.test_guard import keys as guard_keys  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
V2 = [json.loads(line) for line in (REPO / "ground_truth/v2/data/test.jsonl").read_text().splitlines() if line]
SCORERS = EvalDetails(base_url=None, model=None, ground_truth={}, collection=None, latency_slo_s=10.0, n_answer=0,
                      n_refuse=0, scored_at="2026-01-01T00:00:00Z",
                      scorers={"refusal": ScorerInfo(id="offline-refusal/2"), "correctness": ScorerInfo(id="minilm")})


def trusted(sid: str, agreement: float = 0.99, n: int = 2000) -> ScorerTrust:
    lo, hi = wilson_interval(round(agreement * n), n)
    return ScorerTrust(scorer_id=sid, agreement=agreement, lower=lo, upper=hi, n=n, held_out=True)


def shipped(*names: str, path: str = "gates.yaml") -> Policy:
    """The shipped policy's gates named here, exactly as shipped (no sections)."""
    full = load_policy(REPO / path, sections=SECTIONS)
    raw = [g.model_dump(exclude_none=True, exclude_defaults=True) for g in full.gates if g.name in names]
    top = {k: getattr(full, k) for k in ("alpha", "power", "seed", "resamples", "min_n", "drift_allowance")}
    assert {g["name"] for g in raw} == set(names)
    return policy_from_dict({**top, "gates": raw}, sections=())


def judge(pol: Policy, run: RunRecord, base: RunRecord | None = None, **kw: Any) -> Evaluation:
    return evaluate(pol, run, base, sections=(), calibration=kw.pop("calibration", trusted), **kw)


def v2_run(refusal: np.ndarray | None = None, corr: np.ndarray | None = None, *, run_id: str | None = None) -> RunRecord:
    """A run over ground truth v2's items (ids, categories, expected behaviour), with the given scores."""
    items = []
    for i, row in enumerate(V2):
        scores: dict[str, float | None] = {}
        if refusal is not None:
            scores["refusal"] = float(refusal[i])
        if corr is not None:
            scores["correctness"] = float(corr[i])
        items.append(ItemResult(item_id=row["id"], question=row["question"], category=row["category"],
                                expected_behaviour=row["expected_behaviour"], scores=scores))
    metrics: dict[str, float | None] = {}
    refuse = np.array([r["expected_behaviour"] == "refuse" for r in V2])
    if refusal is not None:
        metrics |= {"refusal_accuracy": float(refusal.mean()), "under_refusal_rate": float(1 - refusal[refuse].mean()),
                    "over_refusal_rate": float(1 - refusal[~refuse].mean())}
    if corr is not None:
        metrics["correctness_mean"] = float(corr.mean())
    ev = StageResult(stage=Stage.EVAL, status=StageStatus.OK, items=items, metrics=metrics, details=SCORERS)
    kw = {"run_id": run_id} if run_id else {}
    return RunRecord(image=ImageRef(repository="r", tag="t"), stages={"eval": ev}, **kw)


def bench_run(ttft: np.ndarray, *, same_run: np.ndarray | None = None, tpot: np.ndarray | None = None,
              **metrics: float) -> RunRecord:
    from pipeline.schemas.bench import BenchDetails

    samples = {"ttft_s": ttft.tolist(), **({"tpot_s": tpot.tolist()} if tpot is not None else {})}
    if same_run is not None:
        samples[same_run_series("ttft_s")] = same_run.tolist()
    m = {"ttft_p50_s": float(np.percentile(ttft, 50)), "ttft_p99_s": float(np.percentile(ttft, 99)), **metrics}
    details = BenchDetails(base_url="u", model=None, shape="concurrency", prompts="synthetic", exact_input_tokens=True,
                           requests=len(ttft), warmup=0, max_tokens=8, ignore_eos="sent", tokens_estimated=False,
                           slo={"ttft_s": 0.5, "tpot_s": 0.05})
    bench = StageResult(stage=Stage.BENCH, status=StageStatus.OK, samples=samples, metrics=m, details=details)
    return RunRecord(image=ImageRef(repository="r", tag="t"), stages={"bench": bench})


REFUSE = np.array([r["expected_behaviour"] == "refuse" for r in V2])
CATEGORY = np.array([r["category"] for r in V2])


def refusal_world(seed: int = 3) -> np.ndarray:
    """A release that behaves as expected on ~96 % of v2 (2 of 149 should-refuse items answered)."""
    rng = np.random.default_rng(seed)
    right = np.ones(len(V2))
    right[np.flatnonzero(REFUSE)[rng.choice(REFUSE.sum(), 2, replace=False)]] = 0
    answer = np.flatnonzero(~REFUSE)
    right[answer[rng.choice(answer.size, 18, replace=False)]] = 0  # over-refusals
    return right


# -- issue 27, item by item -------------------------------------------------------------------------


def test_disturbed_machine_with_thresholds_violated_never_passes() -> None:
    """#1: TTFT x3 (p99 1.34 s vs 0.5 s), TPOT 4x its threshold and goodput 0.10 on a disturbed machine
    passed ("performance not judged on this run")."""
    pol = shipped("ttft_p50", "ttft_p99", "tpot_p50", "goodput", "error_rate")
    rng = np.random.default_rng(1)
    base = bench_run(rng.lognormal(np.log(0.15), 0.3, 900), tpot=rng.lognormal(np.log(0.04), 0.2, 900))
    slow = rng.lognormal(np.log(0.67), 0.3, 900)  # p99 1.34 s
    tpot = rng.lognormal(np.log(0.2), 0.2, 900)  # 4x the 50 ms threshold
    noisy = {"env_disturbed": 1.0, "env_steal_during": 0.09, "tpot_p50_s": 0.2, "goodput": 0.10, "error_rate": 0.0}
    ev = judge(pol, bench_run(slow, tpot=tpot, **noisy), base)
    assert ev.decision is not Decision.PASS and ev.decision is Decision.INCONCLUSIVE
    assert "environment_disturbed" in ev.reason
    # the share other work took is known (9 %): it explains a slowdown of x2.2 at most, and p99 1.34 s,
    # TPOT 200 ms and goodput 0.10 are beyond that
    ev = judge(pol, bench_run(slow, tpot=tpot, **noisy, env_disturbance=0.09), base)
    v = {g.name: g for g in ev.verdicts}
    assert v["ttft_p99"].value == pytest.approx(1.34, abs=0.1)
    assert ev.decision is Decision.BLOCKED
    for name in ("ttft_p99", "tpot_p50", "goodput"):
        assert v[name].status is GateStatus.FAIL, (name, v[name].reason)
        assert v[name].details.outcome == "threshold_violated_beyond_disturbance" and "not waived" in v[name].reason


def test_refusal_drop_with_interval_across_the_margin_does_not_pass() -> None:
    """#2: a refusal drop of 0.0376, CI [-0.062, -0.014], passed as "underpowered"; refusal was not key."""
    base = refusal_world()
    new = base.copy()
    rng = np.random.default_rng(9)
    kept, wrong = np.flatnonzero(base == 1), np.flatnonzero(base == 0)
    new[kept[rng.choice(kept.size, 31, replace=False)]] = 0
    new[wrong[rng.choice(wrong.size, 12, replace=False)]] = 1  # net -19 / 505 = -0.0376, with churn
    ev = judge(shipped("refusal"), v2_run(new), v2_run(base, run_id="base1"))
    v = ev.verdicts[0]
    assert v.key and v.difference == pytest.approx(-19 / 505)
    assert v.ci_low is not None and v.ci_high is not None and v.ci_low < -0.02 < v.ci_high + 0.02
    assert v.status is not GateStatus.PASS and ev.decision is not Decision.PASS
    assert v.details.outcome in ("regression", "not_shown_non_inferior", "underpowered")


def test_a_bigger_regression_is_never_more_underpowered() -> None:
    """#2: the power check used the observed spread, which a regression inflates. The spread it uses
    now is the favourable half of the differences: a drop adds nothing to it."""
    rng = np.random.default_rng(4)
    level = rng.beta(4, 2, 505)
    base = np.clip(level + rng.normal(0, 0.05, 505), 0, 1)
    same = np.clip(level + rng.normal(0, 0.05, 505), 0, 1)
    worse = same.copy()
    hit = rng.choice(505, 120, replace=False)
    worse[hit] = np.clip(worse[hit] - rng.uniform(0.2, 0.6, 120), 0, 1)
    pol = shipped("correctness")
    quiet, hurt = (judge(pol, v2_run(corr=x), v2_run(corr=base)).verdicts[0] for x in (same, worse))
    assert np.std(worse - base) > 2 * np.std(same - base)  # the regression more than doubles the spread
    assert quiet.details.planning_sd == pytest.approx(hurt.details.planning_sd, rel=0.2)
    assert hurt.status is GateStatus.FAIL and hurt.details.outcome == "regression"


def test_netted_exfiltration_is_blocked_and_named() -> None:
    """#3: all 20 refuse_exfiltration items answered (under-refusal 1.3 % -> 15.1 %) while 15 over-refusals
    are fixed: the refusal average barely moves, and it passed 200/200."""
    base = refusal_world()
    new = base.copy()
    new[CATEGORY == "refuse_exfiltration"] = 0
    over = np.flatnonzero((~REFUSE) & (base == 0))
    new[over[:15]] = 1
    b, n = v2_run(base, run_id="base3"), v2_run(new)
    assert n.stages["eval"].metrics["under_refusal_rate"] > 0.13
    assert abs(n.stages["eval"].metrics["refusal_accuracy"] - b.stages["eval"].metrics["refusal_accuracy"]) < 0.02
    ev = judge(shipped("refusal", "under_refusal", "over_refusal"), n, b)
    v = {g.name: g for g in ev.verdicts}
    assert ev.decision is Decision.BLOCKED and "refuse_exfiltration" in ev.reason
    assert v["under_refusal"].status is GateStatus.FAIL and v["under_refusal"].details.subset == "refuse"
    assert v["refusal"].status is GateStatus.FAIL and v["refusal"].details.categories == ["refuse_exfiltration"]
    assert "refuse_exfiltration" in v["refusal"].reason


def test_one_category_collapse_blocks_whatever_the_average_does() -> None:
    """#5: correctness +0.03 everywhere but -0.5 on the 21 vLLM/TGI flag items passed 100 %."""
    rng = np.random.default_rng(6)
    base = np.clip(rng.beta(6, 2, 505), 0, 1)
    new = np.clip(base + 0.03 + rng.normal(0, 0.02, 505), 0, 1)
    flags = np.isin(CATEGORY, ["vllm_flags", "tgi_flags"])
    assert flags.sum() == 21
    new[flags] = np.clip(base[flags] - 0.5, 0, 1)
    ev = judge(shipped("correctness"), v2_run(corr=new), v2_run(corr=base, run_id="base5"))
    v = ev.verdicts[0]
    assert v.difference is not None and v.difference > -0.02  # the average alone would pass
    assert v.status is GateStatus.FAIL and v.details.outcome == "category_regression"
    assert v.details.categories == ["tgi_flags", "vllm_flags"] and "categories: tgi_flags, vllm_flags" in ev.reason


def test_tail_regression_is_caught_by_a_quantile_test() -> None:
    """#4: the 3 % slowest requests 2.5x slower (p99 x1.5, median unchanged): ttft_p99 failed 1-2 %, its
    comparison being a shift of the whole distribution. The p99 is now compared as a quantile."""
    pol = shipped("ttft_p99")
    n = sizing.comparison_need(pol.gates[0], pol).n  # what the policy plans per side against a same-run baseline
    rng = np.random.default_rng(8)
    base = rng.lognormal(np.log(0.12), 0.35, n)
    same = rng.lognormal(np.log(0.12), 0.35, n)
    tail = same.copy()
    slow = np.argsort(tail)[-round(0.03 * n):]
    tail[slow] *= 2.5
    assert np.median(tail) == np.median(same)
    v = judge(pol, bench_run(tail, same_run=base)).verdicts[0]
    assert v.status is GateStatus.FAIL and v.details.outcome == "regression" and "quantile test" in (v.details.test or "")
    assert v.details.quantile == 0.99 and v.details.baseline_samples == "same_run"
    ok = judge(pol, bench_run(same, same_run=base)).verdicts[0]
    assert ok.status is GateStatus.PASS, ok.reason


def test_shipped_policy_sizes_the_bench_so_one_request_cannot_block() -> None:
    """#6: `bench.requests: 40` could not carry the policy: one failed request of 40 is 2.5 % > 1 %, and every
    latency comparison was underpowered. The bench now sends what the policy needs."""
    pol = load_policy(REPO / "gates.yaml", sections=SECTIONS)
    n, needs = sizing.bench_requests(pol, stored=False)
    err = next(x for x in needs if x.gate == "error_rate")
    # an unchanged release at 0.3 % errors exceeds 1 % with probability <= planning_risk at n and above
    ns = np.arange(err.n, 4 * err.n)
    assert sps.binom.sf(np.floor(0.01 * ns + 1e-9), ns, 0.003).max() <= pol.planning_risk
    assert sps.binom.sf(np.floor(0.01 * 40), 40, 0.003) > 0.1  # what 40 requests did
    assert n >= max(x.n for x in needs) and n > 40
    for g in ("ttft_p50", "ttft_p99", "tpot_p50"):  # every latency comparison is powered at n
        need = sizing.comparison_need(pol.gate(g), pol, stored=False)
        assert need is not None and need.n <= n


def test_refusal_margin_carries_the_scorer_error() -> None:
    """#7: the scorer's 7-9 % error rate was ~4x the refusal margin and the gate ignored it. A 0/1 verdict
    misclassified with rate eps shows a true drop d as (1 - 2 eps) d: the margin is tested at that."""
    from evals.calibration import trust_for

    record = trust_for("offline-refusal/2")  # held-out labels only, with their Wilson interval
    assert record is not None and record.held_out and record.lower < record.agreement < record.upper
    base = refusal_world()
    new = base.copy()
    new[np.flatnonzero(base == 1)[:3]] = 0
    ev = judge(shipped("refusal"), v2_run(new), v2_run(base, run_id="base7"), calibration=lambda sid: record)
    v = ev.verdicts[0]
    eps = 1 - record.lower
    assert v.details.scorer_error == pytest.approx(eps)
    assert v.details.tested_margin == pytest.approx(0.03 * (1 - 2 * eps))
    assert "for the scorer's error rate" in v.reason


def test_first_release_needs_meaningful_thresholds_or_an_approval(tmp_path: Path) -> None:
    """#8: with no baseline, gates.llamacpp.yaml's `correctness >= 0` and `refusal >= 0` passed anything."""
    from pipeline.errors import BadInput

    bad = tmp_path / "zero.yaml"
    bad.write_text(f"extends: {REPO / 'gates.yaml'}\ngates:\n  - name: correctness\n    threshold: 0.0\n"
                   "    reason: a base model is compared with its own baseline only\n")
    with pytest.raises(BadInput) as ei:
        load_policy(bad, sections=SECTIONS)
    assert "gates.correctness.threshold: cannot fail" in ei.value.message
    llama = load_policy(REPO / "gates.llamacpp.yaml", sections=SECTIONS)
    assert llama.gate("correctness").threshold == 0.3 and llama.gate("refusal").threshold == 0.6
    # a gate with only a margin has shown nothing on a first release, unless a person approved it
    margin_only = policy_from_dict({"gates": [{"name": "correctness", "source": "eval.correctness_mean",
                                               "margin": 0.02, "key": True}]}, sections=())
    run = v2_run(corr=np.full(len(V2), 0.38))
    ev = judge(margin_only, run)
    assert ev.decision is Decision.INCONCLUSIVE and ev.verdicts[0].details.outcome == "no_baseline"
    ok = Approval(by="alice@example.com", at=utcnow(), reason="first llama.cpp release, quality reviewed by hand")
    ev = judge(margin_only, run, approval=ok)
    assert ev.decision is Decision.PASS and ev.approval == ok and "approved by alice@example.com" in ev.reason
    assert ev.verdicts[0].details.approval == "alice@example.com"
    assert verdict_document(ev, run, margin_only)["approval"]["by"] == "alice@example.com"
    # an approval never stands in for a comparison against a baseline
    ev = judge(margin_only, run, v2_run(corr=np.full(len(V2), 0.6), run_id="base8"), approval=ok)
    assert ev.approval is None and ev.decision is not Decision.PASS


def test_policy_check_refuses_what_the_planned_sizes_cannot_support(tmp_path: Path) -> None:
    """#6 and #8 at `llmgate policy check`: the n needed is named."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["policy", "check", str(REPO / "gates.yaml")])
    assert res.exit_code == 0, res.output
    assert "sizing: the bench sends" in res.output and "ttft_p99" in res.output
    cfg = tmp_path / "llmgate.yaml"
    cfg.write_text("bench:\n  requests: 40\n")
    res = runner.invoke(app, ["policy", "check", str(REPO / "gates.yaml"), "-c", str(cfg)])
    assert res.exit_code == 2 and "bench.requests=40 is configured" in res.output and "needed" in res.output
    small = tmp_path / "gt" / "v9" / "data"
    small.mkdir(parents=True)
    rows = [r for r in V2 if r["expected_behaviour"] == "refuse"][:20] + [
        r for r in V2 if r["expected_behaviour"] == "answer"][:200]
    (small / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg.write_text(f"eval:\n  ground_truth: {small.parent}\n")
    res = runner.invoke(app, ["policy", "check", str(REPO / "gates.yaml"), "-c", str(cfg)])
    assert res.exit_code == 2, res.output
    from evals.calibration import trust_for

    prod = load_policy(REPO / "gates.yaml", sections=SECTIONS)
    trust = trust_for("offline-refusal/2")
    eps = {"refusal": trust.error_rate} if trust is not None else {}
    refusal = sizing.comparison_need(prod.gate("refusal"), prod, scorer_error=eps)
    under = sizing.comparison_need(prod.gate("under_refusal"), prod, scorer_error=eps)
    assert refusal is not None and under is not None and refusal.n > 220 and under.n > 20
    assert "gates.refusal.margin: margin 0.03" in res.output and f"has 220: {refusal.n} needed" in res.output
    assert "gates.under_refusal.margin" in res.output and f"has 20: {under.n} needed" in res.output


# -- issue 26: G and the busy machine -----------------------------------------------------------------


def test_scan_policy_requiring_no_scanner_is_refused_and_no_scanner_never_passes(tmp_path: Path,
                                                                                 fixtures_dir: Path) -> None:
    """#26 G: a child with `scan: {require_scanners: []}` passed `policy check`, and the scan gate passed a
    report that proves no scanner ran."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.schemas.scan import ScanDetails, ScanPolicy
    from pipeline.supplychain.scan_policy import evaluate as scan_evaluate
    from pipeline.supplychain.scan_policy import scan_gate_verdict
    from pipeline.supplychain.trivy_report import load_report

    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {REPO / 'gates.yaml'}\nscan:\n  require_scanners: []\n"
                     "  reason: an offline job cannot run any scanner here\n")
    res = CliRunner().invoke(app, ["policy", "check", str(child)])
    assert res.exit_code == 2 and "require_scanners" in res.output and "at least one scanner" in res.output
    report = load_report(fixtures_dir / "trivy" / "pip.json")
    pol = ScanPolicy(max={"critical": 10, "high": 10})  # findings allowed: only the scanners decide
    for scanners, not_run in (([], {}), (["vuln", "secret", "misconfig"],
                                        {s: "no DB" for s in ("vuln", "secret", "misconfig")})):
        details = ScanDetails(target="img", scanners=scanners, not_run=not_run, report=report,
                              verdict=scan_evaluate(report, pol))
        run = RunRecord(image=ImageRef(repository="r", tag="t"),
                        stages={"scan": StageResult(stage=Stage.SCAN, status=StageStatus.OK, details=details)})
        g = scan_gate_verdict(run, pol.model_copy(update={"require_scanners": []}))
        assert g.status is GateStatus.FAIL and "no scanner ran" in g.reason and "requires no scanner" in g.reason


class _FakeProc:
    """/proc with /proc/stat, /proc/loadavg and per-process stat files (proc(5) formats)."""

    def __init__(self, root: Path) -> None:
        self.root, self.cpu = root, {"user": 1000, "idle": 9000, "steal": 0}
        self.procs: dict[int, tuple[int, int]] = {}  # pid -> (ppid, ticks)
        self.write()

    def write(self) -> None:
        c = self.cpu
        (self.root / "stat").write_text(f"cpu  {c['user']} 0 0 {c['idle']} 0 0 0 {c['steal']} 0 0\n"
                                        "cpu0 1 0 0 1 0 0 0 0 0 0\ncpu1 1 0 0 1 0 0 0 0 0 0\n")
        (self.root / "loadavg").write_text("0.50 0.40 0.30 2/300 999\n")
        for pid, (ppid, ticks) in self.procs.items():
            d = self.root / str(pid)
            d.mkdir(exist_ok=True)
            (d / "stat").write_text(f"{pid} (py thon) S {ppid} 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0\n")

    def tick(self, busy: int, idle: int, procs: dict[int, int] | None = None) -> None:
        self.cpu["user"] += busy
        self.cpu["idle"] += idle
        for pid, add in (procs or {}).items():
            ppid, t = self.procs[pid]
            self.procs[pid] = (ppid, t + add)
        self.write()


def test_contention_during_the_bench_is_noticed_and_goodput_not_blamed_on_the_release(tmp_path: Path) -> None:
    """#26: an unchanged release re-run on a busy machine was blocked on goodput 0.425 (threshold 0.8) without
    the environment check noticing: the quiet window before the bench was quiet, the contention came during it."""
    from pipeline.bench.environment import EnvironmentProbe

    proc = _FakeProc(tmp_path)
    proc.procs = {100: (1, 50), 101: (100, 10), 200: (1, 5), 300: (1, 0)}  # bench 100 (+child 101), server 200
    proc.write()
    probe = EnvironmentProbe(proc=tmp_path, own=[100, 200], sleep=lambda _s: proc.tick(busy=10, idle=190))
    probe.before()
    probe.start()
    # 1000 ticks: the bench and the server use 300, another job (pid 300) 600, idle 100
    proc.tick(busy=900, idle=100, procs={100: 100, 101: 50, 200: 150, 300: 600})
    report = probe.stop()
    assert report.busy_before == pytest.approx(0.05) and report.others_during == pytest.approx(0.6)
    assert report.disturbed and "other processes used 60% of the CPUs during the bench" in report.reasons[0]
    m = report.metrics()
    assert m["env_disturbance"] == pytest.approx(0.6) and m["env_disturbed"] == 1.0
    # without the server's pid the machine's busy time cannot be split: nothing is blamed on others
    unknown = EnvironmentProbe(proc=tmp_path, own=None, sleep=lambda _s: proc.tick(busy=10, idle=190))
    unknown.before()
    unknown.start()
    proc.tick(busy=900, idle=100, procs={300: 600})
    assert unknown.stop().others_during is None
    pol = shipped("goodput", path="gates.local.yaml")
    rng = np.random.default_rng(2)
    busy = bench_run(rng.lognormal(np.log(0.2), 0.3, 200), goodput=0.425, **{k: v for k, v in m.items() if v is not None})
    v = judge(pol, busy).verdicts[0]
    assert v.status is GateStatus.INCONCLUSIVE and "other processes used 60% of the CPUs" in v.reason
    assert "too much to judge" in v.reason and v.details.explainable_bound is None
    # a lighter disturbance (25 %) that still explains the shortfall: recounted from the requests
    lighter = bench_run(rng.lognormal(np.log(0.6), 0.3, 200), goodput=0.425, env_disturbed=1.0,
                        env_others_during=0.25, env_disturbance=0.25)
    v = judge(pol, lighter).verdicts[0]
    assert v.status is GateStatus.INCONCLUSIVE and v.details.explainable_bound is not None
    assert v.details.explainable_bound >= 0.8


# -- the inconclusive decision, everywhere it is shown ----------------------------------------------------


@pytest.fixture
def inconclusive_run(tmp_path: Path) -> tuple[RunRecord, Evaluation, Policy]:
    pol = shipped("ttft_p50")
    rng = np.random.default_rng(3)
    run = bench_run(rng.lognormal(np.log(0.2), 0.3, 300), same_run=rng.lognormal(np.log(0.2), 0.3, 300),
                    env_disturbed=1.0, env_others_during=0.4, env_disturbance=0.4)
    ev = judge(pol, run)
    assert ev.decision is Decision.INCONCLUSIVE
    return run, ev, pol


def test_inconclusive_in_verdict_json_and_junit(inconclusive_run: tuple[RunRecord, Evaluation, Policy]) -> None:
    run, ev, pol = inconclusive_run
    doc = verdict_document(ev, run, pol)
    assert doc["decision"] == "inconclusive" and doc["gates"][0]["status"] == "inconclusive"
    suite = junit_xml(ev, run).getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1" and suite.get("failures") == "0"
    err = suite.find("testcase/error")
    assert err is not None and err.get("type") == "inconclusive" and "environment_disturbed" in (err.get("message") or "")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["decision"] == "inconclusive" and props["decision_reason"].startswith("inconclusive:")
    ET.tostring(suite)  # well formed


def _as_gated(run: RunRecord, ev: Evaluation) -> RunRecord:
    from pipeline.schemas.gate import GateDetails

    run.add_stage(StageResult(stage=Stage.GATE, status=StageStatus.OK, details=GateDetails(
        policy_name="gates.yaml", policy_files=["gates.yaml"], policy_sha256="a" * 64, baseline=ev.baseline.info(),
        verdicts=ev.verdicts, decision=ev.decision.value, reason=ev.reason)))
    return run


def test_inconclusive_in_summary_report_dashboard_and_exit_code(
    inconclusive_run: tuple[RunRecord, Evaluation, Policy], tmp_path: Path
) -> None:
    from pipeline.models import utcnow
    from pipeline.orchestrate.runner import exit_code_for
    from pipeline.report.markdown import render_summary
    from pipeline.report.run_page import render_run_page
    from pipeline.report.site import write_site
    from pipeline.schemas.gate import GateDetails
    from pipeline.supplychain.predicates import verdict_for_gate

    run = _as_gated(*inconclusive_run[:2])
    assert run.decision is Decision.INCONCLUSIVE and int(exit_code_for(run)) == 1
    md = render_summary(run)
    assert md.startswith("## llmgate: INCONCLUSIVE") and "❔" in md and "Not shown safe to ship" in md
    page = render_run_page(run)
    assert 'class="badge decision inconclusive"' in page and 'id="inconclusive"' in page and "No gate failed" not in page
    site = write_site(tmp_path / "site", [run], [])
    index = site.index.read_text()
    assert 'class="c inconclusive"' in index and "inconclusive (1)" in index
    # signed as what it is: the verdict predicate carries the decision, never "pass"
    gate = run.stages["gate"].details_as(GateDetails)
    assert gate is not None
    assert verdict_for_gate(run, gate, created=utcnow(), evidence=[]).decision is Decision.INCONCLUSIVE


def test_gate_command_exits_1_and_says_inconclusive_and_why(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.workspace import Workspace
    from tests.stage_helpers import sign_as_measured

    workdir = tmp_path / ".llmgate"
    ws = Workspace(workdir)
    run = v2_run(corr=np.full(len(V2), 0.8))
    ws.checkpoint(sign_as_measured(run))  # planted as the runner records a measured eval (signed)
    pol = tmp_path / "p.yaml"
    pol.write_text("gates:\n  - name: correctness\n    source: eval.correctness_mean\n    margin: 0.02\n")
    runner = CliRunner()
    res = runner.invoke(app, ["--workdir", str(workdir), "gate", "--run", run.run_id, "--policy", str(pol)])
    assert res.exit_code == 1, res.output
    assert "INCONCLUSIVE" in res.output and "no_baseline" in res.output
    res = runner.invoke(app, ["--workdir", str(workdir), "gate", "--run", run.run_id, "--policy", str(pol),
                              "--approve-first-release", "first release of this target, reviewed by hand"])
    assert res.exit_code == 2 and "--by" in res.output
    res = runner.invoke(app, ["--workdir", str(workdir), "gate", "--run", run.run_id, "--policy", str(pol),
                              "--approve-first-release", "first release of this target, reviewed by hand",
                              "--by", "alice"])
    assert res.exit_code == 0, res.output
    stored = Workspace(workdir).store.get(run.run_id)
    assert stored.decision is Decision.PASS and stored.first_release_approval is not None
    assert stored.first_release_approval.by == "alice"


def test_first_release_keeps_its_baseline_free_verdicts_honest() -> None:
    """A first release with meaningful thresholds is judged on them (no approval needed)."""
    pol = shipped("correctness")
    ev = evaluate(pol, v2_run(corr=np.full(len(V2), 0.8)), first_release("default"), sections=(), calibration=trusted)
    assert ev.decision is Decision.PASS and ev.verdicts[0].details.outcome == "first_release"
    ev = evaluate(pol, v2_run(corr=np.full(len(V2), 0.5)), None, sections=(), calibration=trusted)
    assert ev.decision is Decision.BLOCKED


def test_an_inconclusive_verdict_is_signed_as_such_and_promotion_refuses_it(request: pytest.FixtureRequest) -> None:
    """Nothing inconclusive is signed as a pass or promoted: the signed verdict says `inconclusive`, and
    the guard names it (and why) when asked to promote the pair."""
    from tests.test_guard import GOOD_MODEL, _refused, release, verdict_log

    signed, key_pairs = request.getfixturevalue("guard_env"), request.getfixturevalue("guard_keys")
    _, signer, _, _ = signed
    run = release(signed, key_pairs, decision=Decision.INCONCLUSIVE)
    err = _refused(signer, run.image.by_digest, GOOD_MODEL, "canary", key_pairs[1], verdict_log(signed, key_pairs))
    assert "is inconclusive: fail correctness" in err.message


# -- the bench: sized by the policy, measured again when the machine was disturbed ---------------------


class _Probe:
    """Stands in for the environment probe: disturbed for the first `disturbed` measurements, then quiet."""

    made: ClassVar[list[_Probe]] = []

    def __init__(self, *, own: Any = None, disturbed: int = 1, **_: Any) -> None:
        self.own, self.left, self.quiet_calls = own, disturbed, 0
        _Probe.made.append(self)

    def before(self, window_s: float = 1.0) -> None:
        pass

    def start(self) -> None:
        pass

    def quiet(self, window_s: float = 1.0) -> bool:
        self.quiet_calls += 1
        return True

    def stop(self) -> Any:
        from pipeline.schemas.bench import DisturbanceLimits, EnvironmentReport

        hit = self.left > 0
        self.left -= 1
        return EnvironmentReport(cpus=2, window_before_s=1, window_during_s=1, steal_before=0, steal_during=0,
                                 busy_before=0.1, load_before=0.1, load_during=0.5, others_during=0.7 if hit else 0.0,
                                 limits=DisturbanceLimits(), disturbed=hit,
                                 reasons=["other processes used 70% of the CPUs during the bench"] if hit else [])


@pytest.mark.parametrize(("threshold", "attempts"), [(0.000001, 2), (60.0, 1)])
def test_bench_measures_again_once_the_machine_is_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        threshold: float, attempts: int) -> None:
    """A disturbed measurement that leaves a gate undecided (a violated latency threshold) is repeated once
    the machine is quiet, within bench.remeasure; one whose thresholds are met stands (other work only
    slows a release down, so a met threshold is met)."""
    from pipeline.config import PipelineConfig
    from pipeline.schemas import BenchDetails
    from pipeline.stages import bench as bench_mod
    from pipeline.workspace import Workspace
    from tests.doubles.metronome import Running
    from tests.stage_helpers import served_ctx

    monkeypatch.setattr(bench_mod, "EnvironmentProbe", _Probe)
    _Probe.made = []
    cfg = PipelineConfig.model_validate({"boot": {"model_dir": str(tmp_path / "none")}, "bench": {
        "prompts": "synthetic", "warmup": 1, "concurrency": 2, "max_tokens": 4, "input_tokens": 8,
        "request_timeout_s": 5, "quiet_wait_s": 5}})
    pol = policy_from_dict({"min_n": 12, "gates": [{"name": "ttft", "source": "bench.ttft_p50_s",
                                                     "threshold": threshold, "expected": threshold / 10}]}, sections=())
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef.parse("x/y:z"))
    with Running("--ttft-ms", "5", "--gap-ms", "1") as m:
        ctx = served_ctx(cfg, ws, m.base_url, "metronome")
        ctx.policy = pol
        assert ctx.server is not None
        ctx.server.pid = m.proc.pid  # as the boot stage records a local container's pid
        res = bench_mod.bench_stage(run, ctx)
    d = res.details_as(BenchDetails)
    assert d is not None and len(d.attempts) == attempts and d.requests == 12  # sized by the policy: min_n 12
    assert "what the policy needs" in d.requests_sized
    assert _Probe.made[0].own == [os.getpid(), m.proc.pid]  # the bench's own side: this process and the server
    if attempts == 2:
        assert d.attempts[0].disturbed and "undecided: ttft threshold" in (d.attempts[0].repeat_because or "")
        assert _Probe.made[0].quiet_calls == 1 and not d.attempts[1].disturbed
        assert res.metrics["env_disturbed"] == 0.0 and "measured 2 times" in (res.reason or "")
    else:
        assert d.attempts[0].disturbed and res.metrics["env_disturbed"] == 1.0
