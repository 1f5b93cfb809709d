"""The eval stage against the real server: the demo fixture model under `transformers serve` on a
loopback ephemeral port, streamed with `stream_options.include_usage`; then `llmgate eval --rescore`
on the stored run, and a configured but unreachable judge that must count as failures, not passes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from evals.ground_truth import load_ground_truth
from pipeline.config import JudgeConfig, PipelineConfig
from pipeline.demo_model import make_demo_model
from pipeline.errors import InfraError
from pipeline.models import ImageRef, RunRecord, StageStatus
from pipeline.stages.evaluate import eval_stage
from pipeline.workspace import Workspace
from tests.eval_helpers import REPO, free_port, subset_ground_truth, transformers_serve
from tests.stage_helpers import record_measured, served_ctx


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("serve")
    gt_dir = subset_ground_truth(root / "gt", n_answer=9, n_refuse=3)
    make_demo_model(root / "model", gt_dir)
    with transformers_serve(root / "model", root / "hub") as url:
        yield url, root / "model", gt_dir


def test_streamed_chat_completion_with_usage(served) -> None:  # type: ignore[no-untyped-def]
    url, model_dir, gt_dir = served
    item = load_ground_truth(gt_dir).items[0]
    body = {"model": str(model_dir), "messages": [{"role": "user", "content": item.question}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": 64, "temperature": 0}
    text, usage = "", None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60, trust_env=False) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunk = json.loads(line[5:])
                usage = chunk.get("usage") or usage
                text += "".join((c.get("delta") or {}).get("content") or "" for c in chunk["choices"])
    assert text == item.reference
    assert usage and usage["completion_tokens"] > 0


def test_eval_stage_on_served_demo_model_then_cli_rescore(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, model_dir, gt_dir = served
    cfg = PipelineConfig()
    cfg.eval.ground_truth = str(gt_dir)
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef(repository="demo"))
    res = eval_stage(run, served_ctx(cfg, ws, url, str(model_dir)))
    assert res.status is StageStatus.OK, res.reason
    assert res.metrics["item_error_rate"] == 0.0
    assert res.metrics["correctness_mean"] > 0.97 and res.metrics["correctness_string_mean"] > 0.95
    assert res.metrics["under_refusal_rate"] == 0.0
    assert all(i.ttft_s and i.latency_s and i.response for i in res.items)
    record_measured(run, res, cfg)  # as the runner records it: signed where it was measured
    ws.checkpoint(run)

    conf = tmp_path / "llmgate.yaml"
    conf.write_text(f"eval: {{ground_truth: '{gt_dir}'}}\n")
    cli = subprocess.run(
        [sys.executable, "-m", "pipeline", "--workdir", str(ws.root), "eval", "--rescore", "--run", run.run_id,
         "--config", str(conf)],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"run {run.run_id}: eval ok" in cli.stdout
    stored = ws.load_run(run.run_id)
    ev = stored.stages["eval"]
    assert len(ev.details.rescored_from) == 1
    assert ev.metrics["correctness_mean"] == pytest.approx(res.metrics["correctness_mean"], abs=1e-6)
    assert [i.response for i in ev.items] == [i.response for i in res.items]


def test_unreachable_judge_is_an_error_of_the_eval_not_zeros(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, model_dir, gt_dir = served
    cfg = PipelineConfig()
    cfg.eval.ground_truth = str(gt_dir)
    judge_url = f"http://127.0.0.1:{free_port()}/v1"
    cfg.eval.judge = JudgeConfig(base_url=judge_url, model="judge", timeout_s=5, api_key_env=None)
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef(repository="demo"))
    # Judge down: it measured nothing, so the eval fails as infrastructure naming the judge (#26 J),
    # instead of recording faithfulness 0.0 as if the server had answered badly.
    with pytest.raises(InfraError, match="failed every one of its") as err:
        eval_stage(run, served_ctx(cfg, ws, url, str(model_dir)))
    assert judge_url in err.value.render() and "connection error" in err.value.render()


def test_served_demo_model_as_judge_through_ragas(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The judged dimensions end to end through ragas and instructor against a real OpenAI-compatible
    server: the demo model under `transformers serve` is the judge. It recites ground-truth answers and
    never answers in the judge's JSON, so every sample fails; a judge that measured nothing is an error
    of the eval naming the judge and each failure's reason (#26 J), never a column of zeros."""
    url, model_dir, gt_dir = served
    cfg = PipelineConfig()
    cfg.eval.ground_truth = str(gt_dir)
    cfg.eval.judge = JudgeConfig(base_url=url + "/v1", model=str(model_dir), timeout_s=60, concurrency=2,
                                 api_key_env=None)
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef(repository="demo"))
    with pytest.raises(InfraError, match="failed every one of its") as err:
        eval_stage(run, served_ctx(cfg, ws, url, str(model_dir)))
    said = err.value.render()
    assert url in said
    # Each failure is counted under a named reason from parsing the served judge's answers (ragas and
    # instructor ran against the real server), not a connection error or a bare exception class.
    named = ("judge output cut at max_tokens", "malformed judge JSON")
    assert any(n in said for n in named), said
    assert "connection error" not in said
