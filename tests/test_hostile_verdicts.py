"""Hostile input, the wrong-verdict class: odd but legal behaviour of the server under test (or of a
check that found something) must not turn into a verdict it does not deserve.

- a healthy server that closes every connection is still healthy (no request lost to a client race);
- a server that over- or under-reports `usage.completion_tokens` does not get the TPOT it claims, and the
  bench result names the discrepancy;
- SSE with CR-only line endings (valid per the spec) is parsed, not counted as errors;
- a check stage that ran and found the release wanting never prints "ok".
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import typer

from pipeline.bench.client import chat_payload, stream_request
from pipeline.bench.load import Target, fixed_concurrency
from pipeline.bench.stats import error_reasons
from pipeline.config import PipelineConfig
from pipeline.models import ImageRef, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas import BenchDetails
from pipeline.stages.bench import bench_stage
from pipeline.workspace import Workspace
from tests.doubles.metronome import Running
from tests.stage_helpers import served_ctx


def _payloads(n: int, max_tokens: int = 8) -> list[dict[str, Any]]:
    return [chat_payload("metronome", f"q{i}", max_tokens) for i in range(n)]


# -- H: a server that closes each connection -------------------------------------------------------------
def test_a_server_that_closes_every_connection_loses_no_request() -> None:
    """Concurrency 4 against a healthy server answering `connection: close`: every connection is new, so
    the receive pump sees streams end and begin all the time. A stream registering on a pump that had
    just closed (its last stream ended while this one was connecting) failed with "connect failed:
    [Errno 9] Bad file descriptor" in 2.5-30 % of requests, and the error-rate gate failed a healthy
    release."""
    with Running("--close", "--ttft-ms", "1", "--gap-ms", "0") as m:
        target = Target(m.base_url, timeout_s=10)
        samples = asyncio.run(fixed_concurrency(target, _payloads(300, 4), 4, deadline_s=120))
    assert len(samples) == 300
    assert error_reasons(samples) == {}, [s.error for s in samples if s.error][:3]
    assert target.rx.source == "kernel"


def test_the_pump_is_not_restarted_for_each_new_connection() -> None:
    """While a client is open it holds the pump: a server closing every connection costs no pump
    restarts (each ~40 ms of interpreter start, counted by nobody)."""
    from pipeline.bench import rx_stamp

    started: list[int] = []
    real = rx_stamp._PumpClient.__init__

    def counting(self: Any, loop: asyncio.AbstractEventLoop) -> None:
        started.append(1)
        real(self, loop)

    with Running("--close", "--ttft-ms", "1", "--gap-ms", "0") as m, pytest.MonkeyPatch.context() as mp:
        mp.setattr(rx_stamp._PumpClient, "__init__", counting)
        samples = asyncio.run(fixed_concurrency(Target(m.base_url, timeout_s=10), _payloads(60, 4), 4))
    assert all(s.ok for s in samples) and len(started) == 1


# -- I: server-reported token counts ---------------------------------------------------------------------
def _bench_cfg(tmp_path: Any) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"boot": {"model_dir": str(tmp_path / "no-model")},
         "bench": {"prompts": "synthetic", "requests": 8, "warmup": 1, "concurrency": 2, "max_tokens": 8,
                   "input_tokens": 8, "request_timeout_s": 5, "same_run_baseline": False}})


@pytest.mark.parametrize(("told", "why"), [(10**12, "exceeds max_tokens=8"), (1, "fewer than the 8 content chunks")])
def test_a_server_misreporting_its_token_count_does_not_get_the_tpot_it_claims(tmp_path: Any, told: int,
                                                                              why: str) -> None:
    """8 tokens streamed 10 ms apart, usage saying 10**12: TPOT was (E2E - TTFT) / (10**12 - 1) = 1e-13 s
    and every TPOT gate passed. The count is checked against the stream; an implausible one is replaced
    by the client's own count, and the bench result says so."""
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef.parse("x/y:z"))
    with Running("--ttft-ms", "5", "--gap-ms", "10", "--tokens", "8", "--usage-tokens", str(told)) as m:
        res = bench_stage(run, served_ctx(_bench_cfg(tmp_path), ws, m.base_url, "metronome"))
    assert res.status is StageStatus.OK and res.metrics["error_rate"] == 0
    assert res.metrics["tpot_p50_s"] == pytest.approx(0.010, abs=0.006)
    d = res.details_as(BenchDetails)
    assert d is not None and d.token_count_discrepancies == 8 and why in (d.token_count_discrepancy or "")
    assert d.tokens_estimated and "usage" not in d.tokens_source
    assert "token counts implausible in 8 of 8 requests" in (res.reason or "")
    lines = [json.loads(x) for x in (ws.run_dir(run.run_id) / "bench-samples.jsonl").read_text().splitlines()]
    assert all(x["output_tokens"] == 8 for x in lines if x["phase"] == "measure")
    assert all(why in (x["tokens_discrepancy"] or "") for x in lines if x["phase"] == "measure")


def test_an_honest_token_count_is_kept() -> None:
    with Running("--ttft-ms", "1", "--gap-ms", "2", "--tokens", "6") as m:
        samples = asyncio.run(fixed_concurrency(Target(m.base_url, timeout_s=10), _payloads(4), 2))
    assert all(s.ok and s.tokens_source == "usage" and s.output_tokens == 6 and s.tokens_discrepancy is None
               for s in samples)


# -- SSE line endings ------------------------------------------------------------------------------------
def _sse(events: list[bytes]) -> httpx.AsyncBaseTransport:
    class Chunks(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            for e in events:
                yield e

    class Server(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks())

    return Server()


def _chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}).encode()


async def _one(transport: httpx.AsyncBaseTransport, timeout_s: float = 5) -> Any:
    async with httpx.AsyncClient(transport=transport) as client:
        return await stream_request(client, "http://server.invalid/v1/chat/completions",
                                    chat_payload("m", "q", 8), timeout_s=timeout_s)


@pytest.mark.parametrize("eol", [b"\r", b"\r\n", b"\n"], ids=["CR", "CRLF", "LF"])
def test_sse_with_any_valid_line_ending_is_parsed(eol: bytes) -> None:
    """The SSE spec allows CRLF, LF and a lone CR; a stream in CRs was "malformed" and every request an
    error. The CR of a CRLF may also arrive at the end of one read and its LF at the start of the next."""
    stream = b"".join([b": keep-alive" + eol + eol,
                       b"data: " + _chunk("a") + eol + eol,
                       b"event: message" + eol + b"data: " + _chunk(" b") + eol + eol,
                       b"data: " + _chunk(None, "stop", usage={"completion_tokens": 2}) + eol + eol,
                       b"data: [DONE]" + eol + eol])
    for cut in (1, 3, len(stream)):
        pieces = [stream[i:i + cut] for i in range(0, len(stream), cut)]
        s = asyncio.run(_one(_sse(pieces)))
        assert s.ok, (eol, cut, s.error)
        assert s.text == "a b" and s.output_tokens == 2 and s.finish_reason == "stop"


# -- a check that blocked ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("stage", "metrics"), [(Stage.LEAK, {"leaks": 2.0}), (Stage.SCAN, {"blocking": 3.0}),
                                                (Stage.SIGN, {"verified": 0.0})])
def test_a_check_that_found_the_release_wanting_never_says_ok(stage: Stage, metrics: dict[str, float],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The stage ran to the end (status ok: the check was made) and found a leak / blocking finding / bad
    signature: the command exits 1, and neither its own line nor the run's progress line says "ok"."""
    from pipeline.cli.stage_cmds import finish_stage
    from pipeline.orchestrate.runner import _describe
    from pipeline.stages.registry import STAGES

    run = RunRecord(image=ImageRef.parse("x/y:z"))
    res = StageResult(stage=stage, status=StageStatus.OK, metrics=metrics, reason="found").finish()
    with pytest.raises(typer.Exit) as exc:
        finish_stage(run, res)
    assert exc.value.exit_code == 1
    printed = capsys.readouterr().out
    assert f"{stage.value} ok" not in printed and f"{stage.value} blocked" in printed
    assert _describe(res, STAGES.spec(stage)).startswith(f"{stage.value}: blocked")
    passed = StageResult(stage=stage, status=StageStatus.OK, metrics={k: 0.0 if k != "verified" else 1.0
                                                                      for k in metrics}).finish()
    assert _describe(passed, STAGES.spec(stage)).startswith(f"{stage.value}: ok")
