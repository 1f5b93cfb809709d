"""The one Runner: input checks before any side effect, reuse of unchanged inputs, errors recorded,
real stage durations, run ids that cannot climb out of the work dir. Stages that need an engine are
covered in test_boot_docker.py and the end-to-end run."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from pipeline.adapters.bundle import Adapters
from pipeline.adapters.trivy import TrivyScan
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput, InfraError
from pipeline.models import Decision, ImageRef, RunRecord, Stage, StageResult, StageStatus
from pipeline.orchestrate.plan import get_plan
from pipeline.orchestrate.runner import Runner
from pipeline.progress import NullReporter
from pipeline.stages.context import StageOptions
from pipeline.workspace import Workspace
from tests.stage_helpers import record_measured

REPO = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "ab" * 32
TRIVY_FIXTURE = REPO.parent / "shared" / "fixtures" / "trivy" / "dockerfile.json"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "weights.bin").write_bytes(b"\0" * 1024)
    return d


def _runner(ws: Workspace, *, adapters: Adapters | None = None, **options: object) -> Runner:
    cfg = PipelineConfig()
    cfg.gates_file = str(REPO / "gates.local.yaml")
    cfg.eval.ground_truth = str(REPO / "ground_truth" / "v1")
    return Runner(ws=ws, cfg=cfg, plan=get_plan("dagger"), reporter=NullReporter(), adapters=adapters,
                  options=StageOptions(**options))  # type: ignore[arg-type]


def _run(runner: Runner, model_dir: Path) -> RunRecord:
    return runner.create(image=ImageRef(repository="127.0.0.1:5000/llmgate/runner-test", digest=DIGEST),
                         model_dir=model_dir)


def test_a_new_run_names_its_whole_release(tmp_path, model_dir):
    ws = Workspace(tmp_path / "ws")
    run = _run(_runner(ws), model_dir)
    stored = ws.store.get(run.run_id)
    assert stored.image.digest == DIGEST
    assert stored.model is not None and stored.model.files == 2 and stored.model.bytes == 1024 + 2
    assert stored.policy is not None and stored.policy.name == "gates.local.yaml"
    assert stored.policy.files[-1].endswith("gates.yaml")
    assert stored.ground_truth is not None and stored.ground_truth.version == "v1"
    assert stored.release.key == run.release.key
    # Other weights make another release.
    (model_dir / "weights.bin").write_bytes(b"\1" * 1024)
    other = _run(_runner(ws), model_dir)
    assert other.model.digest != run.model.digest and other.release.key != run.release.key


def test_a_missing_model_dir_is_bad_input_before_anything_runs(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(BadInput) as exc:
        _runner(ws).create(image=ImageRef(repository="r/x", digest=DIGEST), model_dir=tmp_path / "nope")
    assert "boot.model_dir" in (exc.value.where or "")
    assert ws.store.latest() is None


def test_an_unknown_skip_is_refused_before_any_stage(tmp_path, model_dir):
    ws = Workspace(tmp_path / "ws")
    runner = _runner(ws)
    run = _run(runner, model_dir)
    with pytest.raises(BadInput) as exc:
        runner.run(run, skip=["bogus"])
    assert exc.value.where == "--skip" and "bogus" in exc.value.message
    assert ws.store.get(run.run_id).stages == {}


def test_a_stage_names_the_earlier_stage_it_reads(tmp_path, model_dir):
    ws = Workspace(tmp_path / "ws")
    runner = _runner(ws)
    run = _run(runner, model_dir)
    with pytest.raises(BadInput) as exc:
        runner.run_stage(run, Stage.LEAK)
    assert "'build'" in exc.value.message and f"llmgate stage build --run {run.run_id}" in (exc.value.hint or "")


def test_promotion_runs_only_when_asked_for(tmp_path, model_dir):
    ws = Workspace(tmp_path / "ws")
    runner = _runner(ws)
    with pytest.raises(BadInput):
        runner.run_stage(_run(runner, model_dir), Stage.PROMOTE)


class _SlowTrivy:
    """Trivy TEST DOUBLE: answers a scan after `delay_s` with a report trivy itself wrote (the shared
    fixture), or raises, to see how the runner records a stage."""

    def __init__(self, delay_s: float = 0.0, fail: Exception | None = None) -> None:
        self.delay_s, self.fail = delay_s, fail

    def scan_image(self, out: Path, **_: object) -> TrivyScan:
        time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TRIVY_FIXTURE, out)
        return TrivyScan(report=out, scanners=["misconfig"], not_run={"vuln": "test double", "secret": "test double"},
                         warnings=[])

    def convert(self, report: Path, fmt: str, out: Path) -> Path:
        out.write_text(json.dumps({"version": "2.1.0", "runs": []}))
        return out

    def version(self) -> str:
        return "0.76.0 (double)"


def test_an_unexpected_error_in_a_stage_is_recorded_and_raised_as_infrastructure(tmp_path, model_dir):
    ws = Workspace(tmp_path / "ws")
    runner = _runner(ws, adapters=Adapters(trivy=_SlowTrivy(fail=RuntimeError("boom"))))
    run = _run(runner, model_dir)
    with pytest.raises(InfraError) as exc:
        runner.run_stage(run, Stage.SCAN)
    assert "RuntimeError: boom" in exc.value.message and exc.value.where == "stage scan"
    stored = ws.store.get(run.run_id)
    assert stored.stages["scan"].status is StageStatus.ERROR and "boom" in (stored.stages["scan"].reason or "")
    assert stored.decision is Decision.ERROR and stored.decision_reason.startswith("stage scan:")
    assert "llmgate.pid" not in stored.labels  # the run is not left looking alive


def test_stage_durations_are_measured_from_the_real_start(tmp_path, model_dir):
    ws = Workspace(tmp_path / "ws")
    runner = _runner(ws, adapters=Adapters(trivy=_SlowTrivy(delay_s=0.4)))
    run = _run(runner, model_dir)
    time.sleep(0.3)  # time between creating the run and starting the stage is not the stage's
    res = runner.run_stage(run, Stage.SCAN)
    assert res.status is StageStatus.OK
    assert 0.4 <= (res.duration_s or 0) < 0.4 + 0.3
    assert res.started_at >= run.created_at


def test_unchanged_inputs_are_reused_and_fresh_recomputes(tmp_path, model_dir):
    ws = Workspace(tmp_path / "ws")
    trivy = _SlowTrivy()
    first_runner = _runner(ws, adapters=Adapters(trivy=trivy))
    first = _run(first_runner, model_dir)
    computed = first_runner.run_stage(first, Stage.SCAN)
    assert computed.reused_from is None and computed.input_key

    second_runner = _runner(ws, adapters=Adapters(trivy=_SlowTrivy(fail=AssertionError("must not scan again"))))
    second = _run(second_runner, model_dir)
    reused = second_runner.run_stage(second, Stage.SCAN)
    assert reused.reused_from == first.run_id and reused.input_key == computed.input_key
    assert reused.metrics == computed.metrics and "reused from run" in (reused.reason or "")

    fresh = _runner(ws, adapters=Adapters(trivy=trivy), fresh=True)
    again = fresh.run_stage(_run(fresh, model_dir), Stage.SCAN)
    assert again.reused_from is None

    # Another image digest is another input: no reuse.
    other_runner = _runner(ws, adapters=Adapters(trivy=trivy))
    other = other_runner.create(image=ImageRef(repository="127.0.0.1:5000/llmgate/runner-test",
                                               digest="sha256:" + "cd" * 32), model_dir=model_dir)
    assert other_runner.run_stage(other, Stage.SCAN).reused_from is None


@pytest.mark.parametrize("bad", ["../../escape", "a/b", "..", ".hidden", "x" * 65, "a b", ""])
def test_run_ids_that_are_not_ids_are_bad_input(tmp_path, bad):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(BadInput) as exc:
        ws.load_run(bad)
    assert exc.value.where == "--run"
    with pytest.raises(ValueError):
        RunRecord(run_id=bad, image=ImageRef(repository="r/x"))
    assert not (tmp_path / "escape").exists()


def test_a_run_with_an_otlp_endpoint_is_one_trace_with_a_span_per_stage(tmp_path, model_dir, monkeypatch):
    """The Runner's own spans, exported over real OTLP/HTTP to the receiver of tests/test_telemetry.py."""
    from tests.test_telemetry import OtlpReceiver, attrs

    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    try:
        ws = Workspace(tmp_path / "ws")
        runner = _runner(ws, adapters=Adapters(trivy=_SlowTrivy()))
        run = _run(runner, model_dir)
        skip = [s.value for s in Stage if s not in (Stage.SCAN, Stage.GATE)]
        runner.run(run, skip=skip)
    finally:
        receiver.close()
    spans = receiver.spans()
    assert len({s.trace_id for s in spans}) == 1
    (root,) = [s for s in spans if not s.parent_span_id]
    stages = {s.name: attrs(s) for s in spans if s.parent_span_id}
    planned = [s for s in get_plan("dagger").steps if not s.on_request]
    assert set(stages) == {f"stage {s.stage.value}" for s in planned}
    assert stages["stage scan"]["llmgate.stage.status"] == "ok"
    assert stages["stage bench"]["llmgate.stage.status"] == "skipped"
    assert stages["stage scan"]["llmgate.model.digest"] == run.model.digest
    assert attrs(root)["llmgate.decision"] == ws.store.get(run.run_id).decision.value == "blocked"


class _NoSarifTrivy(_SlowTrivy):
    """trivy 0.76 fails to render SARIF for an image named with a registry port (seen on the llama.cpp image)."""

    def convert(self, report: Path, fmt: str, out: Path) -> Path:
        from pipeline.errors import InfraError

        raise InfraError('trivy convert to sarif failed: [sarif] Unable to parse URI URI="127.0.0.1:5000/x@sha256:…"',
                         where=str(report))


def test_a_sarif_rendering_failure_is_a_warning_not_a_failed_scan(tmp_path, model_dir):
    from pipeline.schemas import ScanDetails

    ws = Workspace(tmp_path / "ws")
    runner = _runner(ws, adapters=Adapters(trivy=_NoSarifTrivy()))
    res = runner.run_stage(_run(runner, model_dir), Stage.SCAN)
    assert res.status is StageStatus.OK and [a.name for a in res.artifacts] == ["trivy-report"]
    details = res.details_as(ScanDetails)
    assert details is not None and any("no SARIF rendering" in w for w in details.warnings)


def test_a_build_from_uncommitted_changes_is_keyed_by_their_content(tmp_path, model_dir):
    """A checkout whose only change is machine-local (the re-pinned base lock) still reuses its build;
    any other change to a tracked file is another build."""
    from pipeline.orchestrate.reuse import input_key
    from tests.promote_helpers import git, gitops_repo

    src = gitops_repo(tmp_path)
    lock = src / "manifests" / "base" / "kustomization.yaml"  # any tracked file stands in for the lock
    runner = _runner(Workspace(tmp_path / "ws"))
    runner.cfg.build.context = str(src)

    def key() -> str | None:
        run = runner.create(image=ImageRef(repository="127.0.0.1:5000/llmgate/runner-test"), model_dir=model_dir)
        return input_key(Stage.BUILD, run, runner.cfg, runner.options)

    clean = key()
    assert clean is not None and key() == clean
    lock.write_text(lock.read_text() + "# re-pinned\n")
    dirty = key()
    assert dirty is not None and dirty != clean and key() == dirty
    assert git(src, "status", "--porcelain").startswith("M")  # the change is left where it was
    lock.write_text(lock.read_text() + "# again\n")
    assert key() not in (None, clean, dirty)


def test_a_bench_of_an_attached_server_is_keyed_but_measured_again(tmp_path, model_dir):
    """A server attached with --server-url runs on a machine llmgate cannot fingerprint: its bench is stored
    with its key, and measured again on every run (reuse of local measurements: tests/test_reuse.py)."""
    from tests.doubles.metronome import Running

    ws = Workspace(tmp_path / "ws")

    def bench(m: Running, **options: object) -> StageResult:
        runner = _runner(ws, server_url=m.base_url, **options)
        runner.cfg.bench = runner.cfg.bench.model_copy(update={
            "prompts": "synthetic", "requests": 6, "warmup": 1, "concurrency": 2, "max_tokens": 4,
            "input_tokens": 8, "request_timeout_s": 5})
        run = _run(runner, model_dir)
        record_measured(run, StageResult(stage=Stage.BOOT, status=StageStatus.OK, metrics={"load_time_s": 1.0}), runner.cfg)
        return runner.run_stage(run, Stage.BENCH)

    with Running("--ttft-ms", "5", "--gap-ms", "2") as m:
        measured = bench(m)
        assert measured.status is StageStatus.OK and measured.reused_from is None and measured.input_key
        again = bench(m)
        assert again.reused_from is None and again.input_key == measured.input_key
