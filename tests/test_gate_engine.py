"""Gate engine on synthetic RunRecords: decisions, not_run handling, baselines, outputs, reproducibility."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import PipelineConfig
from pipeline.gates.baseline import BaselineKind, find_baseline
from pipeline.gates.engine import evaluate
from pipeline.gates.policy import Policy, policy_from_dict
from pipeline.gates.sections import SectionPlugin, register_section, unregister_section
from pipeline.models import (
    Decision,
    GateStatus,
    GateVerdict,
    GroundTruthRef,
    ImageRef,
    ItemResult,
    PromotionRecord,
    RunRecord,
    StageResult,
    StageStatus,
)
from pipeline.stages.gate import gate_stage
from pipeline.workspace import Workspace

GT = GroundTruthRef(version="v1", sha256="a" * 64, n_items=200)
TRUSTED = {"scorers": {"refusal": "offline-refusal/1", "correctness": "minilm-cosine/1"}}


def calibrated(_sid: str) -> float:
    return 0.95


def make_run(
    corr: np.ndarray | None = None,
    refusal: np.ndarray | None = None,
    ttft: np.ndarray | None = None,
    *,
    run_id: str | None = None,
    gt: GroundTruthRef | None = GT,
    extra_stages: dict[str, StageResult] | None = None,
    details: dict[str, Any] | None = None,
) -> RunRecord:
    stages: dict[str, StageResult] = {}
    if corr is not None:
        items = [
            ItemResult(
                item_id=f"q{i}",
                question="?",
                scores={"correctness": float(c), **({"refusal": float(refusal[i])} if refusal is not None else {})},
            )
            for i, c in enumerate(corr)
        ]
        metrics = {"correctness_mean": float(np.mean(corr))}
        if refusal is not None:
            metrics["refusal_accuracy"] = float(np.mean(refusal))
        stages["eval"] = StageResult(
            stage="eval",
            status=StageStatus.OK,
            metrics=metrics,
            items=items,
            details=details if details is not None else TRUSTED,
        )
    if ttft is not None:
        stages["bench"] = StageResult(
            stage="bench",
            status=StageStatus.OK,
            metrics={"ttft_p99_s": float(np.percentile(ttft, 99)), "error_rate": 0.0},
            samples={"ttft_s": [float(x) for x in ttft]},
        )
    stages.update(extra_stages or {})
    kw = {"run_id": run_id} if run_id else {}
    return RunRecord(image=ImageRef(repository="r", tag="t"), ground_truth=gt, stages=stages, **kw)


def policy(*gates: dict[str, Any], **top: Any) -> Policy:
    return policy_from_dict({"gates": list(gates), **top}, where="test-policy.yaml")


CORR = {"name": "correctness", "source": "eval.correctness_mean", "threshold": 0.5, "margin": 0.01, "key": True}
REFUSAL = {"name": "refusal", "source": "eval.refusal_accuracy", "threshold": 0.5, "margin": 0.02}
TTFT = {"name": "ttft_p99", "source": "bench.ttft_p99_s", "threshold": 5.0, "margin": 0.10}


@pytest.fixture(scope="module")
def world() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    level = rng.beta(4, 2, 200)
    return {
        "level": level,
        "base": np.clip(level + rng.normal(0, 0.05, 200), 0, 1),
        "same": np.clip(level + rng.normal(0, 0.05, 200), 0, 1),
        "worse": np.clip(level - 0.08 + rng.normal(0, 0.05, 200), 0, 1),
        "ttft_base": rng.lognormal(np.log(0.2), 0.3, 200),
        "ttft_same": rng.lognormal(np.log(0.2), 0.3, 200),
        "refusal_base": (rng.random(200) < 0.95).astype(float),
    }


def by_name(verdicts: list[GateVerdict]) -> dict[str, GateVerdict]:
    return {v.name: v for v in verdicts}


def test_first_release_uses_absolute_thresholds_only(world: dict[str, np.ndarray]) -> None:
    run = make_run(world["base"], ttft=world["ttft_base"])
    ev = evaluate(policy(CORR, TTFT), run, None, calibration=calibrated)
    assert ev.decision is Decision.PASS
    for v in ev.verdicts:
        assert v.status is GateStatus.PASS and "first release" in v.reason and v.p_value is None
    assert ev.baseline.kind is BaselineKind.NONE and "absolute thresholds only" in ev.reason


def test_missing_and_skipped_stage_are_never_a_pass(world: dict[str, np.ndarray]) -> None:
    skipped = StageResult(stage="scan", status=StageStatus.SKIPPED, reason="not run: trivy not found")
    run = make_run(world["base"], extra_stages={"scan": skipped})
    pol = policy(
        CORR,
        {"name": "crit", "source": "scan.critical", "threshold": 0},
        {"name": "sig", "source": "sign.verified", "threshold": 1},
    )
    ev = evaluate(pol, run, calibration=calibrated)
    v = by_name(ev.verdicts)
    assert v["crit"].status is GateStatus.NOT_RUN and "trivy not found" in v["crit"].reason
    assert v["sig"].status is GateStatus.NOT_RUN and "no result" in v["sig"].reason
    assert ev.decision is Decision.BLOCKED and "crit not_run" in ev.reason and "sig not_run" in ev.reason
    relaxed = policy(
        CORR,
        {"name": "sig", "source": "sign.verified", "threshold": 1, "required": False, "reason": "no cosign offline"},
    )
    ev = evaluate(relaxed, run, calibration=calibrated)
    assert ev.decision is Decision.PASS
    assert by_name(ev.verdicts)["sig"].status is GateStatus.NOT_RUN
    assert any("no cosign offline" in w for w in ev.warnings)


def test_failed_stage_fails_and_missing_metric_is_not_run(world: dict[str, np.ndarray]) -> None:
    died = StageResult(
        stage="bench", status=StageStatus.FAILED, reason="server died mid-run", metrics={"ttft_p99_s": 0.1}
    )
    run = make_run(world["base"], extra_stages={"bench": died})
    pol = policy(CORR, TTFT, {"name": "goodput", "source": "bench.goodput", "threshold": 0.9})
    v = by_name(evaluate(pol, run, calibration=calibrated).verdicts)
    assert v["ttft_p99"].status is GateStatus.FAIL and "server died" in v["ttft_p99"].reason
    ok_bench = StageResult(stage="bench", status=StageStatus.OK, metrics={"ttft_p99_s": 0.1})
    v = by_name(
        evaluate(pol, make_run(world["base"], extra_stages={"bench": ok_bench}), calibration=calibrated).verdicts
    )
    assert v["goodput"].status is GateStatus.NOT_RUN and "not recorded" in v["goodput"].reason
    # A margin gate whose new run lacks the series cannot pass on its threshold alone.
    base = make_run(world["base"], ttft=world["ttft_base"])
    assert v["ttft_p99"].status is GateStatus.PASS  # first release: threshold only
    v = by_name(
        evaluate(pol, make_run(world["base"], extra_stages={"bench": ok_bench}), base, calibration=calibrated).verdicts
    )
    assert v["ttft_p99"].status is GateStatus.NOT_RUN and "samples" in v["ttft_p99"].reason


def test_regression_against_baseline_fails_even_above_threshold(world: dict[str, np.ndarray]) -> None:
    base = make_run(world["base"], ttft=world["ttft_base"], run_id="base0001")
    new = make_run(world["worse"], ttft=world["ttft_same"])
    ev = evaluate(policy(CORR, TTFT), new, base, calibration=calibrated)
    v = by_name(ev.verdicts)["correctness"]
    assert v.value is not None and v.value > 0.5  # the absolute threshold alone would pass
    assert v.status is GateStatus.FAIL and v.key
    assert v.difference == pytest.approx(float(np.mean(world["worse"] - world["base"])))
    assert v.ci_high is not None and v.ci_high < 0 and v.p_value is not None and v.p_value < 0.05
    assert v.mde is not None and v.baseline == pytest.approx(float(np.mean(world["base"])))
    assert v.details["holm_family"] == 2 and v.details["baseline_run_id"] == "base0001"
    assert ev.decision is Decision.BLOCKED and ev.reason.startswith("blocked: key gate correctness fail")


def test_equal_model_is_not_blocked(world: dict[str, np.ndarray]) -> None:
    base = make_run(world["base"], ttft=world["ttft_base"])
    new = make_run(world["same"], ttft=world["ttft_same"])
    ev = evaluate(policy(CORR, TTFT), new, base, calibration=calibrated)
    assert ev.decision is Decision.PASS
    assert all(v.status in (GateStatus.PASS, GateStatus.WARN) for v in ev.verdicts)


def test_latency_shift_detected_with_effect_floor(world: dict[str, np.ndarray]) -> None:
    base = make_run(world["base"], ttft=world["ttft_base"])
    slower = make_run(world["base"], ttft=world["ttft_same"] * 1.25)
    v = by_name(evaluate(policy(TTFT), slower, base, calibration=calibrated).verdicts)["ttft_p99"]
    assert v.status is GateStatus.FAIL and v.difference is not None and 0.15 < v.difference < 0.35
    assert v.details["cliffs_delta"] > 0
    # A statistically clear but tiny shift stays under the effect-size floor (+10 %): no block.
    tiny = make_run(world["base"], ttft=world["ttft_base"] * 1.03)
    v = by_name(evaluate(policy(TTFT), tiny, base, calibration=calibrated).verdicts)["ttft_p99"]
    assert v.status is not GateStatus.FAIL


def test_mcnemar_gate_and_binary_scores(world: dict[str, np.ndarray]) -> None:
    r = world["refusal_base"]
    worse = r.copy()
    worse[np.flatnonzero(r == 1)[:25]] = 0  # 25 items lost, none gained
    base = make_run(world["base"], r)
    v = by_name(evaluate(policy(REFUSAL), make_run(world["base"], worse), base, calibration=calibrated).verdicts)
    assert v["refusal"].status is GateStatus.FAIL
    assert v["refusal"].details["discordant_lost_gained"] == [25, 0]
    assert v["refusal"].p_value == pytest.approx(0.5**25)


def test_uncalibrated_scorer_reports_but_does_not_gate(world: dict[str, np.ndarray]) -> None:
    gate = {**REFUSAL, "threshold": 0.99, "min_agreement": 0.9}
    run = make_run(world["base"], world["refusal_base"])  # accuracy ~0.95 < 0.99
    ev = evaluate(policy(CORR, gate), run, calibration=lambda sid: 0.8 if sid == "offline-refusal/1" else None)
    v = by_name(ev.verdicts)["refusal"]
    assert v.status is GateStatus.WARN and v.reason.startswith("uncalibrated: reported, not trusted")
    assert "80.0%" in v.reason and v.details["would_be"] == "fail"
    assert ev.decision is Decision.PASS
    unknown = make_run(world["base"], world["refusal_base"], details={})
    v = by_name(evaluate(policy(CORR, gate), unknown, calibration=calibrated).verdicts)["refusal"]
    assert v.status is GateStatus.WARN and "names no scorer" in v.reason
    ev = evaluate(policy(CORR, gate), run, calibration=calibrated)
    assert by_name(ev.verdicts)["refusal"].status is GateStatus.FAIL and ev.decision is Decision.BLOCKED


def test_margin_below_mde_warns(world: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(5)
    level = world["level"][:30]
    base = make_run(np.clip(level + rng.normal(0, 0.2, 30), 0, 1))
    new = make_run(np.clip(level + rng.normal(0, 0.2, 30), 0, 1))
    v = by_name(evaluate(policy(CORR), new, base, calibration=calibrated).verdicts)["correctness"]
    assert v.status is GateStatus.WARN and "below the smallest change detectable" in v.reason
    assert v.mde is not None and v.mde > 0.01


def test_section_plugin_extension_point(world: dict[str, np.ndarray]) -> None:
    from pydantic import BaseModel, ConfigDict

    class Canary(BaseModel):
        model_config = ConfigDict(extra="forbid")
        limit: int = 0

    def ev_canary(section: BaseModel, run: RunRecord, ctx: Any) -> list[GateVerdict]:
        return [GateVerdict(name="canary", source="canary:", status=GateStatus.FAIL, reason=f"limit {section.limit}")]

    register_section(
        SectionPlugin("canary", lambda raw, where: Canary.model_validate(raw or {}), ev_canary, owner="test")
    )
    try:
        pol = policy(CORR, canary={"limit": 3})
        ev = evaluate(pol, make_run(world["base"]), calibration=calibrated)
        assert by_name(ev.verdicts)["canary"].reason == "limit 3" and ev.decision is Decision.BLOCKED
        relaxed = policy(CORR, canary={"limit": 3, "required": False, "reason": "demo only"})
        ev = evaluate(relaxed, make_run(world["base"]), calibration=calibrated)
        assert ev.decision is Decision.PASS and "demo only" in by_name(ev.verdicts)["canary"].reason
    finally:
        unregister_section("canary")


def test_baseline_choice_from_store(tmp_path: Path, world: dict[str, np.ndarray]) -> None:
    ws = Workspace(tmp_path / ".llmgate")
    run = make_run(world["same"])
    ws.checkpoint(run)
    assert find_baseline(run, ws.store).kind is BaselineKind.NONE
    old = make_run(world["base"], gt=GroundTruthRef(version="v0", sha256="b" * 64, n_items=100))
    old.promotion = PromotionRecord(target="default", digest="sha256:" + "1" * 64, mode="dry-run", outcome="promoted")
    ws.checkpoint(old)
    b = find_baseline(run, ws.store)
    assert b.kind is BaselineKind.INCOMPARABLE and "v0" in b.reason and "v1" in b.reason
    assert b.run_id == old.run_id and not b.items_comparable
    calls: list[tuple[str, str]] = []

    def rescore(baseline: RunRecord, gt: GroundTruthRef) -> StageResult:
        calls.append((baseline.run_id, gt.version))
        return make_run(world["base"]).stages["eval"]

    b = find_baseline(run, ws.store, rescore=rescore)
    assert b.kind is BaselineKind.RESCORED and calls == [(old.run_id, "v1")] and b.run.ground_truth == GT  # type: ignore[union-attr]
    same = make_run(world["base"])
    same.promotion = old.promotion
    ws.checkpoint(same)
    b = find_baseline(run, ws.store)
    assert b.kind is BaselineKind.SAME and b.run_id == same.run_id


def test_gate_stage_outputs_and_reproducible(tmp_path: Path, world: dict[str, np.ndarray]) -> None:
    ws = Workspace(tmp_path / ".llmgate")
    base = make_run(world["base"], ttft=world["ttft_base"])
    base.promotion = PromotionRecord(target="default", digest="sha256:" + "2" * 64, mode="dry-run", outcome="promoted")
    ws.checkpoint(base)
    run = make_run(world["worse"], ttft=world["ttft_same"])
    pol = policy(
        CORR,
        TTFT,
        {"name": "sig", "source": "sign.verified", "threshold": 1, "required": False, "reason": "offline"},
        {"name": "crit", "source": "scan.critical", "threshold": 0},
    )
    first = gate_stage(run, PipelineConfig(), ws, policy=pol, calibration=calibrated)
    assert run.decision is Decision.BLOCKED and run.baseline_run_id == base.run_id and run.gates == first
    out = ws.run_dir(run.run_id)
    doc = json.loads((out / "verdict.json").read_text())
    assert doc["decision"] == "blocked" and doc["baseline"]["run_id"] == base.run_id
    assert [g["name"] for g in doc["gates"]] == ["correctness", "ttft_p99", "sig", "crit"]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "4" and suite.get("failures") == "2"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["correctness"].find("failure") is not None
    assert cases["crit"].find("failure").get("type") == "not_run"  # type: ignore[union-attr]
    assert cases["sig"].find("skipped") is not None
    assert cases["ttft_p99"].find("failure") is None
    assert {a.name for a in run.stages["gate"].artifacts} == {"verdict.json", "junit.xml"}
    ws.checkpoint(run)
    again = ws.load_run(run.run_id)
    second = gate_stage(again, PipelineConfig(), ws, policy=pol, calibration=calibrated)
    assert [v.model_dump() for v in second] == [v.model_dump() for v in first]


def test_gate_cli_exit_codes(tmp_path: Path, world: dict[str, np.ndarray]) -> None:
    workdir = tmp_path / ".llmgate"
    ws = Workspace(workdir)
    good = make_run(world["base"], ttft=world["ttft_base"])
    ws.checkpoint(good)
    pol = tmp_path / "p.yaml"
    pol.write_text("gates:\n  - name: correctness\n    source: eval.correctness_mean\n    threshold: 0.5\n")
    runner = CliRunner()
    res = runner.invoke(app, ["--workdir", str(workdir), "gate", "--run", good.run_id, "--policy", str(pol)])
    assert res.exit_code == 0, res.output
    pol.write_text("gates:\n  - name: correctness\n    source: eval.correctness_mean\n    threshold: 0.99\n")
    res = runner.invoke(app, ["--workdir", str(workdir), "gate", "--run", good.run_id, "--policy", str(pol)])
    assert res.exit_code == 1, res.output
    assert ws.load_run(good.run_id).decision is Decision.BLOCKED
    pol.write_text("gates:\n  - name: correctness\n    source: eval.correctness\n    threshold: 0.5\n")
    res = runner.invoke(app, ["--workdir", str(workdir), "gate", "--run", good.run_id, "--policy", str(pol)])
    assert res.exit_code == 2 and "gates.correctness.source" in res.output


@settings(max_examples=15, deadline=None)
@given(drop=st.floats(0, 0.3), more=st.floats(0, 0.3), slow=st.floats(1.0, 1.6), slower=st.floats(0, 0.5))
def test_more_regression_never_turns_fail_into_pass(drop: float, more: float, slow: float, slower: float) -> None:
    rng = np.random.default_rng(2)
    level = rng.beta(4, 2, 60)
    base_c = np.clip(level + rng.normal(0, 0.05, 60), 0, 1)
    new_c = np.clip(level + rng.normal(0, 0.05, 60), 0, 1)
    ttft = rng.lognormal(np.log(0.2), 0.3, 60)
    pol = policy({**CORR, "threshold": 0.55}, TTFT, resamples=10_000)
    base = make_run(base_c, ttft=ttft)
    ev1 = evaluate(pol, make_run(np.clip(new_c - drop, 0, 1), ttft=ttft * slow), base, calibration=calibrated)
    ev2 = evaluate(
        pol, make_run(np.clip(new_c - drop - more, 0, 1), ttft=ttft * slow * (1 + slower)), base, calibration=calibrated
    )
    rank = {GateStatus.PASS: 0, GateStatus.WARN: 0, GateStatus.FAIL: 1, GateStatus.NOT_RUN: 1}
    for a, b in zip(ev1.verdicts, ev2.verdicts, strict=True):
        assert rank[b.status] >= rank[a.status], (a.reason, b.reason)
    assert not (ev1.decision is Decision.BLOCKED and ev2.decision is Decision.PASS)
