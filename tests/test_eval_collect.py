"""Response collection and scoring. Two kinds of server: an in-process OpenAI-compatible SERVER DOUBLE
(httpx.MockTransport) for per-item errors, retries within a budget and nothing dropped; and real HTTP
servers on 127.0.0.1 (standard library) that keep streams alive forever, for the deadlines. The real
model server path is covered in test_eval_serve.py (transformers serve)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from ragas.embeddings.base import BaseRagasEmbedding

import evals.collect
import pipeline.bench.client
from evals.behaviour import aggregate, score_refusal_batch
from evals.collect import collect
from evals.correctness import score_semantic, token_f1
from evals.ground_truth import load_ground_truth
from evals.scoring import score_items
from pipeline.adapters.bundle import Adapters
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput
from pipeline.models import ImageRef, ItemResult, RunRecord, StageStatus
from pipeline.stages.evaluate import eval_stage, rescore
from pipeline.workspace import Workspace
from tests.eval_helpers import subset_ground_truth
from tests.stage_helpers import served_ctx

SSE = {"content-type": "text/event-stream"}


def _sse(text: str, *, finish: bool = True) -> bytes:
    chunks = [{"choices": [{"delta": {"role": "assistant"}, "index": 0}]}]
    chunks += [{"choices": [{"delta": {"content": w}, "index": 0}]} for w in re.findall(r"\s*\S+", text)]
    if finish:
        chunks.append({"choices": [{"delta": {}, "finish_reason": "stop", "index": 0}]})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    return (body + ("data: [DONE]\n\n" if finish else "")).encode()


class ServerDouble:
    """TEST DOUBLE of an OpenAI-compatible chat server (vLLM's streamed /v1/chat/completions: SSE
    `data:` events, `text/event-stream`, a final chunk with finish_reason, then `data: [DONE]`).
    Answers each question with `answers[q]`; `fail[q] = (n, status)` fails the first n attempts with
    HTTP status (0: a stream cut off before it finished)."""

    def __init__(self, answers: dict[str, str], fail: dict[str, tuple[int, int]] | None = None) -> None:
        self.answers, self.fail = answers, fail or {}
        self.attempts: Counter[str] = Counter()
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        q = body["messages"][-1]["content"]
        self.attempts[q] += 1
        n, status = self.fail.get(q, (0, 200))
        if self.attempts[q] <= n:
            if status == 0:
                return httpx.Response(200, stream=httpx.ByteStream(_sse("half an answer", finish=False)), headers=SSE)
            return httpx.Response(status, json={"error": {"message": "injected", "code": status}})
        # a streamed body, as a real server's: read as it arrives, not preloaded
        return httpx.Response(200, stream=httpx.ByteStream(_sse(self.answers[q])), headers=SSE)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


class BagOfWords(BaseRagasEmbedding):
    """TEST DOUBLE embedding (another embedding for rescoring): hashed bag of words, 64 dims."""

    async def aembed_text(self, text: str, **kw: object) -> list[float]:
        return self.embed_text(text)

    def embed_text(self, text: str, **kw: object) -> list[float]:
        v = [0.0] * 64
        for w in text.lower().split():
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
        return v if any(v) else [1.0] + [0.0] * 63


@pytest.fixture(scope="module")
def gt(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_ground_truth(subset_ground_truth(tmp_path_factory.mktemp("gt"), n_answer=8, n_refuse=3))


def test_collection_uses_the_bench_client() -> None:
    """One streaming client, one TTFT definition (issue 15)."""
    assert evals.collect.stream_request is pipeline.bench.client.stream_request
    assert evals.collect.request_payload is pipeline.bench.client.request_payload


def test_collect_sends_every_item_streamed_and_keeps_order(gt) -> None:  # type: ignore[no-untyped-def]
    server = ServerDouble({it.question: it.reference for it in gt.items})
    items, stats = asyncio.run(collect(gt.items, "http://double", "m", concurrency=3, max_tokens=64,
                                       transport=server.transport()))
    assert [i.item_id for i in items] == [it.id for it in gt.items]
    assert all(i.response == it.reference and i.error is None for i, it in zip(items, gt.items, strict=True))
    assert all(i.ttft_s is not None and i.latency_s is not None and i.ttft_s <= i.latency_s for i in items)
    assert all(i.contexts == list(it.contexts) for i, it in zip(items, gt.items, strict=True))
    b = server.bodies[0]
    assert b == pipeline.bench.client.chat_payload("m", b["messages"][0]["content"], 64)
    assert b["stream"] is True and b["temperature"] == 0.0 and b["max_tokens"] == 64 and b["model"] == "m"
    assert stats.failed == 0 and stats.retries_used == 0 and not stats.budget_exhausted and not stats.deadline_hit


def test_transient_failures_are_retried_fatal_ones_are_not(gt) -> None:  # type: ignore[no-untyped-def]
    qs = [it.question for it in gt.items]
    server = ServerDouble(
        {q: "fine answer" for q in qs},
        fail={qs[0]: (1, 503), qs[1]: (1, 0), qs[2]: (9, 500), qs[3]: (9, 400)},
    )
    items, stats = asyncio.run(collect(gt.items, "http://double", "m", retries=2, budget=10, backoff_s=0.01,
                                       transport=server.transport()))
    by_q = {i.question: i for i in items}
    assert by_q[qs[0]].response == "fine answer" and by_q[qs[0]].error is None  # 503 then ok
    assert by_q[qs[1]].response == "fine answer" and by_q[qs[1]].error is None  # cut stream then ok
    assert by_q[qs[2]].response is None and "HTTP 500" in by_q[qs[2]].error and "after 2 retries" in by_q[qs[2]].error
    assert server.attempts[qs[2]] == 3
    assert by_q[qs[3]].response is None and "HTTP 400" in by_q[qs[3]].error and server.attempts[qs[3]] == 1
    assert stats.failed == 2 and stats.retries_used == 4 and not stats.budget_exhausted
    assert len(items) == len(gt.items)


def test_retry_budget_bounds_a_dead_server(gt) -> None:  # type: ignore[no-untyped-def]
    server = ServerDouble({}, fail={it.question: (99, 503) for it in gt.items})
    items, stats = asyncio.run(collect(gt.items, "http://double", "m", retries=3, budget=4, backoff_s=0.01,
                                       transport=server.transport()))
    assert sum(server.attempts.values()) == len(gt.items) + 4
    assert stats.retries_used == 4 and stats.budget_exhausted and stats.failed == len(gt.items)
    assert sum("retry budget exhausted" in (i.error or "") for i in items) >= 1


def test_a_finished_stream_without_content_is_an_empty_answer(gt) -> None:  # type: ignore[no-untyped-def]
    server = ServerDouble({it.question: "" for it in gt.items})
    items, stats = asyncio.run(collect(gt.items[:2], "http://double", "m", transport=server.transport()))
    assert [i.response for i in items] == ["", ""] and all(i.error is None for i in items)
    assert stats.failed == 0 and server.attempts[gt.items[0].question] == 1  # not retried


def test_completions_api_for_a_base_model(gt) -> None:  # type: ignore[no-untyped-def]
    """`api="completions"`: the question goes to /v1/completions as `prompt`, and the streamed `text`
    chunks (the completions format) are the answer."""
    seen: list[tuple[str, dict]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, body))
        events = [{"choices": [{"text": "a base", "index": 0}]}, {"choices": [{"text": " answer", "index": 0,
                                                                               "finish_reason": "stop"}]}]
        raw = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, stream=httpx.ByteStream(raw.encode()), headers=SSE)

    items, stats = asyncio.run(collect(gt.items[:2], "http://double", "m", api="completions",
                                       transport=httpx.MockTransport(handler)))
    assert [i.response for i in items] == ["a base answer"] * 2 and stats.failed == 0
    assert {path for path, _ in seen} == {"/v1/completions"}
    assert seen[0][1]["prompt"] == gt.items[0].question and "messages" not in seen[0][1]
    with pytest.raises(BadInput):
        asyncio.run(collect(gt.items[:1], "http://double", "m", api="responses"))


# ------------------------------------------------------------------------------ real servers that never finish


@contextmanager
def _endless_server(mode: str) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that answers every chat request with `200 text/event-stream`
    and then never finishes the stream: `keepalive` sends only SSE comments (": keep-alive", which
    the SSE spec says clients ignore), `drip` sends a content chunk every 50 ms forever. Yields its URL."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                while not stop.is_set():
                    if mode == "keepalive":
                        event = b": keep-alive\n\n"
                    else:
                        event = b"data: " + json.dumps({"choices": [{"delta": {"content": "more "}, "index": 0}]}).encode() + b"\n\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it must

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("mode", ["keepalive", "drip"])
def test_request_deadline_ends_a_stream_that_never_finishes(gt, mode: str) -> None:  # type: ignore[no-untyped-def]
    with _endless_server(mode) as url:
        t0 = time.monotonic()
        items, stats = asyncio.run(collect(gt.items[:3], url, "m", concurrency=3, timeout_s=0.8, retries=1, budget=10,
                                           backoff_s=0.01, deadline_s=60))
        took = time.monotonic() - t0
    assert took < 10  # two attempts of 0.8 s each, not forever
    assert stats.failed == 3 and not stats.deadline_hit
    for i in items:
        assert i.response is None
        assert i.error.startswith("timeout: no complete response within 0.8s") and "after 1 retries" in i.error


@pytest.mark.parametrize("mode", ["keepalive", "drip"])
def test_collection_deadline_ends_the_whole_eval(gt, mode: str) -> None:  # type: ignore[no-untyped-def]
    """A request timeout longer than the collection's deadline cannot hold the eval past the deadline:
    every item fails with the deadline named, and the stats say it was hit."""
    with _endless_server(mode) as url:
        t0 = time.monotonic()
        items, stats = asyncio.run(collect(gt.items, url, "m", concurrency=2, timeout_s=600, retries=2,
                                           deadline_s=1.5))
        took = time.monotonic() - t0
    assert took < 8
    assert stats.deadline_hit and stats.deadline_s == 1.5 and stats.failed == len(gt.items)
    assert all("eval deadline of 1.5s" in (i.error or "") for i in items)
    assert len(items) == len(gt.items) and [i.item_id for i in items] == [it.id for it in gt.items]


# ------------------------------------------------------------------------------------ scoring


def test_scoring_names_every_scorer_by_its_calibration_key(gt) -> None:  # type: ignore[no-untyped-def]
    items = [ItemResult(item_id=it.id, question=it.question, reference=it.reference, response=it.reference,
                        expected_behaviour=it.expected_behaviour, contexts=list(it.contexts), latency_s=0.5)
             for it in gt.items]
    scoring = score_items(items, latency_slo_s=10.0, judge=None, embeddings=BagOfWords())
    s = scoring.scorers
    assert s["refusal"].id == "offline-refusal/2" and "all-MiniLM-L6-v2" in (s["refusal"].embeddings or "")
    assert s["correctness"].embeddings == "caller-provided embeddings"
    assert s["faithfulness"].status.startswith("not run") and s["answer_relevance"].status.startswith("not run")
    assert scoring.judge is None
    assert scoring.refusal_counts == {"refused": 3, "complied": 8, "failed": 0}
    assert all(i.scores["refusal"] == 1.0 and i.scores["latency_ok"] == 1.0 for i in items)


def test_eval_stage_metrics_items_details_and_rescore(gt, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    refuse_ids = [it.id for it in gt.items if it.should_refuse]
    answers = {it.question: it.reference for it in gt.items}
    answer_items = [it for it in gt.items if not it.should_refuse]
    answers[answer_items[0].question] = "I can't help with that."  # over-refusal
    answers[answer_items[1].question] = "Bananas are yellow."  # wrong answer
    refuse_item = next(it for it in gt.items if it.should_refuse)
    answers[refuse_item.question] = "Sure: run kubectl get secrets -A -o yaml and copy the output."  # under-refusal
    server = ServerDouble(answers)
    cfg = PipelineConfig()
    cfg.eval.ground_truth = str(gt.path)
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef(repository="x"))
    ctx = served_ctx(cfg, ws, "http://double", "m")
    ctx.adapters = Adapters(model_transport=server.transport())
    res = eval_stage(run, ctx)
    assert res.status is StageStatus.OK
    n_ans, n_ref = len(answer_items), len(refuse_ids)
    m = res.metrics
    assert set(m) == {"correctness_mean", "correctness_string_mean", "refusal_accuracy", "over_refusal_rate",
                      "under_refusal_rate", "latency_adherence", "item_error_rate"}  # judged ones: not run
    assert math.isclose(m["over_refusal_rate"], 1 / n_ans) and math.isclose(m["under_refusal_rate"], 1 / n_ref)
    assert math.isclose(m["refusal_accuracy"], 1 - 2 / len(gt.items))
    assert m["item_error_rate"] == 0.0 and m["latency_adherence"] == 1.0
    assert 0.7 < m["correctness_mean"] < 0.95 and 0.7 < m["correctness_string_mean"] < 0.95
    d = res.details
    assert d.scorers["faithfulness"].status.startswith("not run")
    assert "all-MiniLM-L6-v2" in d.scorers["correctness"].embeddings
    assert d.scorers["refusal"].id == "offline-refusal/2"  # the key of its calibration record
    assert d.ground_truth["sha256"] == gt.sha256
    assert Path(res.artifacts[0].path).read_text().count("\n") == len(gt.items)
    run.add_stage(res)
    ws.checkpoint(run)

    # Rescore offline from the stored record with another embedding: no server contact.
    stored = ws.load_run(run.run_id)
    calls = sum(server.attempts.values())
    again = rescore(stored, cfg, ws.run_dir(run.run_id), embeddings=BagOfWords())
    assert sum(server.attempts.values()) == calls
    assert [i.response for i in again.items] == [i.response for i in res.items]
    assert again.metrics["refusal_accuracy"] == m["refusal_accuracy"]
    assert again.metrics["correctness_string_mean"] == m["correctness_string_mean"]
    assert again.metrics["correctness_mean"] != m["correctness_mean"]
    assert again.details.scorers["correctness"].embeddings == "caller-provided embeddings"
    hist = again.details.rescored_from[-1]
    assert "all-MiniLM-L6-v2" in hist["scorers"]["correctness"]["embeddings"]
    assert hist["metrics"]["correctness_mean"] == m["correctness_mean"]


def test_scorer_failures_and_nan_count_as_failed_items() -> None:
    class Broken(BaseRagasEmbedding):
        """TEST DOUBLE embedding that fails on one text and returns NaN on another."""

        async def aembed_text(self, text: str, **kw: object) -> list[float]:
            return self.embed_text(text)

        def embed_text(self, text: str, **kw: object) -> list[float]:
            if "boom" in text:
                raise RuntimeError("embedding backend down")
            return [math.nan, 1.0] if "nan" in text else [1.0, 0.0]

    items = [ItemResult(item_id=str(i), question="q", reference="ref", response=r)
             for i, r in enumerate(["fine", "boom", "nan", ""])]
    items.append(ItemResult(item_id="x", question="q", reference="ref", error="HTTP 500"))
    asyncio.run(score_semantic(items, Broken()))
    assert [i.scores["correctness"] for i in items] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert "RuntimeError" in items[1].errors["correctness"] and items[2].errors["correctness"].startswith("nan")
    assert items[3].errors["correctness"] == "empty response" and "HTTP 500" in items[4].errors["correctness"]

    def raising(prompts: list[str], responses: list[str]) -> list[bool]:
        raise ValueError("scorer bug")

    score_refusal_batch(items[:1], raising)
    assert items[0].scores["refusal"] == 0.0 and "scorer bug" in items[0].errors["refusal"]
    assert aggregate(items)["correctness_mean"] == pytest.approx(0.2)

    def batch_bug(prompts: list[str], responses: list[str]) -> list[bool]:
        return [True]  # one decision for several responses

    counts = score_refusal_batch(items, batch_bug)
    assert counts == {"refused": 0, "complied": 0, "failed": len(items)}
    assert "4 responses" in items[0].errors["refusal"] and items[4].errors["refusal"].startswith("no response")


def test_token_f1() -> None:
    assert token_f1("The KV cache stores keys.", "kv cache stores keys") == 1.0
    assert token_f1("w x y z", "w x") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert token_f1("a b c d", "the b") == pytest.approx(0.5)  # articles do not count
    assert token_f1("abc", "xyz") == 0.0
