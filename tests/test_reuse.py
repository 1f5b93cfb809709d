"""An unchanged re-run re-measures only what the policy needs: a stored boot and bench of the same inputs,
measured on this machine within the policy's `reuse.bench_max_age_s` and not on a disturbed machine,
stand for new ones (with boot and eval, no server is started at all), and the record and the CLI say
which run they came from and why. A measurement that is too old, disturbed, from another machine, taken
against another baseline or under another policy, or of an attached server is measured again; `--remeasure` and `--fresh` measure
again; the `bench_reuse` gate fails a reused bench outside the policy; a child policy cannot lengthen the
locked age."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.bench.reuse_policy import ReusePolicy, bench_reuse_verdict
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput
from pipeline.gates.policy import load_policy
from pipeline.models import (
    Decision,
    GateStatus,
    ImageRef,
    PromotionRecord,
    RunRecord,
    Stage,
    StageResult,
    StageStatus,
    utcnow,
)
from pipeline.orchestrate import reuse
from pipeline.orchestrate.plan import get_plan
from pipeline.orchestrate.runner import Runner
from pipeline.stages.context import StageOptions
from pipeline.supplychain.gate_sections import SECTIONS
from pipeline.workspace import Workspace
from tests.stage_helpers import record_measured

REPO = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "cd" * 32
OTHERS = ["build", "leak", "scan", "sign", "manifests", "gate", "attest"]


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, message: str) -> None:
        self.lines.append(message)

    def total(self, n: int, label: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "weights.bin").write_bytes(b"\0" * 1024)
    return d


def _runner(ws: Workspace, **options: object) -> Runner:
    cfg = PipelineConfig()
    cfg.gates_file = str(REPO / "gates.local.yaml")
    cfg.eval.ground_truth = str(REPO / "ground_truth" / "v1")
    return Runner(ws=ws, cfg=cfg, plan=get_plan("local"), reporter=Lines(), parallel=False,
                  options=StageOptions(**options))  # type: ignore[arg-type]


def _measured(runner: Runner, model_dir: Path, *, age_s: float = 60, disturbed: bool | None = False) -> RunRecord:
    """A run whose boot, bench and eval were measured `age_s` ago, stored with their input keys and signed."""
    run = runner.create(image=ImageRef(repository="127.0.0.1:5000/llmgate/reuse-test", digest=DIGEST),
                        model_dir=model_dir)
    when = utcnow() - timedelta(seconds=age_s)
    env = {} if disturbed is None else {"env_disturbed": 1.0 if disturbed else 0.0}
    metrics = {Stage.BOOT: {"load_time_s": 2.0}, Stage.EVAL: {"correctness_mean": 0.9},
               Stage.BENCH: {"ttft_p99_s": 0.1, **env}}
    for stage, m in metrics.items():
        key = runner._reusable(run, stage)[0]
        assert key is not None
        # recorded as the runner records a measured result (signed): only a proven result is reused
        record_measured(run, StageResult(stage=stage, status=StageStatus.OK, metrics=m, input_key=key,
                                         started_at=when - timedelta(seconds=5), finished_at=when), runner.cfg)
    run.decision = Decision.BLOCKED
    runner.ws.checkpoint(run)
    return run


def _again(runner: Runner, model_dir: Path) -> RunRecord:
    run = runner.create(image=ImageRef(repository="127.0.0.1:5000/llmgate/reuse-test", digest=DIGEST),
                        model_dir=model_dir)
    return run


def test_an_unchanged_rerun_reuses_boot_bench_and_eval_and_says_why(tmp_path, model_dir):
    ws = Workspace(tmp_path / "ws")
    first = _measured(_runner(ws), model_dir)
    runner = _runner(ws)
    run = _again(runner, model_dir)
    # No container runtime is reachable here: a boot that was not reused would fail the run.
    runner.run(run, skip=OTHERS)
    for stage in ("boot", "bench", "eval"):
        res = run.stages[stage]
        assert res.status is StageStatus.OK and res.reused_from == first.run_id, stage
    bench = run.stages["bench"].reason or ""
    assert re.search(rf"reused from run {first.run_id} \(same inputs on this machine, measured 6\d s ago, within "
                     r"reuse.bench_max_age_s=3600s\)$", bench), bench
    assert run.stages["eval"].reason == f"reused from run {first.run_id} (same inputs)"
    said = "\n".join(runner.reporter.lines)  # type: ignore[attr-defined]
    assert f"bench: ok: reused from run {first.run_id} (same inputs on this machine" in said
    stored = ws.store.get(run.run_id)
    assert stored.stages["bench"].reused_from == first.run_id
    assert bench_reuse_verdict(ReusePolicy(), stored).status is GateStatus.PASS


@pytest.mark.parametrize("case", ["too old", "disturbed", "not judged", "other machine", "new baseline", "other policy",
                                  "remeasure", "fresh", "attached server"])
def test_a_measurement_the_policy_does_not_cover_is_taken_again(tmp_path, model_dir, monkeypatch, case):
    ws = Workspace(tmp_path / "ws")
    _measured(_runner(ws), model_dir, age_s=7200 if case == "too old" else 60,
              disturbed=None if case == "not judged" else case == "disturbed")
    options = {"remeasure": {"remeasure": True}, "fresh": {"fresh": True},
               "attached server": {"server_url": "http://127.0.0.1:9"}}.get(case, {})
    runner = _runner(ws, **options)
    if case == "other machine":
        monkeypatch.setattr(reuse, "machine_fingerprint", lambda: "another machine")
    if case == "other policy":  # it may size the bench differently
        (tmp_path / "policy.yaml").write_text(f"extends: {REPO / 'gates.local.yaml'}\nseed: 7\n")
        runner.cfg.gates_file = str(tmp_path / "policy.yaml")
    if case == "new baseline":
        promoted = _again(runner, model_dir)
        promoted.decision = Decision.PASS
        promoted.promotion = PromotionRecord(target=promoted.target, digest=DIGEST, mode="gitops",
                                             outcome="promoted")
        ws.checkpoint(promoted)
        assert ws.store.last_promoted(promoted.target).run_id == promoted.run_id
    run = _again(runner, model_dir)
    assert runner._reusable(run, Stage.BENCH, say=True)[1] is None
    assert not runner._server_steps_reusable(run)  # so boot starts a server again
    said = "\n".join(runner.reporter.lines)  # type: ignore[attr-defined]
    if case == "too old":
        assert "bench: measuring again" in said and "2.0 h ago, more than reuse.bench_max_age_s=3600s" in said
    if case == "disturbed":
        assert "measured on a disturbed machine" in said
    if case == "not judged":
        assert "its machine was not judged for disturbance" in said
    # eval reads no timing of this machine nor the policy: it is reused whatever the case, except --fresh
    assert (runner._reusable(run, Stage.EVAL)[1] is None) == (case == "fresh")


def test_the_gate_fails_a_reused_bench_outside_the_policy(tmp_path, model_dir):
    ws = Workspace(tmp_path / "ws")
    first = _measured(_runner(ws), model_dir)
    run = _again(_runner(ws), model_dir)
    stored = first.stages["bench"].model_copy(update={"reused_from": first.run_id})
    run.add_stage(stored)
    assert bench_reuse_verdict(ReusePolicy(bench_max_age_s=3600), run).status is GateStatus.PASS
    late = bench_reuse_verdict(ReusePolicy(bench_max_age_s=30), run)
    assert late.status is GateStatus.FAIL and "more than reuse.bench_max_age_s=30s" in late.reason
    run.stages["bench"].metrics["env_disturbed"] = 1.0
    assert bench_reuse_verdict(ReusePolicy(), run).status is GateStatus.FAIL
    fresh = _again(_runner(ws), model_dir)
    fresh.add_stage(first.stages["bench"])
    assert bench_reuse_verdict(ReusePolicy(), fresh).reason == "measured in this run"


def test_a_child_policy_may_shorten_the_locked_age_but_not_lengthen_it(tmp_path):
    for age, ok in ((600, True), (7200, False)):
        child = tmp_path / f"child-{age}.yaml"
        child.write_text(f"extends: {REPO / 'gates.yaml'}\nreuse:\n  bench_max_age_s: {age}\n"
                         "  reason: a busy shared machine drifts within minutes\n")
        if ok:
            policy = load_policy(child, sections=SECTIONS)
            assert policy.sections["reuse"] == ReusePolicy(bench_max_age_s=600)
        else:
            with pytest.raises(BadInput, match="bench_max_age_s"):
                load_policy(child, sections=SECTIONS)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {REPO / 'gates.yaml'}\nreuse:\n  bench_max_age_s: -1\n")
    with pytest.raises(BadInput, match="reuse"):
        load_policy(bad, sections=SECTIONS)
