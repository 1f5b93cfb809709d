"""Boot stage on the real Docker Engine with a small image built FROM the local base image that runs
the metronome TEST DOUBLE (tests/boot_image.py): milestones, repetitions, never-ready, death, logs,
read-only model mount, the server handle for bench, and the CLI's exit codes."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import PipelineConfig
from pipeline.errors import InfraError
from pipeline.models import ImageRef, RunRecord, StageStatus
from pipeline.stages.bench import bench_stage
from pipeline.stages.boot import MODEL_MOUNT, boot_stage, booted_server
from pipeline.workspace import Workspace
from tests.boot_image import build_metronome_image

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def metronome_image(local_stack, docker_engine):
    tag = build_metronome_image(docker_engine, local_stack.base_ref)
    yield tag
    docker_engine.images.remove(tag, force=True)


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def _cfg(model_dir, **boot) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"boot": {"model_dir": str(model_dir), "ready_timeout_s": 20, "probe_interval_s": 0.1,
                  "readiness_lag_tolerance_s": 2, **boot},
         "bench": {"prompts": "synthetic", "requests": 12, "warmup": 1, "concurrency": 3, "max_tokens": 6,
                   "input_tokens": 8, "request_timeout_s": 5}}
    )


def _ours(docker_engine, run: RunRecord) -> list:
    return docker_engine.containers.list(all=True, filters={"label": f"llmgate.run={run.run_id}"})


def test_boot_milestones_repetitions_logs_and_cleanup(metronome_image, model_dir, tmp_path, docker_engine) -> None:
    ws, run = Workspace(tmp_path / "ws"), RunRecord(image=ImageRef.parse(metronome_image))
    cfg = _cfg(model_dir, repetitions=2, env={"METRONOME_LISTEN_AFTER_S": "0.3", "METRONOME_COMPLETE_AFTER_S": "1.0"})
    res = boot_stage(run, cfg, ws, image=metronome_image)
    assert res.status is StageStatus.OK, res.reason
    m = res.metrics
    assert m["port_open_s"] <= m["health_ok_s"] <= m["first_completion_s"] + 0.2
    assert m["load_time_s"] == m["first_completion_s"] >= 1.0
    assert len(res.samples["load_time_s"]) == 2 and m["load_time_p50_s"] <= m["load_time_p95_s"]
    assert m["readiness_honest"] == 1.0
    assert len(res.artifacts) == 2 and "metronome listening" in Path(res.artifacts[0].path).read_text()
    assert _ours(docker_engine, run) == []  # every repetition's container is gone


def test_model_dir_is_mounted_read_only(metronome_image, model_dir, tmp_path, docker_engine) -> None:
    ws, run = Workspace(tmp_path / "ws"), RunRecord(image=ImageRef.parse(metronome_image))
    with booted_server(run, _cfg(model_dir), ws, image=metronome_image) as server:
        c = docker_engine.containers.get(server.container_id)
        mounts = {mt["Destination"]: mt for mt in c.attrs["Mounts"]}
        assert mounts["/models"]["RW"] is False
        assert c.exec_run("sh -c 'touch /models/x'").exit_code != 0
        assert server.base_url.startswith("http://127.0.0.1:") and server.model == MODEL_MOUNT
    assert run.stages["boot"].status is StageStatus.OK
    assert _ours(docker_engine, run) == []


def test_never_ready_is_bounded_and_fails_with_reason(metronome_image, model_dir, tmp_path, docker_engine) -> None:
    ws, run = Workspace(tmp_path / "ws"), RunRecord(image=ImageRef.parse(metronome_image))
    t = time.perf_counter()
    res = boot_stage(run, _cfg(model_dir, ready_timeout_s=3, env={"METRONOME_NEVER_READY": "1"}), ws,
                     image=metronome_image)
    assert time.perf_counter() - t < 15
    assert res.status is StageStatus.FAILED and "not ready within 3s" in res.reason
    assert "metronome listening" in res.reason  # last log lines are in the reason
    assert _ours(docker_engine, run) == []


def test_container_that_dies_is_reported_at_once(metronome_image, model_dir, tmp_path) -> None:
    ws, run = Workspace(tmp_path / "ws"), RunRecord(image=ImageRef.parse(metronome_image))
    env = {"METRONOME_NEVER_READY": "1", "METRONOME_DIE_AFTER_S": "1", "METRONOME_EXIT_CODE": "5"}
    t = time.perf_counter()
    res = boot_stage(run, _cfg(model_dir, ready_timeout_s=120, env=env), ws, image=metronome_image)
    assert time.perf_counter() - t < 15
    assert res.status is StageStatus.FAILED and "exited with code 5" in res.reason
    assert "metronome: dying" in res.reason


def test_dishonest_readiness_is_measured(metronome_image, model_dir, tmp_path) -> None:
    ws, run = Workspace(tmp_path / "ws"), RunRecord(image=ImageRef.parse(metronome_image))
    env = {"METRONOME_READY_AFTER_S": "0", "METRONOME_COMPLETE_AFTER_S": "1.5"}
    res = boot_stage(run, _cfg(model_dir, env=env), ws, image=metronome_image)
    assert res.status is StageStatus.OK and res.metrics["readiness_honest"] == 0.0
    assert "said ready" in res.details["readiness_reasons"][0]


def test_server_dying_mid_bench(metronome_image, model_dir, tmp_path) -> None:
    ws, run = Workspace(tmp_path / "ws"), RunRecord(image=ImageRef.parse(metronome_image))
    cfg = _cfg(model_dir, env={"METRONOME_DIE_AFTER_REQUESTS": "8"})
    with booted_server(run, cfg, ws, image=metronome_image) as server:
        t = time.perf_counter()
        res = bench_stage(run, cfg, ws, base_url=server.base_url, model=server.model)
        assert time.perf_counter() - t < 30
    assert res.status is StageStatus.FAILED
    assert res.metrics["error_rate"] > 0 and sum(res.details["error_reasons"].values()) >= 1
    assert len((ws.run_dir(run.run_id) / "bench-samples.jsonl").read_text().splitlines()) == 13


def test_booted_server_failure_raises_infra_error(metronome_image, model_dir, tmp_path) -> None:
    ws, run = Workspace(tmp_path / "ws"), RunRecord(image=ImageRef.parse(metronome_image))
    with pytest.raises(InfraError), booted_server(run, _cfg(model_dir, ready_timeout_s=2,
                                                            env={"METRONOME_NEVER_READY": "1"}), ws,
                                                  image=metronome_image):
        pass
    assert run.stages["boot"].status is StageStatus.FAILED


def test_cli_boot_keep_bench_stop_and_exit_codes(metronome_image, model_dir, tmp_path, docker_engine) -> None:
    from pipeline.cli import app

    cfg = tmp_path / "llmgate.yaml"
    cfg.write_text(
        f"boot: {{model_dir: '{model_dir}', ready_timeout_s: 3, probe_interval_s: 0.1, readiness_lag_tolerance_s: 2}}\n"
        "bench: {prompts: synthetic, requests: 6, warmup: 1, concurrency: 2, max_tokens: 4, input_tokens: 8}\n"
    )
    wd = ["--workdir", str(tmp_path / "ws")]
    cli = CliRunner()
    r = cli.invoke(app, [*wd, "boot", "--image", metronome_image, "--keep", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    run_id = re.search(r"run (\w+): boot ok", r.output).group(1)
    try:
        r = cli.invoke(app, [*wd, "bench", "--run", run_id, "--config", str(cfg)])
        assert r.exit_code == 0, r.output
        assert "ttft_p99_s" in r.output
        r = cli.invoke(app, [*wd, "boot", "--stop", "--run", run_id])
        assert r.exit_code == 0 and "server stopped" in r.output
    finally:
        for c in docker_engine.containers.list(all=True, filters={"label": f"llmgate.run={run_id}"}):
            c.remove(force=True)
            pytest.fail("the kept server was not stopped")
    never = tmp_path / "never.yaml"
    never.write_text(cfg.read_text().replace("boot: {", "boot: {env: {METRONOME_NEVER_READY: '1'}, "))
    r = cli.invoke(app, [*wd, "boot", "--image", metronome_image, "--config", str(never)])
    assert r.exit_code == 3 and "not ready within 3s" in r.output
