"""Bench stage end to end against the metronome TEST DOUBLE; /metrics cross-check; decode floor."""

from __future__ import annotations

import json

import pytest

from pipeline.bench import floor, server_metrics
from pipeline.config import PipelineConfig
from pipeline.models import ImageRef, RunRecord, StageStatus
from pipeline.schemas import BenchDetails
from pipeline.stages.bench import bench_stage
from pipeline.workspace import Workspace
from tests.doubles.metronome import Running
from tests.stage_helpers import served_ctx

ARCH_METRICS = {
    *(f"ttft_{s}_s" for s in ("mean", "p50", "p90", "p99")),
    *(f"tpot_{s}_s" for s in ("mean", "p50", "p90", "p99")),
    "itl_p50_s", "itl_p99_s", "e2e_p50_s", "e2e_p99_s",
    "output_tokens_per_s", "requests_per_s", "error_rate", "goodput",
}


def _cfg(tmp_path, **bench) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"boot": {"model_dir": str(tmp_path / "no-model")},
         "bench": {"prompts": "synthetic", "requests": 12, "warmup": 2, "concurrency": 3, "max_tokens": 8,
                   "input_tokens": 16, "request_timeout_s": 5, **bench}}
    )


def test_bench_stage_metrics_samples_artifact_and_cross_check(tmp_path) -> None:
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef.parse("x/y:z"))
    with Running("--ttft-ms", "40", "--gap-ms", "10") as m:
        res = bench_stage(run, served_ctx(_cfg(tmp_path, model_bytes=10**9, gpu_bandwidth_gbps=2000.0), ws, m.base_url, "metronome"))
    assert res.status is StageStatus.OK, res.reason
    assert ARCH_METRICS <= set(res.metrics)
    assert set(res.samples) == {"ttft_s", "tpot_s", "e2e_s"} and len(res.samples["ttft_s"]) == 12
    assert res.metrics["error_rate"] == 0 and res.metrics["goodput"] == 1.0
    assert res.metrics["tpot_p50_s"] == pytest.approx(0.010, abs=0.004)
    lines = (ws.run_dir(run.run_id) / "bench-samples.jsonl").read_text().splitlines()
    assert len(lines) == 14 and sum(json.loads(x)["phase"] == "warmup" for x in lines) == 2
    d = res.details_as(BenchDetails)
    assert d is not None
    assert d.ignore_eos == "sent" and d.ignore_eos_honoured == 1.0  # the metronome always emits max_tokens
    xc = d.server_metrics
    assert xc["engine"] == "vllm" and xc["server_ttft_count"] == 12  # the warm-up is outside the window
    assert xc["server_ttft_mean_s"] == pytest.approx(0.040, abs=0.01)
    assert 0 <= res.metrics["client_minus_server_ttft_s"] < 0.05
    assert d.floor is not None and d.floor["decode_floor_s"] == pytest.approx(0.0005) and res.metrics["mbu"] > 0


def test_tpot_below_the_decode_floor_is_a_broken_measurement(tmp_path) -> None:
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef.parse("x/y:z"))
    with Running("--ttft-ms", "5", "--gap-ms", "2") as m:
        res = bench_stage(run, served_ctx(_cfg(tmp_path, requests=4, model_bytes=70 * 10**9, gpu_bandwidth_gbps=3350.0), ws, m.base_url, "metronome"))
    assert res.status is StageStatus.FAILED and "decode floor" in res.reason
    assert res.details.floor["below_floor"] is True


def test_server_dying_mid_bench_fails_the_stage_with_every_request_counted(tmp_path) -> None:
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef.parse("x/y:z"))
    with Running("--ttft-ms", "10", "--gap-ms", "5", "--die-after-requests", "8") as m:
        res = bench_stage(run, served_ctx(_cfg(tmp_path), ws, m.base_url, "metronome"))
    assert res.status is StageStatus.FAILED and "stopped accepting connections" in res.reason
    lines = (ws.run_dir(run.run_id) / "bench-samples.jsonl").read_text().splitlines()
    assert len(lines) == 14
    assert 0 < res.metrics["error_rate"] < 1


def test_prometheus_parse_and_engine_names() -> None:
    text = (
        "# HELP x\n"
        'vllm:time_to_first_token_seconds_sum{model_name="a"} 1.5\n'
        'vllm:time_to_first_token_seconds_count{model_name="a"} 3\n'
        'vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="a"} 1\n'
        'vllm:gpu_cache_usage_perc{model_name="a"} 0.25\n'
    )
    snap = server_metrics.parse(text)
    assert snap["vllm:time_to_first_token_seconds_sum"] == 1.5
    engine, names = server_metrics.detect(snap)
    assert engine == "vllm" and names["kv_cache"] == "vllm:gpu_cache_usage_perc"
    assert server_metrics.detect(server_metrics.parse("sglang:num_queue_reqs 2\n"))[0] == "sglang"
    assert server_metrics.detect(server_metrics.parse("tgi_queue_size 0\n"))[0] == "tgi"
    before = {"vllm:time_to_first_token_seconds_sum": 1.0, "vllm:time_to_first_token_seconds_count": 2}
    xc = server_metrics.cross_check(before, snap, {"ttft": 0.3}, {"kv_cache": [0.1, 0.3]})
    assert xc["server_ttft_mean_s"] == pytest.approx(0.5) and xc["client_minus_server_ttft_s"] == pytest.approx(-0.2)
    assert xc["kv_cache_max"] == 0.3


def test_bandwidth_table_and_floor(tmp_path) -> None:
    assert floor.bandwidth_for("NVIDIA H100 80GB HBM3") == 3350.0
    assert floor.bandwidth_for("NVIDIA H100 PCIe") == 2000.0
    assert floor.bandwidth_for("NVIDIA H200") == 4800.0
    assert floor.bandwidth_for("Some Future GPU") is None
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / "config.json").write_text("{}")
    assert floor.model_bytes(tmp_path) == 1000
    chk = floor.floor_check(0.02, 16 * 10**9, 2000.0)
    assert chk["decode_floor_s"] == pytest.approx(0.008) and chk["mbu"] == pytest.approx(0.4)
    assert not chk["below_floor"] and floor.floor_check(0.005, 16 * 10**9, 2000.0)["below_floor"]


def test_ground_truth_prompts_are_the_default(tmp_path) -> None:
    from tests.conftest import REPO

    cfg = _cfg(tmp_path, prompts="ground_truth", requests=3, warmup=0)
    cfg.eval.ground_truth = str(REPO / "ground_truth" / "v1")
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef.parse("x/y:z"))
    with Running("--ttft-ms", "5", "--gap-ms", "2") as m:
        res = bench_stage(run, served_ctx(cfg, ws, m.base_url, "metronome"))
    assert res.status is StageStatus.OK and res.details.prompts == "ground_truth:v1"
    assert res.details.ignore_eos == "not requested"
