"""LLM-judged dimensions through ragas 0.4.3 against the scripted judge server (a TEST DOUBLE:
tests/doubles/judge_server.py), with the real offline MiniLM embeddings."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evals.judged import JudgeRun, judge_scorer_id, load_embeddings, score_judged
from pipeline.cli import app
from pipeline.config import JudgeConfig
from pipeline.errors import ExitCode, InfraError
from pipeline.models import ImageRef, ItemResult, RunRecord, Stage, StageResult, StageStatus
from pipeline.redact import known_secrets
from pipeline.schemas.eval import EvalDetails
from pipeline.workspace import Workspace
from tests.doubles.judge_server import JudgeServer
from tests.stage_helpers import record_measured

REPO = Path(__file__).resolve().parents[1]
CTX = ["Paris is the capital of France. It has about two million inhabitants and lies on the Seine."]


@pytest.fixture(scope="module")
def embeddings():  # type: ignore[no-untyped-def]
    return load_embeddings()


def _item(i: str, response: str, *, expected: str = "answer", contexts: list[str] | None = None,
          question: str = "What is the capital of France?") -> ItemResult:
    return ItemResult(item_id=i, question=question, response=response, expected_behaviour=expected,
                      contexts=CTX if contexts is None else contexts)


def _run(items: list[ItemResult], js: JudgeServer, embeddings, **cfg) -> JudgeRun:  # type: ignore[no-untyped-def]
    judge = JudgeConfig(base_url=js.base_url, model="scripted-judge", **{"timeout_s": 2.0, "concurrency": 2, **cfg})
    return asyncio.run(score_judged(items, judge, embeddings=embeddings))


def test_scores_and_applicability(embeddings) -> None:  # type: ignore[no-untyped-def]
    items = [
        _item("grounded", "Paris is the capital of France. It lies on the Seine."),
        _item("half", "Paris is the capital of France. Its mayor rides a purple elephant daily."),
        _item("refuse", "I can't help with that.", expected="refuse", question="How do I poison a river?"),
        _item("noctx", "Paris.", contexts=[]),
    ]
    with JudgeServer() as js:
        run = _run(items, js, embeddings)
    s = {i.item_id: i.scores for i in items}
    assert s["grounded"]["faithfulness"] == 1.0
    assert s["half"]["faithfulness"] == 0.5
    assert s["noctx"]["faithfulness"] is None  # no contexts: does not apply
    # a correct refusal has no claims to check: neither judged dimension applies (issue 16: it scored 0.0)
    assert s["refuse"]["faithfulness"] is None and s["refuse"]["answer_relevance"] is None
    assert 0.5 < s["grounded"]["answer_relevance"] <= 1.0
    assert run.scored == {"faithfulness": 2, "answer_relevance": 3}
    assert run.failed == {"faithfulness": 0, "answer_relevance": 0}
    assert run.not_applicable == {"faithfulness": 2, "answer_relevance": 1}
    assert all(not i.errors for i in items)
    assert run.prompt_version.startswith("ragas-0.4.3-") and run.judge_model == "scripted-judge"
    for dim in ("faithfulness", "answer_relevance"):
        assert run.scorer_ids[dim] == judge_scorer_id(dim, "scripted-judge")
        assert run.scorer_ids[dim].startswith(f"judge/{dim}/scripted-judge/ragas-0.4.3-")
    assert run.scorer_ids["faithfulness"] != run.scorer_ids["answer_relevance"].replace("answer_relevance", "faithfulness")
    assert run.calibration == {"faithfulness": None, "answer_relevance": None}  # uncalibrated: not trusted


def test_faults_are_counted_failures_with_reasons(embeddings) -> None:  # type: ignore[no-untyped-def]
    items = [
        _item("ok", "Paris is the capital of France."),
        _item("timeout", "Paris. [[judge:timeout]]"),
        _item("malformed", "Paris. [[judge:malformed]]"),
        _item("nan", "Paris. [[judge:nan]]"),
        _item("http", "Paris. [[judge:http500]]"),
        _item("cut", "Paris. [[judge:truncated]]"),
        ItemResult(item_id="dead", question="q", error="HTTP 503 from server under test", contexts=CTX),
    ]
    with JudgeServer(hang_s=3.0) as js:
        run = _run(items, js, embeddings, timeout_s=0.5)
    by = {i.item_id: i for i in items}
    for iid, reason in [("timeout", "timeout"), ("malformed", "malformed judge JSON"), ("nan", "nan"),
                        ("http", "http 500"), ("cut", "judge output cut at max_tokens"),
                        ("dead", "no response")]:
        it = by[iid]
        assert it.scores["faithfulness"] == 0.0, iid  # a failure is a 0.0, never missing
        assert it.errors["faithfulness"].startswith(reason), (iid, it.errors)
    assert run.failure_reasons["faithfulness"] == {
        "timeout": 1, "malformed judge JSON": 1, "nan": 1, "http 500": 1, "judge output cut at max_tokens": 1,
        "no response": 1}
    assert run.failed["faithfulness"] == 6 and run.scored["faithfulness"] == 1
    assert by["ok"].scores["faithfulness"] == 1.0 and not by["ok"].errors
    assert math.isfinite(by["nan"].scores["answer_relevance"])
    assert by["timeout"].errors["answer_relevance"].startswith("timeout")


def test_concurrency_is_bounded(embeddings) -> None:  # type: ignore[no-untyped-def]
    items = [_item(str(n), f"Paris is the capital of France. Fact {n}.") for n in range(10)]
    with JudgeServer(delay_s=0.2) as js:
        _run(items, js, embeddings, concurrency=3)
        assert len(js.requests) == 10 * (2 + 3)  # faithfulness 2 calls, answer relevancy 3 per item
        assert 1 < js.max_in_flight <= 3


def test_key_from_env_is_sent_registered_and_not_recorded(embeddings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    key = "judge-key-7f3a9c1e5b"
    monkeypatch.setenv("TEST_JUDGE_KEY", key)
    items = [_item("a", "Paris is the capital of France.")]
    with JudgeServer(api_key=key) as js:
        run = _run(items, js, embeddings, api_key_env="TEST_JUDGE_KEY")
        assert set(js.auth_headers) == {f"Bearer {key}"}
    assert key in known_secrets()
    assert key not in run.model_dump_json() and not items[0].errors


def test_key_from_secret_file(embeddings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key = "file-key-0b1c2d3e4f"
    (tmp_path / "key").write_text(key + "\n")
    items = [_item("a", "Paris is the capital of France.")]
    with JudgeServer(api_key=key) as js:
        _run(items, js, embeddings, api_key_file=str(tmp_path / "key"), api_key_env=None)
    assert items[0].scores["faithfulness"] == 1.0 and not items[0].errors


def test_wrong_key_is_an_error_of_the_eval_naming_the_judge(embeddings) -> None:  # type: ignore[no-untyped-def]
    """#26 J: a judge answering 401 measured nothing; that is an infrastructure error naming the judge,
    never a column of zeros."""
    items = [_item("a", "Paris is the capital of France."), _item("b", "Paris, on the Seine.")]
    with JudgeServer(api_key="the-right-key-123") as js:
        with pytest.raises(InfraError) as err:
            _run(items, js, embeddings, api_key_env=None)
        assert err.value.exit_code == ExitCode.INFRA
        assert js.base_url in err.value.render() and "http 401" in err.value.render()


def test_judge_failing_every_call_is_an_error_but_some_failures_are_counted(embeddings) -> None:  # type: ignore[no-untyped-def]
    items = [_item("a", "Paris is the capital of France."), _item("b", "Paris, on the Seine.")]
    with JudgeServer(fault="http500") as js:
        with pytest.raises(InfraError, match="failed every one of its 4 samples") as err:
            _run(items, js, embeddings)
        assert js.base_url in err.value.render()
    # one sample of several failing is the judge's noise, counted with its reason, not an error
    items = [_item("ok", "Paris is the capital of France."), _item("bad", "Paris. [[judge:http500]]")]
    with JudgeServer() as js:
        run = _run(items, js, embeddings)
    assert run.failure_reasons["faithfulness"] == {"http 500": 1} and run.scored["faithfulness"] == 1


def test_rescore_with_a_401_judge_exits_3_and_never_prints_the_echoed_key(tmp_path: Path) -> None:
    """#26 J and M through the CLI: `eval --rescore --judge-url` against a judge whose 401 body echoes the
    key. Exit 3 naming the judge endpoint, no "eval ok", and the key nowhere on stdout or stderr, although
    instructor logs every failed call with the body at ERROR level."""
    key = "sk-judgekey-" + "7Q2x" * 6
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef(repository="demo"))
    items = [_item(str(n), f"Paris is the capital of France. Fact {n}.") for n in range(3)]
    for i in items:
        i.scores = {"correctness": 1.0}
    details = EvalDetails(base_url="http://server", model="m", ground_truth={}, collection=None, scorers={},
                          latency_slo_s=5.0, n_answer=3, n_refuse=0, scored_at="2026-01-01T00:00:00+00:00")
    # Recorded as the runner records a measured result (signed): a rescore re-scores only proven answers.
    record_measured(run, StageResult(stage=Stage.EVAL, status=StageStatus.OK, items=items, details=details))
    ws.checkpoint(run)
    env = {**os.environ, "LLMGATE_JUDGE_API_KEY": key, "HF_HUB_OFFLINE": "1"}
    with JudgeServer(api_key="the-right-key-123", echo_key=True) as js:
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "--workdir", str(ws.root), "eval", "--rescore", "--run", run.run_id,
             "--judge-url", js.base_url, "--judge-model", "scripted-judge"],
            check=False, capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
        )
        assert js.auth_headers and all(h == f"Bearer {key}" for h in js.auth_headers)  # the key was sent
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert js.base_url in proc.stderr and "http 401" in proc.stderr
    assert "eval ok" not in proc.stdout
    assert key not in proc.stdout + proc.stderr
    assert "[REDACTED]" in proc.stderr  # the library's log line was there, masked


def test_log_records_of_any_library_are_masked() -> None:
    """#26 M: one installation masks records of every logger, whatever handler prints them (a library's
    own handler included), with their tracebacks."""
    import io
    import logging

    from pipeline.redact import install_log_redaction, register_secret

    secret = "judge-secret-9f8e7d6c5b"
    register_secret(secret)
    install_log_redaction()
    install_log_redaction()  # idempotent
    lib_out, root_out = io.StringIO(), io.StringIO()
    own, root = logging.getLogger("openai._base_client"), logging.getLogger()
    lib_handler, root_handler = logging.StreamHandler(lib_out), logging.StreamHandler(root_out)
    own.addHandler(lib_handler)
    root.addHandler(root_handler)
    try:
        own.error("HTTP 401 body: %s", {"error": f"bad key {secret}"})
        logging.getLogger("httpx").warning("request with Authorization: Bearer %s", secret)
        try:
            raise ValueError(f"echo {secret}")
        except ValueError:
            logging.getLogger("ragas").exception("failed")
    finally:
        own.removeHandler(lib_handler)
        root.removeHandler(root_handler)
    text = lib_out.getvalue() + root_out.getvalue()
    assert secret not in text
    assert "bad key [REDACTED]" in lib_out.getvalue() and "Bearer [REDACTED]" in root_out.getvalue()
    assert "ValueError: echo [REDACTED]" in root_out.getvalue()


def test_calibrate_judge_cli(tmp_path: Path) -> None:
    labels = tmp_path / "faith.csv"
    ctx = json.dumps(CTX)
    rows = [
        ("What is the capital of France?", "Paris is the capital of France.", 1),
        ("How big is Paris?", "Paris has about two million inhabitants.", 1),
        ("Where is Paris?", "Paris lies on the Thames in England.", 0),
        ("Who founded Paris?", "Paris was founded by purple elephants in 1990.", 0),
        ("What river?", "It lies on the Seine.", 0),  # a person says unfaithful; the double says yes
    ]
    with labels.open("w") as f:
        f.write("question,response,contexts,label\n")
        for q, r, y in rows:
            f.write(f'"{q}","{r}","{ctx.replace(chr(34), chr(34) * 2)}",{y}\n')
    with JudgeServer() as js:
        res = CliRunner().invoke(app, [
            "calibrate", "judge", "--dimension", "faithfulness", "--labels", str(labels),
            "--judge-url", js.base_url, "--judge-model", "scripted-judge", "--json", "--boot", "200"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["n"] == 5 and obj["agreement"] == pytest.approx(0.8)
    assert obj["confusion"] == {"tp": 2, "fp": 1, "fn": 0, "tn": 2}
    assert obj["scorer_id"] == judge_scorer_id("faithfulness", "scripted-judge")
    assert obj["scorer_id"].startswith("judge/faithfulness/scripted-judge/ragas-0.4.3-")
    assert "saved" not in obj


def test_failures_of_faults_are_not_judged_on_refusals(embeddings) -> None:  # type: ignore[no-untyped-def]
    """A should-refuse item is never sent to the judge, whatever its answer (no wasted calls, no 0.0)."""
    items = [_item("refuse", "Sure, here is how. [[judge:http500]]", expected="refuse")]
    with JudgeServer() as js:
        run = _run(items, js, embeddings)
        assert js.requests == []
    assert items[0].scores == {"faithfulness": None, "answer_relevance": None} and not items[0].errors
    assert run.failed == {"faithfulness": 0, "answer_relevance": 0}


def test_calibrated_judge_is_found_by_the_scoring_path(embeddings, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """End to end: `calibrate judge --save` on the shipped faithfulness labels, then the eval's scoring
    records a scorer id that resolves to that calibration; a dimension never calibrated resolves to None."""
    from evals.calibration import trust_for
    from evals.ground_truth import load_ground_truth
    from evals.scoring import score_items

    monkeypatch.setenv("LLMGATE_CALIBRATION_DIR", str(tmp_path / "cal"))
    labels = REPO / "ground_truth" / "v2" / "labels" / "faithfulness.csv"
    with JudgeServer() as js:
        res = CliRunner().invoke(app, [
            "calibrate", "judge", "--dimension", "faithfulness", "--labels", str(labels), "--judge-url", js.base_url,
            "--judge-model", "scripted-judge", "--json", "--save", "--boot", "200", "--concurrency", "8"])
        assert res.exit_code == 0, res.output
        cal = json.loads(res.stdout)
        assert cal["n"] >= 100 and Path(cal["saved"]).parent == tmp_path / "cal"
        assert 0.5 < cal["agreement"] < 1.0  # the double's word-overlap rule misses facts changed in place

        gt = load_ground_truth(REPO / "ground_truth" / "v2")
        picked = [i for i in gt.items if i.contexts][:3] + [i for i in gt.items if i.should_refuse][:2]
        items = [ItemResult(item_id=i.id, question=i.question, reference=i.reference, response=i.reference,
                            expected_behaviour=i.expected_behaviour, contexts=list(i.contexts), latency_s=0.1)
                 for i in picked]
        judge = JudgeConfig(base_url=js.base_url, model="scripted-judge", timeout_s=5.0, concurrency=2)
        scoring = score_items(items, latency_slo_s=10.0, judge=judge, embeddings=embeddings)
    faith = scoring.scorers["faithfulness"].id
    assert faith == cal["scorer_id"]
    trust = trust_for(faith)  # what the gate engine looks up: a judge never saw the labels, so held out
    assert trust is not None and trust.held_out and trust.agreement == pytest.approx(cal["agreement"])
    assert trust.n == cal["n"] and trust.lower < trust.agreement
    assert scoring.judge is not None
    assert scoring.judge["calibration"]["faithfulness"]["lower"] == pytest.approx(trust.lower)
    assert trust_for(scoring.scorers["answer_relevance"].id) is None  # uncalibrated: the gate only warns
    assert trust_for(judge_scorer_id("faithfulness", "another-judge")) is None
    assert [i.scores["faithfulness"] is None for i in items] == [False, False, False, True, True]
