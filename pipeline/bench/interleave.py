"""Same-run baseline: measure the baseline release next to the candidate, in alternating blocks.

Latency compared against samples stored weeks ago carries every change of the machine since (other
tenants, thermal state, a kernel update); measured now, on the same runner, both releases see the
same machine. This is the idea of Kayenta's canary analysis (compare against a baseline deployed
alongside, not against history). The two servers get the same prompts with the same load shape
(fixed concurrency) in blocks that alternate A B B A A B ..., so drift that grows over the run hits
both equally (an ABBA order cancels a linear trend within every pair of blocks).

The baseline's series are recorded in the candidate's bench result under `baseline_<series>`
(`pipeline.metrics.same_run_series`), where the gate engine finds them and compares without the
stored-baseline drift allowance.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pipeline.bench.client import RequestSample
from pipeline.bench.load import Payload, Target, fixed_concurrency
from pipeline.bench.stats import Slo, summarize
from pipeline.metrics import same_run_series

Side = Literal["candidate", "baseline"]


@dataclass(frozen=True)
class Block:
    index: int
    side: Side
    first: int  # payload indices [first, last)
    last: int
    started_s: float  # perf_counter
    ended_s: float

    @property
    def duration_s(self) -> float:
        return self.ended_s - self.started_s


@dataclass
class Interleaved:
    """Both sides' measured requests (one sample per payload each, in payload order) and the blocks."""

    candidate: list[RequestSample]
    baseline: list[RequestSample]
    blocks: list[Block] = field(default_factory=list)
    warmup: dict[Side, list[RequestSample]] = field(default_factory=dict)

    def side(self, side: Side) -> list[RequestSample]:
        return self.candidate if side == "candidate" else self.baseline

    def series(self, side: Side) -> dict[str, list[float]]:
        """TTFT, TPOT and E2E of the side's successful requests (the bench stage's sample series)."""
        ok = [s for s in self.side(side) if s.ok]
        return {
            "ttft_s": [s.ttft_s for s in ok if s.ttft_s is not None],
            "tpot_s": [s.tpot_s for s in ok if s.tpot_s is not None],
            "e2e_s": [s.e2e_s for s in ok if s.e2e_s is not None],
        }

    def samples(self) -> dict[str, list[float]]:
        """The candidate's series and the baseline's under `baseline_<name>`, for `StageResult.samples`."""
        out = dict(self.series("candidate"))
        for name, values in self.series("baseline").items():
            out[same_run_series(name)] = values
        return out

    def active_s(self, side: Side) -> float:
        """Wall time the side was being measured (its blocks only)."""
        return sum(b.duration_s for b in self.blocks if b.side == side)

    def metrics(self, side: Side, slo: Slo | None = None) -> dict[str, float | None]:
        """`bench.stats.summarize` of one side, with throughput over that side's own blocks (a wall
        clock across both sides would halve it)."""
        samples = self.side(side)
        m = summarize(samples, slo)
        ok = [s for s in samples if s.ok]
        active = self.active_s(side)
        if ok and active > 0:
            m["output_tokens_per_s"] = sum(s.output_tokens or 0 for s in ok) / active
            m["requests_per_s"] = len(ok) / active
        return m


def _with_model(payloads: Sequence[Payload], model: str | None) -> list[Payload]:
    if model is None:
        return list(payloads)
    out = []
    for p in payloads:
        q = copy.deepcopy(p)
        q["model"] = model
        out.append(q)
    return out


def _not_sent(index: int) -> RequestSample:
    now = time.perf_counter()
    return RequestSample(index=index, phase="measure", sent_s=now, end_s=now, error="not sent: run deadline reached")


async def interleave(
    candidate: Target,
    baseline: Target,
    payloads: Sequence[Payload],
    *,
    concurrency: int,
    block_size: int,
    warmup: Sequence[Payload] = (),
    baseline_model: str | None = None,
    deadline_s: float = 600.0,
) -> Interleaved:
    """Send every payload to both targets in alternating blocks of `block_size` at `concurrency`.

    `baseline_model` replaces the payloads' "model" for the baseline server (each server names its
    own model). Both sides get `warmup` first. A run deadline bounds the whole exchange: requests
    still unsent when it passes are samples with an error, never dropped."""
    if concurrency < 1 or block_size < 1:
        raise ValueError("concurrency and block_size must be >= 1")
    base_payloads = _with_model(payloads, baseline_model)
    deadline = time.perf_counter() + deadline_s
    out = Interleaved(candidate=[], baseline=[])
    async with candidate.pool() as cand_pool, baseline.pool() as base_pool:
        for side, target, pool, batch in (
            ("candidate", candidate, cand_pool, list(warmup)),
            ("baseline", baseline, base_pool, _with_model(warmup, baseline_model)),
        ):
            left = deadline - time.perf_counter()
            out.warmup[side] = (  # type: ignore[index]
                await fixed_concurrency(target, [], concurrency, warmup=batch, deadline_s=max(left, 0.0), pool=pool)
                if batch and left > 0 else []
            )
        n_blocks = (len(payloads) + block_size - 1) // block_size
        for k in range(n_blocks):
            first, last = k * block_size, min(len(payloads), (k + 1) * block_size)
            order: tuple[Side, Side] = ("candidate", "baseline") if k % 2 == 0 else ("baseline", "candidate")
            for side in order:
                target, pool, source = (
                    (candidate, cand_pool, payloads) if side == "candidate" else (baseline, base_pool, base_payloads)
                )
                left = deadline - time.perf_counter()
                started = time.perf_counter()
                if left <= 0:
                    got = [_not_sent(i) for i in range(first, last)]
                else:
                    got = await fixed_concurrency(target, source[first:last], concurrency, deadline_s=left, pool=pool)
                    for s in got:
                        s.index += first
                out.blocks.append(Block(len(out.blocks), side, first, last, started, time.perf_counter()))
                out.side(side).extend(got)
    return out
