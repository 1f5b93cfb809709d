"""Response collection: every ground-truth item sent to the server under test, every answer kept.

Each item is one streamed `/v1/chat/completions` request (greedy, `max_tokens` bounded; `api="completions"`
sends the question as a `/v1/completions` prompt, for a base model without a chat template) made by the
bench client (`pipeline.bench.client.stream_request`), so an item's time to first token and end-to-end
latency have the same definitions as the bench stage's (`RequestSample.ttft_s`, `.e2e_s`); reads are
stamped in user space here, since the eval gates on answers, not on milliseconds.

Nothing hangs:
- every request has a wall-clock deadline, `timeout_s`, from connect to the last byte: a server that
  keeps a stream open with SSE keep-alive comments, or drips content forever, fails that item with
  "timeout: no complete response within ...";
- the whole collection has a deadline, `deadline_s`: when it passes, requests still running are
  cancelled and their items fail with the reason, and `CollectionStats.deadline_hit` says so
  (`pipeline.schemas.eval.CollectionStats`, the eval stage's payload type).

Transient failures (connection errors, timeouts, HTTP 408/409/425/429/5xx, a stream that breaks off
or reports a server error) are retried with exponential back-off, at most `retries` times per item
and at most `budget` times for the whole collection: a server that is down must not turn a 2-minute
eval into a 20-minute one. An item that still fails keeps its reason in `ItemResult.error`; nothing
is dropped.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from evals.ground_truth import GroundTruthItem
from pipeline.bench.client import API_PATHS, RequestSample, request_payload, stream_request
from pipeline.errors import BadInput
from pipeline.models import ItemResult
from pipeline.progress import NullReporter, Reporter
from pipeline.redact import redact_text
from pipeline.schemas.eval import CollectionStats  # the eval stage's payload type

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Failures of the stream itself that another attempt may not repeat (the bench client's reasons).
_RETRYABLE_PREFIXES = ("timeout:", "stream cut", "connect failed", "server error event", "ConnectTimeout",
                       "ReadTimeout", "WriteTimeout", "PoolTimeout", "rx pump")
# A finished stream that carried no content is an empty answer (a failed one for every scorer), not a
# transport failure.
_NO_CONTENT = "no content in stream"
DEFAULT_DEADLINE_S = 1800.0


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


def retryable(sample: RequestSample) -> bool:
    """Whether another attempt may succeed where `sample` failed."""
    if sample.status_code is not None and sample.status_code != 200:
        return sample.status_code in RETRYABLE_STATUS
    return (sample.error or "").startswith(_RETRYABLE_PREFIXES)


def _blank(item: GroundTruthItem) -> ItemResult:
    return ItemResult(
        item_id=item.id,
        question=item.question,
        reference=item.reference,
        expected_behaviour=item.expected_behaviour,
        category=item.category,
        contexts=list(item.contexts),
        answer_kind=item.answer_kind,
        facts=list(item.facts),
    )


def _record(res: ItemResult, s: RequestSample) -> None:
    if s.ok or s.error == _NO_CONTENT:
        res.response, res.ttft_s, res.latency_s, res.error = s.text, s.ttft_s, s.e2e_s, None
    else:
        res.response, res.ttft_s, res.latency_s = None, None, None
        res.error = redact_text(s.error or "failed")


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
    deadline_s: float | None = DEFAULT_DEADLINE_S,
    api: str = "chat",
    reporter: Reporter | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[list[ItemResult], CollectionStats]:
    """Ask the server every item's question; results come back in the items' order."""
    reporter = reporter or NullReporter()
    if api not in API_PATHS:
        raise BadInput(f"unknown api {api!r}; expected one of {', '.join(API_PATHS)}", where="boot.api")
    url = base_url.rstrip("/") + API_PATHS[api]
    budget_ = RetryBudget(default_budget(len(items), retries) if budget is None else budget)
    sem = asyncio.Semaphore(max(1, concurrency))
    results = [_blank(it) for it in items]
    done = [False] * len(results)
    reporter.total(len(items), "collecting")
    t0 = time.perf_counter()
    end = None if deadline_s is None else t0 + deadline_s
    limits = httpx.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency))
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))

    async def one(i: int, client: httpx.AsyncClient) -> None:
        res = results[i]
        attempt = 0
        async with sem:
            while True:
                # a request never outlives the collection's deadline
                left = timeout_s if end is None else min(timeout_s, max(0.001, end - time.perf_counter()))
                payload = request_payload(api, model, res.question, max_tokens)
                s = await stream_request(client, url, payload, timeout_s=left)
                _record(res, s)
                if res.error is None or not retryable(s):
                    break
                if attempt >= retries:
                    res.error += f" (after {attempt} retries)"
                    break
                if not await budget_.take():
                    res.error += " (retry budget exhausted)"
                    break
                attempt += 1
                await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        done[i] = True
        reporter.advance()

    async with httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport, trust_env=False) as client:
        tasks = [asyncio.create_task(one(i, client)) for i in range(len(results))]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=deadline_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
    unfinished = [i for i, d in enumerate(done) if not d]
    for i in unfinished:
        res = results[i]
        res.response, res.ttft_s, res.latency_s = None, None, None
        res.error = f"eval deadline of {deadline_s:g}s passed before this item finished" + (
            f" (last error: {res.error})" if res.error else ""
        )
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
        deadline_s=deadline_s,
        deadline_hit=bool(unfinished),
    )
    return results, stats
