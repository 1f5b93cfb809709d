"""One streamed completion over httpx, timed chunk by chunk, turned into a `RequestSample`.

Every request ends as a sample: success, or an error with its reason (HTTP status, malformed SSE,
stream cut, timeout, connection refused). Nothing is retried and nothing is dropped, so the error
rate's denominator is every request that was due. Timestamps are `time.perf_counter()` (CLOCK_MONOTONIC
on Linux, comparable across processes on one host) of when the bytes arrived: the kernel's receive
stamp on plain-HTTP connections (`rx_stamp`), else taken as the read returns, before any parsing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from pipeline.bench.rx_stamp import PumpGone, connect_tx, request_tx, rx_time
from pipeline.outside_text import keepable

# Servers may stream reasoning tokens before answer tokens; both are output tokens and both count
# as "content" for TTFT/ITL (a reasoning token is a token the user waited for).
_CONTENT_KEYS = ("content", "reasoning_content", "reasoning")


@dataclass
class RequestSample:
    """One request as the client saw it. Times are perf_counter seconds (absolute)."""

    index: int
    phase: str = "measure"  # "warmup" | "measure"
    scheduled_s: float | None = None  # when the load shape wanted it sent (Poisson arrivals)
    sent_s: float = 0.0
    first_content_s: float | None = None
    content_times: list[float] = field(default_factory=list)
    end_s: float | None = None
    status_code: int | None = None
    output_tokens: int | None = None
    tokens_source: str | None = None  # "usage" (exact) | "tokenizer" | "chunks" (estimated)
    prompt_tokens: int | None = None
    max_tokens: int | None = None
    finish_reason: str | None = None
    text: str = ""
    error: str | None = None
    # the server's usage.completion_tokens when it was implausible against the stream and not used
    tokens_discrepancy: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft_s(self) -> float | None:
        """TTFT: send -> first chunk carrying content."""
        return None if self.first_content_s is None else self.first_content_s - self.sent_s

    @property
    def e2e_s(self) -> float | None:
        """E2E: send -> last SSE event of the stream received."""
        return None if self.end_s is None else self.end_s - self.sent_s

    @property
    def tpot_s(self) -> float | None:
        """TPOT: (E2E - TTFT) / (N - 1), N output tokens; undefined for N < 2."""
        ttft, e2e, n = self.ttft_s, self.e2e_s, self.output_tokens
        if ttft is None or e2e is None or n is None or n < 2:
            return None
        return (e2e - ttft) / (n - 1)

    @property
    def itl_s(self) -> list[float]:
        """ITL: gaps between consecutive content chunks (a chunk may carry several tokens)."""
        t = self.content_times
        return [b - a for a, b in itertools.pairwise(t)]

    @property
    def estimated(self) -> bool:
        return self.tokens_source not in (None, "usage")

    def to_json(self, origin: float = 0.0) -> dict[str, Any]:
        """Per-request record with times relative to `origin` (the run's start)."""

        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - origin, 7)

        return {
            "index": self.index,
            "phase": self.phase,
            "scheduled_s": rel(self.scheduled_s),
            "sent_s": rel(self.sent_s),
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "e2e_s": self.e2e_s,
            "itl_s": [round(x, 7) for x in self.itl_s],
            "output_tokens": self.output_tokens,
            "tokens_source": self.tokens_source,
            "prompt_tokens": self.prompt_tokens,
            "max_tokens": self.max_tokens,
            "finish_reason": self.finish_reason,
            "status_code": self.status_code,
            "error": self.error,
            "tokens_discrepancy": self.tokens_discrepancy,
        }


class _StreamError(Exception):
    pass


def _content_of(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        parts = [delta.get(k) for k in _CONTENT_KEYS]
        return "".join(p for p in parts if isinstance(p, str))
    text = choice.get("text")  # /v1/completions streams `text`, not `delta`
    return text if isinstance(text, str) else ""


# One SSE event (a token or a few) is bytes to kilobytes; an event growing past this is a server fault,
# failed with its reason at once instead of buffered until the request's timeout.
MAX_EVENT_BYTES = 8 << 20


class _SseParser:
    """Incremental SSE parser for OpenAI-style streams; feeds events into a sample.

    Lines end with CRLF, LF or a lone CR (all three are valid SSE, and a CRLF may be split between two
    reads). Each byte is scanned once, however the stream is cut into reads, so a large event costs its
    size, not its size times the number of reads; an event larger than MAX_EVENT_BYTES fails the stream."""

    def __init__(self, sample: RequestSample, on_chunk: Callable[[RequestSample, float, dict[str, Any]], None] | None) -> None:
        self.sample = sample
        self.on_chunk = on_chunk
        self.buf = bytearray()
        self._cr = False  # the last read ended in CR: an LF starting the next one belongs to it
        self.done = False
        self.events = 0
        self.parts: list[str] = []

    def feed(self, data: bytes, now: float) -> None:
        if self._cr:
            self._cr = False
            if data.startswith(b"\n"):
                data = data[1:]
        if b"\r" in data:
            self._cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = max(0, len(self.buf) - 1)  # what was buffered holds no blank line yet
        self.buf += data
        pos = 0
        while (cut := self.buf.find(b"\n\n", max(pos, start))) >= 0:
            self._event(bytes(self.buf[pos:cut]), now)
            pos = cut + 2
        if pos:
            del self.buf[:pos]
        if len(self.buf) > MAX_EVENT_BYTES:
            raise _StreamError(f"malformed SSE: an event larger than {MAX_EVENT_BYTES >> 20} MiB "
                               f"(starts {bytes(self.buf[:80])!r})")

    def _event(self, block: bytes, now: float) -> None:
        if block.startswith(b"data: ") and b"\n" not in block:
            self._data(block[6:], now)  # the common one-line event, without the general loop
            return
        data_lines = []
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue  # blank or comment (keep-alive)
            name, sep, value = line.partition(b":")
            if not sep:
                raise _StreamError(f"malformed SSE: line without field: {line[:80]!r}")
            if name == b"data":
                data_lines.append(value[1:] if value.startswith(b" ") else value)
        if data_lines:
            self._data(b"\n".join(data_lines), now)

    def _data(self, payload: bytes, now: float) -> None:
        self.events += 1
        self.sample.end_s = now
        if payload.strip() == b"[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise _StreamError(f"malformed SSE: data is not JSON: {payload[:80]!r}") from exc
        if not isinstance(obj, dict):
            raise _StreamError(f"malformed SSE: data is not an object: {payload[:80]!r}")
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise _StreamError(f"server error event: {keepable(str(msg)[:200])}")
        if self.on_chunk is not None:
            self.on_chunk(self.sample, now, obj)
        choices = obj.get("choices") or []
        if not isinstance(choices, list):
            raise _StreamError(f"malformed SSE: choices is a {type(choices).__name__}, not a list: {payload[:80]!r}")
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            text = _content_of(choice)
            if text:
                if self.sample.first_content_s is None:
                    self.sample.first_content_s = now
                self.sample.content_times.append(now)
                self.parts.append(text)
            if choice.get("finish_reason"):
                self.sample.finish_reason = keepable(str(choice["finish_reason"])[:40])
        usage = obj.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("completion_tokens"), int):
                self.sample.output_tokens = usage["completion_tokens"]
                self.sample.tokens_source = "usage"
            if isinstance(usage.get("prompt_tokens"), int):
                self.sample.prompt_tokens = usage["prompt_tokens"]


async def stream_request(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    index: int = 0,
    timeout_s: float = 60.0,
    count_tokens: Callable[[str], int] | None = None,
    on_chunk: Callable[[RequestSample, float, dict[str, Any]], None] | None = None,
    sample: RequestSample | None = None,
) -> RequestSample:
    """Send one streamed request and time it. Never raises for a server fault: the sample's
    `error` says what went wrong. `timeout_s` bounds the whole request (connect to last byte)."""
    s = sample or RequestSample(index=index)
    s.max_tokens = payload.get("max_tokens")
    parser = _SseParser(s, on_chunk)
    body = json.dumps(payload).encode()
    stamped = reused = False

    async def trace(event: str, info: dict[str, Any]) -> None:
        # "send" is when the request starts onto the network: opening a TCP connection when the
        # pool has none idle, else writing the request headers. Request building and pool waits
        # before that are the client's own overhead, not the server's latency.
        nonlocal stamped, reused
        if not stamped and event in ("connection.connect_tcp.started", "http11.send_request_headers.started"):
            s.sent_s, stamped = time.perf_counter(), True
            reused = event.startswith("http11")

    s.sent_s = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            request = client.build_request(
                "POST", url, content=body, headers={"content-type": "application/json"}, extensions={"trace": trace}
            )
            async with await_stream(client, request) as resp:
                s.status_code = resp.status_code
                # the header bytes' write itself, after h11 has serialised them; or, on a new
                # connection, its start after the rx pump was ready
                tx = request_tx(resp) if reused else connect_tx(resp)
                if tx is not None and tx >= s.sent_s:
                    s.sent_s = tx
                if resp.status_code != 200:
                    body = (await resp.aread())[:300].decode(errors="replace")
                    raise _StreamError(f"HTTP {resp.status_code}: {body}")
                ctype = resp.headers.get("content-type", "")
                if not ctype.startswith("text/event-stream"):
                    raise _StreamError(f"not an SSE stream (content-type {ctype!r})")
                async for raw in resp.aiter_raw():
                    parser.feed(raw, rx_time(resp))
        if parser.buf.strip():
            raise _StreamError(f"malformed SSE: unterminated event at end of stream: {bytes(parser.buf[:80])!r}")
        if not parser.done and s.finish_reason is None:
            raise _StreamError("stream cut: ended without finish_reason or [DONE]")
        if s.first_content_s is None:
            raise _StreamError("no content in stream")
    except _StreamError as exc:
        s.error = str(exc)
    except TimeoutError:
        s.error = f"timeout: no complete response within {timeout_s:g}s"
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:  # closed, or reset, mid-response
        s.error = f"stream cut: {exc}"
    except httpx.ConnectError as exc:
        s.error = f"connect failed: {exc}"
    except httpx.HTTPError as exc:
        s.error = f"{type(exc).__name__}: {exc}"
    except PumpGone as exc:
        s.error = str(exc)
    except OSError as exc:
        s.error = f"{type(exc).__name__}: {exc}"
    if s.end_s is None:
        s.end_s = time.perf_counter() if s.error else None
    s.text = keepable("".join(parser.parts))  # a lone surrogate from the JSON would fail every later write
    if s.ok and s.output_tokens is not None:
        s.tokens_discrepancy = usage_discrepancy(s, ignore_eos=bool(payload.get("ignore_eos")),
                                                 count_tokens=count_tokens)
        if s.tokens_discrepancy is not None:
            s.output_tokens = None  # counted from the stream below, as for a server that reports no usage
    if s.ok and s.output_tokens is None:
        if count_tokens is not None:
            s.output_tokens, s.tokens_source = count_tokens(s.text), "tokenizer"
        else:
            s.output_tokens, s.tokens_source = len(s.content_times), "chunks"
    return s


# Re-tokenising generated text gives about the count generated (within a few %); twice as many tokens
# as the text holds, plus a few special ones, is not a tokenizer difference.
_USAGE_TO_TEXT_MAX = 2.0
_USAGE_SLACK = 8


def usage_discrepancy(s: RequestSample, *, ignore_eos: bool = False,
                      count_tokens: Callable[[str], int] | None = None) -> str | None:
    """Why the server's `usage.completion_tokens` cannot be the number of tokens it streamed; None when
    it is plausible. TPOT divides by that count, so a server that over-reports passes TPOT gates it
    fails: 10**12 tokens in 30 chunks make a 1e-13 s TPOT.

    - more than `max_tokens` (the server was asked for at most that many);
    - fewer than the content chunks streamed (each chunk carries at least one token);
    - with a tokenizer, and EOS not ignored: more than twice the tokens the streamed text holds (with
      `ignore_eos` a server may generate end-of-sequence tokens that decode to nothing)."""
    n = s.output_tokens
    if n is None or s.tokens_source != "usage":
        return None
    chunks = len(s.content_times)
    if n < 0 or (n == 0 and chunks):
        return f"usage.completion_tokens={n} for a stream of {chunks} content chunks"
    if s.max_tokens is not None and n > s.max_tokens:
        return f"usage.completion_tokens={n} exceeds max_tokens={s.max_tokens} ({chunks} content chunks streamed)"
    if n < chunks:
        return f"usage.completion_tokens={n} is fewer than the {chunks} content chunks streamed"
    if count_tokens is not None and not ignore_eos:
        counted = count_tokens(s.text)
        if n > _USAGE_TO_TEXT_MAX * counted + _USAGE_SLACK:
            return f"usage.completion_tokens={n} for a streamed text of {counted} tokens"
    return None


class await_stream:
    """`async with` around `client.send(request, stream=True)` that always closes the response."""

    def __init__(self, client: httpx.AsyncClient, request: httpx.Request) -> None:
        self.client, self.request = client, request
        self.resp: httpx.Response | None = None

    async def __aenter__(self) -> httpx.Response:
        self.resp = await self.client.send(self.request, stream=True)
        return self.resp

    async def __aexit__(self, *exc: object) -> None:
        if self.resp is not None:
            await self.resp.aclose()


API_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def request_payload(api: str, model: str | None, prompt: str, max_tokens: int, *, ignore_eos: bool = False,
                    temperature: float = 0.0) -> dict[str, Any]:
    """A streamed request for `api` ("chat" or "completions"); without `model` for a server pinned to one
    model (it takes requests without a name)."""
    body = (completion_payload if api == "completions" else chat_payload)(
        model or "", prompt, max_tokens, ignore_eos=ignore_eos, temperature=temperature)
    if not model:
        body.pop("model")
    return body


def completion_payload(
    model: str, prompt: str, max_tokens: int, *, ignore_eos: bool = False, temperature: float = 0.0
) -> dict[str, Any]:
    """An OpenAI completions request (`prompt`, not `messages`): what a base model without a chat template
    is asked with. Streams; asks for usage where the server gives it (llama.cpp's stream carries none)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    return body


def chat_payload(
    model: str, prompt: str, max_tokens: int, *, ignore_eos: bool = False, temperature: float = 0.0
) -> dict[str, Any]:
    """An OpenAI chat request that streams and asks for usage in the final chunk."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM/SGLang extension; probed first, dropped when rejected
    return body
