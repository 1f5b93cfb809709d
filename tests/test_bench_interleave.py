"""Same-run baseline: two real streaming servers (the metronome TEST DOUBLE, tests/doubles/metronome.py,
an OpenAI-compatible SSE server with known timing) measured in alternating blocks."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pipeline.bench.client import chat_payload
from pipeline.bench.interleave import interleave
from pipeline.bench.load import Target
from pipeline.gates.engine import evaluate
from pipeline.gates.policy import policy_from_dict
from pipeline.metrics import same_run_series
from pipeline.models import ImageRef, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.gate import GateStatus
from tests.doubles.metronome import Running


def test_alternating_blocks_against_two_servers() -> None:
    with Running("--ttft-ms", "60", "--gap-ms", "2", "--model-name", "cand") as cand, \
            Running("--ttft-ms", "15", "--gap-ms", "2", "--model-name", "base") as base:
        payloads = [chat_payload("cand", f"prompt {i}", 4) for i in range(24)]
        got = asyncio.run(interleave(
            Target(cand.base_url), Target(base.base_url), payloads, concurrency=2, block_size=5,
            warmup=[chat_payload("cand", "warm", 2)], baseline_model="base", deadline_s=60,
        ))
    assert [s.index for s in got.candidate] == list(range(24)) == [s.index for s in got.baseline]
    assert all(s.ok for s in got.candidate + got.baseline), [s.error for s in got.candidate + got.baseline]
    # A B | B A | A B | B A | A B: five blocks of prompts, each sent to both sides, in ABBA order
    assert [b.side[0] for b in got.blocks] == list("cbbccbbccb")
    assert [(b.first, b.last) for b in got.blocks[::2]] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 24)]
    assert all(a.ended_s <= b.started_s for a, b in zip(got.blocks, got.blocks[1:], strict=False))
    assert len(got.warmup["candidate"]) == 1 and len(got.warmup["baseline"]) == 1
    # each side measured its own server: 60 ms vs 15 ms to the first token
    cand_ttft = np.median(got.series("candidate")["ttft_s"])
    base_ttft = np.median(got.series("baseline")["ttft_s"])
    assert 0.055 < cand_ttft < 0.2 and 0.012 < base_ttft < 0.055
    samples = got.samples()
    assert set(samples) == {"ttft_s", "tpot_s", "e2e_s", same_run_series("ttft_s"), same_run_series("tpot_s"),
                            same_run_series("e2e_s")}
    m = got.metrics("candidate")
    assert m["error_rate"] == 0.0 and m["requests_per_s"] == pytest.approx(24 / got.active_s("candidate"))
    # fed to the gate engine, the interleaved baseline decides the latency comparison (no stored run at all)
    bench = StageResult(stage=Stage.BENCH, status=StageStatus.OK, samples=samples,
                        metrics={"ttft_p50_s": float(np.percentile(samples["ttft_s"], 50))})
    run = RunRecord(image=ImageRef(repository="r"), stages={"bench": bench})
    pol = policy_from_dict({"gates": [{"name": "ttft", "source": "bench.ttft_p50_s", "margin": 0.1}], "min_n": 20},
                           sections=())
    v = evaluate(pol, run, None, sections=(), calibration=lambda _s: None).verdicts[0]
    assert v.status is GateStatus.FAIL and v.details.baseline_samples == "same_run" and v.difference > 1.0


def test_deadline_turns_unsent_requests_into_errors() -> None:
    with Running("--ttft-ms", "200", "--gap-ms", "1") as cand, Running("--ttft-ms", "200", "--gap-ms", "1") as base:
        payloads = [chat_payload("metronome", f"p{i}", 2) for i in range(8)]
        got = asyncio.run(interleave(Target(cand.base_url), Target(base.base_url), payloads, concurrency=1,
                                     block_size=2, deadline_s=0.7))
    assert len(got.candidate) == 8 and len(got.baseline) == 8  # nothing dropped
    errors = [s.error for s in got.candidate + got.baseline if s.error]
    # in flight when the deadline passed: cut by its own timeout; not yet sent: "not sent: run deadline"
    assert errors and all("deadline" in e or e.startswith("timeout") for e in errors)
    assert sum("not sent: run deadline" in e for e in errors) >= 8
    assert got.metrics("candidate")["error_rate"] > 0


def test_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError):
        asyncio.run(interleave(Target("http://127.0.0.1:9"), Target("http://127.0.0.1:9"), [], concurrency=0,
                               block_size=1))
