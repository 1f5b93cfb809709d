"""Response collection: every ground-truth item sent to the server under test, every answer kept.

Each item is one streamed `/v1/chat/completions` request (greedy, `max_tokens` bounded), so time to
first token and end-to-end latency are measured per item. Concurrency is bounded by a semaphore.
Transient failures (connection errors, timeouts, HTTP 429/5xx, a stream that breaks off) are
retried with exponential back-off, at most `retries` times per item and at most `budget` times for
the whole collection: a server that is down must not turn a 2-minute eval into a 20-minute one.
An item that still fails keeps its reason in `ItemResult.error`; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel

from evals.ground_truth import GroundTruthItem
from evals.prompts import chat_messages
from pipeline.models import ItemResult
from pipeline.progress import NullReporter, Reporter
from pipeline.redact import redact_text

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class CollectionStats(BaseModel):
    """What collection did; stored in the eval stage's details."""

    endpoint: str
    model: str
    n_items: int
    failed: int
    retries_used: int
    retry_budget: int
    budget_exhausted: bool
    concurrency: int
    max_tokens: int
    timeout_s: float
    duration_s: float


class _Retryable(Exception):
    """A failure worth another attempt (the server may recover)."""


class _Fatal(Exception):
    """A failure another attempt will not fix (HTTP 4xx, a malformed stream)."""


@dataclass
class RetryBudget:
    """Retries left for the whole collection, shared by all items."""

    total: int
    used: int = 0
    denied: int = 0  # retries wanted after the budget ran out
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def take(self) -> bool:
        async with self._lock:
            if self.used >= self.total:
                self.denied += 1
                return False
            self.used += 1
            return True

    @property
    def exhausted(self) -> bool:
        return self.denied > 0


def default_budget(n_items: int, retries: int) -> int:
    """Enough for a few flaky items, not for retrying everything against a dead server."""
    return max(retries, math.ceil(0.1 * n_items) * max(1, retries))


async def _stream_one(
    client: httpx.AsyncClient, url: str, model: str, question: str, max_tokens: int
) -> tuple[str, float | None, float]:
    """One streamed completion: (text, ttft_s, latency_s)."""
    body = {
        "model": model,
        "messages": chat_messages(question),
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    finished = False
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                detail = (await resp.aread()).decode(errors="replace")[:200]
                msg = f"HTTP {resp.status_code}: {detail}"
                raise (_Retryable if resp.status_code in RETRYABLE_STATUS else _Fatal)(msg)
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    finished = True
                    break
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise _Fatal(f"malformed stream chunk: {data[:120]!r}") from exc
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise _Retryable(f"server error in stream: {str(chunk['error'])[:200]}")
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        parts.append(text)
                    if choice.get("finish_reason"):
                        finished = True
    except httpx.TimeoutException as exc:
        raise _Retryable(f"timeout: {type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise _Retryable(f"connection error: {type(exc).__name__}: {exc}") from exc
    if not finished:
        # Some servers omit [DONE]; a stream with neither [DONE] nor a finish_reason was cut off.
        raise _Retryable("stream ended before the completion finished")
    return "".join(parts), ttft, time.perf_counter() - t0


def _blank(item: GroundTruthItem) -> ItemResult:
    return ItemResult(
        item_id=item.id,
        question=item.question,
        reference=item.reference,
        expected_behaviour=item.expected_behaviour,
        category=item.category,
        contexts=list(item.contexts),
    )


async def collect(
    items: Sequence[GroundTruthItem],
    base_url: str,
    model: str,
    *,
    concurrency: int = 4,
    max_tokens: int = 64,
    timeout_s: float = 60.0,
    retries: int = 2,
    budget: int | None = None,
    backoff_s: float = 0.5,
    reporter: Reporter | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[list[ItemResult], CollectionStats]:
    """Ask the server every item's question; results come back in the items' order."""
    reporter = reporter or NullReporter()
    url = base_url.rstrip("/") + "/v1/chat/completions"
    budget_ = RetryBudget(default_budget(len(items), retries) if budget is None else budget)
    sem = asyncio.Semaphore(max(1, concurrency))
    results = [_blank(it) for it in items]
    reporter.total(len(items), "collecting")
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))

    async def one(res: ItemResult) -> None:
        attempt = 0
        async with sem:
            while True:
                try:
                    res.response, res.ttft_s, res.latency_s = await _stream_one(
                        client, url, model, res.question, max_tokens
                    )
                    res.error = None
                    break
                except _Fatal as exc:
                    res.error = redact_text(str(exc))
                    break
                except _Retryable as exc:
                    res.error = redact_text(str(exc))
                    if attempt >= retries:
                        res.error += f" (after {attempt} retries)"
                        break
                    if not await budget_.take():
                        res.error += " (retry budget exhausted)"
                        break
                    attempt += 1
                    await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        reporter.advance()

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False) as client:
        await asyncio.gather(*(one(r) for r in results))
    stats = CollectionStats(
        endpoint=redact_text(url),
        model=model,
        n_items=len(items),
        failed=sum(1 for r in results if r.error),
        retries_used=budget_.used,
        retry_budget=budget_.total,
        budget_exhausted=budget_.exhausted,
        concurrency=concurrency,
        max_tokens=max_tokens,
        timeout_s=timeout_s,
        duration_s=round(time.perf_counter() - t0, 3),
    )
    return results, stats
