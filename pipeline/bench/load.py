"""Load shapes: warm-up, fixed concurrency (closed loop), Poisson arrivals (open loop), and a sweep
of concurrency levels up to saturation.

Every shape returns one `RequestSample` per request it was asked to send, in index order. A run
deadline bounds the whole shape: requests still unsent when it passes become errors
("not sent: run deadline"), in-flight ones are cut by their own timeout, so a run never hangs and
never shrinks its denominator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
import numpy as np

from pipeline.bench import rx_stamp
from pipeline.bench.client import RequestSample, stream_request
from pipeline.bench.rx_stamp import RxStats, StampedTransport
from pipeline.bench.stats import Slo, summarize

Payload = dict[str, Any]


@dataclass
class Target:
    """Where requests go and how each one is bounded."""

    base_url: str
    path: str = "/v1/chat/completions"
    timeout_s: float = 60.0
    count_tokens: Callable[[str], int] | None = None
    on_chunk: Callable[[RequestSample, float, dict[str, Any]], None] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    kernel_stamps: bool = True  # plain-HTTP reads stamped by the kernel (see rx_stamp)
    rx: RxStats = field(default_factory=RxStats, repr=False, compare=False)
    _ssl: Any = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.path

    def pool(self) -> ClientPool:
        return ClientPool(self)

    def client(self, connections: int) -> httpx.AsyncClient:
        # trust_env=False: an HTTP(S)_PROXY from the environment would sit between us and the
        # server and be measured as the server.
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        timeout = httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))
        if self._ssl is None:  # building one costs ~40 ms; one per Target, shared by every client
            self._ssl = httpx.create_ssl_context()
        if self.kernel_stamps and rx_stamp.AVAILABLE and self.base_url.startswith("http://"):
            transport = StampedTransport(limits=limits, stats=self.rx, ssl_context=self._ssl)
            return httpx.AsyncClient(transport=transport, timeout=timeout, headers=self.headers, trust_env=False)
        return httpx.AsyncClient(verify=self._ssl, timeout=timeout, limits=limits, headers=self.headers,
                                 trust_env=False)


class ClientPool:
    """Single-connection httpx clients, one per in-flight request, reused across requests.

    One shared client with N connections costs O(N) per request in httpcore's pool bookkeeping
    (every request start/end scans every connection); at 128 streams that bookkeeping, not the
    server, dominated the measured latency. A client per stream keeps each scan O(1)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.free: list[httpx.AsyncClient] = []
        self.all: list[httpx.AsyncClient] = []

    def acquire(self) -> httpx.AsyncClient:
        if self.free:
            return self.free.pop()
        c = self.target.client(1)
        self.all.append(c)
        return c

    def release(self, client: httpx.AsyncClient) -> None:
        self.free.append(client)

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.all), return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _not_sent(index: int, phase: str, why: str) -> RequestSample:
    now = time.perf_counter()
    return RequestSample(index=index, phase=phase, sent_s=now, end_s=now, error=f"not sent: {why}")


async def _one(
    client: httpx.AsyncClient, target: Target, payload: Payload, sample: RequestSample, deadline: float
) -> RequestSample:
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        sample.sent_s = sample.end_s = time.perf_counter()
        sample.error = "not sent: run deadline reached"
        return sample
    return await stream_request(
        client,
        target.url,
        payload,
        timeout_s=min(target.timeout_s, remaining),
        count_tokens=target.count_tokens,
        on_chunk=target.on_chunk,
        sample=sample,
    )


async def fixed_concurrency(
    target: Target,
    payloads: Sequence[Payload],
    concurrency: int,
    *,
    warmup: Sequence[Payload] = (),
    deadline_s: float = 600.0,
    pool: ClientPool | None = None,
) -> list[RequestSample]:
    """Closed loop: `concurrency` workers each send the next request as soon as theirs ends.
    Warm-up requests run first at the same concurrency (opening the connections the measured
    requests reuse) and are tagged phase="warmup"."""
    deadline = time.perf_counter() + deadline_s
    own = pool is None
    pool = pool or target.pool()
    try:
        out: list[RequestSample] = []
        for phase, batch in (("warmup", warmup), ("measure", payloads)):
            results: list[RequestSample | None] = [None] * len(batch)
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(len(batch)):
                queue.put_nowait(i)

            async def worker(
                queue: asyncio.Queue[int], batch: Sequence[Payload], results: list, phase: str
            ) -> None:
                client = pool.acquire()
                try:
                    while True:
                        try:
                            i = queue.get_nowait()
                        except asyncio.QueueEmpty:
                            return
                        sample = RequestSample(index=i, phase=phase)
                        results[i] = await _one(client, target, batch[i], sample, deadline)
                finally:
                    pool.release(client)

            n_workers = max(1, min(concurrency, len(batch)))
            await asyncio.gather(*(worker(queue, batch, results, phase) for _ in range(n_workers)))
            out += [r or _not_sent(i, phase, "lost") for i, r in enumerate(results)]
        return out
    finally:
        if own:
            await pool.aclose()


def poisson_schedule(n: int, rate: float, seed: int = 0) -> list[float]:
    """Arrival offsets (s) of a Poisson process at `rate` req/s: cumulative exponential gaps."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    return [float(x) for x in np.cumsum(gaps)]


async def poisson(
    target: Target,
    payloads: Sequence[Payload],
    rate: float,
    *,
    seed: int = 0,
    max_concurrency: int | None = None,
    warmup: Sequence[Payload] = (),
    deadline_s: float = 600.0,
) -> list[RequestSample]:
    """Open loop: request i is due at a Poisson arrival time whether or not earlier ones ended.
    `scheduled_s` keeps the due time; a late send (client or `max_concurrency` backlog) shows as
    sent_s - scheduled_s, and TTFT is still measured from the actual send."""
    async with target.pool() as pool:
        out = await fixed_concurrency(target, [], 1, warmup=warmup, deadline_s=deadline_s, pool=pool)
        deadline = time.perf_counter() + deadline_s
        gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        start = time.perf_counter()
        offsets = poisson_schedule(len(payloads), rate, seed)

        async def send(i: int, sample: RequestSample) -> RequestSample:
            client = pool.acquire()
            try:
                return await _one(client, target, payloads[i], sample, deadline)
            finally:
                pool.release(client)

        async def launch(i: int) -> RequestSample:
            sample = RequestSample(index=i, phase="measure", scheduled_s=start + offsets[i])
            if gate is None:
                return await send(i, sample)
            async with gate:
                return await send(i, sample)

        tasks = []
        for i, off in enumerate(offsets):
            delay = start + off - time.perf_counter()
            if start + off > deadline:
                break
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(launch(i)))
        done = list(await asyncio.gather(*tasks))
        done += [_not_sent(i, "measure", "run deadline reached") for i in range(len(tasks), len(payloads))]
        return out + done


@dataclass
class SweepLevel:
    concurrency: int
    metrics: dict[str, float | None]
    samples: list[RequestSample]


async def sweep(
    target: Target,
    make_payloads: Callable[[int], Sequence[Payload]],
    levels: Sequence[int],
    *,
    slo: Slo | None = None,
    min_gain: float = 0.10,
    max_error_rate: float = 0.05,
    deadline_s: float = 600.0,
) -> tuple[list[SweepLevel], int | None]:
    """Fixed-concurrency runs at rising `levels` until saturation: output tokens/s grows by less
    than `min_gain` over the previous level, or the error rate passes `max_error_rate`.
    Returns the levels run and the saturation concurrency (the last level that still paid off)."""
    deadline = time.perf_counter() + deadline_s
    ran: list[SweepLevel] = []
    saturated: int | None = None
    for c in levels:
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        samples = await fixed_concurrency(target, make_payloads(c), c, deadline_s=left)
        m = summarize(samples, slo)
        ran.append(SweepLevel(c, m, samples))
        if (m.get("error_rate") or 0) > max_error_rate:
            saturated = ran[-2].concurrency if len(ran) > 1 else c
            break
        if len(ran) > 1:
            prev = ran[-2].metrics.get("output_tokens_per_s") or 0.0
            cur = m.get("output_tokens_per_s") or 0.0
            if prev > 0 and cur < prev * (1 + min_gain):
                saturated = ran[-2].concurrency
                break
    return ran, saturated
