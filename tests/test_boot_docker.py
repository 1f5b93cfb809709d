"""Boot stage on the real Docker Engine with a small image built FROM the local base image that runs
the metronome TEST DOUBLE (tests/boot_image.py), pushed to the local registry so runs name it by
digest: milestones, repetitions, never-ready, death, logs, read-only weights, the server the runner
holds for bench, containers of a killed run reaped, and the CLI's exit codes."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import PipelineConfig
from pipeline.errors import InfraError
from pipeline.models import Decision, ImageRef, RunRecord, Stage, StageStatus
from pipeline.orchestrate.plan import get_plan
from pipeline.orchestrate.runner import Runner
from pipeline.progress import NullReporter
from pipeline.schemas import BenchDetails, BootDetails
from pipeline.stages.bench import bench_stage
from pipeline.stages.boot import MODEL_DIGEST_ENV, MODEL_MOUNT, boot_stage
from pipeline.supplychain.model_digest import model_ref
from pipeline.workspace import Workspace
from tests.boot_image import build_metronome_image
from tests.stage_helpers import stage_ctx

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def metronome_image(local_stack, docker_engine):
    ref = build_metronome_image(docker_engine, local_stack.base_ref, registry=local_stack.registry)
    yield ref
    repo = ref.split("@")[0]
    for img in docker_engine.images.list(name=repo):
        docker_engine.images.remove(img.id, force=True)


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


def _run(image: str, model_dir: Path) -> RunRecord:
    return RunRecord(image=ImageRef.parse(image), model=model_ref(model_dir))


def _ours(docker_engine, run: RunRecord) -> list:
    return docker_engine.containers.list(all=True, filters={"label": f"llmgate.run={run.run_id}"})


def test_boot_milestones_repetitions_logs_and_cleanup(metronome_image, model_dir, tmp_path, docker_engine) -> None:
    ws, run = Workspace(tmp_path / "ws"), _run(metronome_image, model_dir)
    cfg = _cfg(model_dir, repetitions=2, env={"METRONOME_LISTEN_AFTER_S": "0.3", "METRONOME_COMPLETE_AFTER_S": "1.0"})
    ctx = stage_ctx(cfg, ws)
    try:
        res = boot_stage(run, ctx)
        assert ctx.server is not None and ctx.server.base_url.startswith("http://127.0.0.1:")
        assert len(_ours(docker_engine, run)) == 1  # the last repetition's server, held for bench and eval
    finally:
        ctx.close()
    assert res.status is StageStatus.OK, res.reason
    m = res.metrics
    assert m["port_open_s"] <= m["health_ok_s"] <= m["first_completion_s"] + 0.2
    assert m["load_time_s"] == m["first_completion_s"] >= 1.0
    assert len(res.samples["load_time_s"]) == 2 and m["load_time_p50_s"] <= m["load_time_p95_s"]
    assert m["readiness_honest"] == 1.0
    assert len(res.artifacts) == 2 and "metronome listening" in Path(res.artifacts[0].path).read_text()
    assert _ours(docker_engine, run) == []  # closing the context stopped and removed the kept server
    assert ctx.server is None
    details = res.details_as(BootDetails)
    assert details is not None and len(details.repetitions) == 2 and details.attached is None


def test_weights_are_mounted_read_only_with_their_digest(metronome_image, model_dir, tmp_path, docker_engine) -> None:
    ws, run = Workspace(tmp_path / "ws"), _run(metronome_image, model_dir)
    ctx = stage_ctx(_cfg(model_dir), ws)
    try:
        res = boot_stage(run, ctx)
        assert res.status is StageStatus.OK, res.reason
        (c,) = _ours(docker_engine, run)
        mounts = {mt["Destination"]: mt for mt in c.attrs["Mounts"]}
        assert mounts["/models"]["RW"] is False
        assert c.exec_run("sh -c 'touch /models/x'").exit_code != 0
        # The pod is told which weights were gated; its readiness helper checks the mount against it.
        assert f"{MODEL_DIGEST_ENV}={run.model.digest}" in c.attrs["Config"]["Env"]
        assert ctx.server is not None and ctx.server.model == MODEL_MOUNT
    finally:
        ctx.close()
    assert _ours(docker_engine, run) == []


def test_never_ready_is_bounded_and_fails_with_reason(metronome_image, model_dir, tmp_path, docker_engine) -> None:
    ws, run = Workspace(tmp_path / "ws"), _run(metronome_image, model_dir)
    t = time.perf_counter()
    res = boot_stage(run, stage_ctx(_cfg(model_dir, ready_timeout_s=3, env={"METRONOME_NEVER_READY": "1"}), ws))
    assert time.perf_counter() - t < 15
    assert res.status is StageStatus.FAILED and "not ready within 3s" in res.reason
    assert "metronome listening" in res.reason  # last log lines are in the reason
    assert _ours(docker_engine, run) == []


def test_container_that_dies_is_reported_at_once(metronome_image, model_dir, tmp_path) -> None:
    ws, run = Workspace(tmp_path / "ws"), _run(metronome_image, model_dir)
    env = {"METRONOME_NEVER_READY": "1", "METRONOME_DIE_AFTER_S": "1", "METRONOME_EXIT_CODE": "5"}
    t = time.perf_counter()
    res = boot_stage(run, stage_ctx(_cfg(model_dir, ready_timeout_s=120, env=env), ws))
    assert time.perf_counter() - t < 15
    assert res.status is StageStatus.FAILED and "exited with code 5" in res.reason
    assert "metronome: dying" in res.reason


def test_dishonest_readiness_is_measured(metronome_image, model_dir, tmp_path) -> None:
    ws, run = Workspace(tmp_path / "ws"), _run(metronome_image, model_dir)
    env = {"METRONOME_READY_AFTER_S": "0", "METRONOME_COMPLETE_AFTER_S": "1.5"}
    ctx = stage_ctx(_cfg(model_dir, env=env), ws)
    try:
        res = boot_stage(run, ctx)
    finally:
        ctx.close()
    assert res.status is StageStatus.OK and res.metrics["readiness_honest"] == 0.0
    details = res.details_as(BootDetails)
    assert details is not None and "said ready" in details.readiness_reasons[0]


def test_server_dying_mid_bench(metronome_image, model_dir, tmp_path) -> None:
    ws, run = Workspace(tmp_path / "ws"), _run(metronome_image, model_dir)
    cfg = _cfg(model_dir, env={"METRONOME_DIE_AFTER_REQUESTS": "8"})
    ctx = stage_ctx(cfg, ws)
    try:
        run.add_stage(boot_stage(run, ctx))
        t = time.perf_counter()
        res = bench_stage(run, ctx)
        assert time.perf_counter() - t < 30
    finally:
        ctx.close()
    assert res.status is StageStatus.FAILED
    details = res.details_as(BenchDetails)
    assert details is not None
    assert res.metrics["error_rate"] > 0 and sum(details.error_reasons.values()) >= 1
    assert len((ws.run_dir(run.run_id) / "bench-samples.jsonl").read_text().splitlines()) == 13


def _runner(cfg: PipelineConfig, ws: Workspace) -> Runner:
    return Runner(ws=ws, cfg=cfg, plan=get_plan("local"), reporter=NullReporter())


def _stored_run(ws: Workspace, image: str, model_dir: Path) -> RunRecord:
    from pipeline.models import StageResult
    from pipeline.schemas import BuildDetails

    run = _run(image, model_dir)
    run.add_stage(StageResult(stage=Stage.BUILD, status=StageStatus.OK,
                              details=BuildDetails(dockerfile="-", context="-", image=image.split("@")[0] + ":t",
                                                   digest=ImageRef.parse(image).digest)))
    ws.checkpoint(run)
    return run


def test_bench_of_a_run_that_does_not_boot_is_an_infrastructure_failure(metronome_image, model_dir, tmp_path) -> None:
    ws = Workspace(tmp_path / "ws")
    run = _stored_run(ws, metronome_image, model_dir)
    cfg = _cfg(model_dir, ready_timeout_s=2, env={"METRONOME_NEVER_READY": "1"})
    with pytest.raises(InfraError) as exc:
        _runner(cfg, ws).run_stage(run, Stage.BENCH)
    assert "server did not boot" in exc.value.message
    stored = ws.store.get(run.run_id)
    assert stored.stages["boot"].status is StageStatus.FAILED
    assert stored.stages["bench"].status is StageStatus.ERROR
    assert stored.decision is Decision.ERROR


def test_containers_of_a_killed_run_are_reaped_and_the_run_marked(metronome_image, model_dir, tmp_path,
                                                                   docker_engine) -> None:
    """A run whose process died mid-stage (kill -9) is found by the next invocation on this host: marked
    interrupted with the stage it died in, and the server it left behind removed."""
    import subprocess
    import sys

    ws = Workspace(tmp_path / "ws")
    run = _stored_run(ws, metronome_image, model_dir)
    cfg = _cfg(model_dir)
    ctx = stage_ctx(cfg, ws)
    res = boot_stage(run, ctx)  # a server left running, as a killed process would leave it
    assert res.status is StageStatus.OK and len(_ours(docker_engine, run)) == 1
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.labels.update({"llmgate.pid": str(dead.pid), "llmgate.host": socket.gethostname(), "llmgate.stage": "bench"})
    ws.checkpoint(run)
    runner = _runner(cfg, ws)
    from pipeline.orchestrate.reap import reap_interrupted

    assert reap_interrupted(ws, NullReporter(), runner._runtime) == [run.run_id]
    stored = ws.store.get(run.run_id)
    assert stored.decision is Decision.INTERRUPTED and stored.interrupted_stage == "bench"
    assert _ours(docker_engine, run) == []
    # A run marked by a live process (this one) is left alone.
    other = _stored_run(ws, metronome_image, model_dir)
    other.labels.update({"llmgate.pid": str(os.getpid()), "llmgate.host": socket.gethostname()})
    ws.checkpoint(other)
    assert reap_interrupted(ws, NullReporter(), runner._runtime) == []
    assert ws.store.get(other.run_id).decision is Decision.PENDING


def test_cli_boot_bench_and_exit_codes(metronome_image, model_dir, tmp_path, docker_engine) -> None:
    from pipeline.cli import app

    cfg = tmp_path / "llmgate.yaml"
    cfg.write_text(
        f"boot: {{model_dir: '{model_dir}', ready_timeout_s: 3, probe_interval_s: 0.1, readiness_lag_tolerance_s: 2}}\n"
        "bench: {prompts: synthetic, requests: 6, warmup: 1, concurrency: 2, max_tokens: 4, input_tokens: 8}\n"
    )
    wd = ["--workdir", str(tmp_path / "ws")]
    cli = CliRunner()
    r = cli.invoke(app, [*wd, "new-run", "--image", metronome_image, "--model-dir", str(model_dir), "--plan", "dagger",
                         "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    run_id = r.output.strip().splitlines()[-1]
    # No build here: the image was pushed by the fixture; record it as the dagger plan would.
    r = cli.invoke(app, [*wd, "stage", "build", "--run", run_id, "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    r = cli.invoke(app, [*wd, "bench", "--run", run_id, "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "ttft_p99_s" in r.output
    assert re.search(rf"run {run_id}: bench ok", r.output)
    assert docker_engine.containers.list(all=True, filters={"label": f"llmgate.run={run_id}"}) == []
    never = tmp_path / "never.yaml"
    never.write_text(cfg.read_text().replace("boot: {", "boot: {env: {METRONOME_NEVER_READY: '1'}, "))
    r = cli.invoke(app, [*wd, "boot", "--run", run_id, "--config", str(never)])
    assert r.exit_code == 3 and "not ready within 3s" in r.output


def test_the_last_promoted_release_is_booted_beside_the_candidate_and_interleaved(
        metronome_image, tmp_path, docker_engine) -> None:
    """Same-run baseline: the bench measures the promoted release and the candidate on this machine now,
    in alternating blocks, and records the baseline's series beside the candidate's."""
    from pipeline.models import PromotionRecord

    ws = Workspace(tmp_path / "ws")
    old, new = tmp_path / "old", tmp_path / "new"
    for d, content in ((old, "old"), (new, "new")):
        d.mkdir()
        (d / "config.json").write_text(f'{{"weights": "{content}"}}')
    baseline = _stored_run(ws, metronome_image, old)
    baseline.promotion = PromotionRecord(target=baseline.target, digest=baseline.image.digest, mode="gitops",
                                         outcome="promoted")
    ws.checkpoint(baseline)
    candidate = _stored_run(ws, metronome_image, new)
    cfg = _cfg(new)
    cfg.bench.shape = "concurrency"
    cfg.bench.requests, cfg.bench.block_size = 20, 5
    res = _runner(cfg, ws).run_stage(candidate, Stage.BENCH)
    assert res.status is StageStatus.OK, res.reason
    details = res.details_as(BenchDetails)
    assert details is not None and details.same_run_baseline is not None
    assert details.same_run_baseline.run_id == baseline.run_id and details.same_run_baseline.blocks == 8
    assert len(res.samples["ttft_s"]) == 20 and len(res.samples["baseline_ttft_s"]) == 20
    assert details.environment is not None and "env_disturbed" in res.metrics
    boot = ws.store.get(candidate.run_id).details_as(BootDetails)
    assert boot is not None and boot.same_run_baseline.startswith(f"run {baseline.run_id}")
    assert _ours(docker_engine, candidate) == []  # both servers stopped when the command ended
