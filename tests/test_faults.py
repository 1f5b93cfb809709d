"""Fault injection for every long stage, through the real CLI (`python -m pipeline`, as CI runs it).

The server under test is killed, stalled or made to drip (the metronome TEST DOUBLE); the registry is
cut mid-push and mid-leak-check (a TCP proxy in front of the local registry, cut after some bytes);
the work dir's disk is full (a small tmpfs). Each stage must end within its configured deadline, with
exit 3, a message naming what failed, the store intact, and the run marked with what happened (the
stage's status and reason, the decision `error` or `interrupted`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipeline.config import load_config
from pipeline.models import Decision, ImageRef, RunRecord, Stage, StageResult, StageStatus
from pipeline.orchestrate.plan import get_plan
from pipeline.orchestrate.runner import Runner
from pipeline.schemas import BuildDetails
from pipeline.store import Store
from pipeline.workspace import Workspace
from tests.conftest import _unavailable
from tests.doubles.metronome import Running

REPO = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "ef" * 32
GT_ITEMS = [{"id": f"f{i}", "question": f"What is fault {i}?", "contexts": [], "reference": f"Fault {i}.",
             "expected_behaviour": "answer", "category": "faults"} for i in range(4)]
BENCH_DEADLINE_S, EVAL_DEADLINE_S = 8.0, 6.0
SLACK_S = 15.0  # process start-up (imports) and the stage's own set-up, on a loaded 2-core runner


# -- the world: a config, a store, a small ground truth -----------------------------------------------------
def _config(w: Path, **override: Any) -> Path:
    cfg: dict[str, Any] = {
        "gates_file": str(REPO / "gates.local.yaml"),
        "boot": {"model_dir": str(w / "model"), "ready_timeout_s": 10, "probe_interval_s": 0.1},
        "bench": {"prompts": "synthetic", "requests": 30, "warmup": 1, "concurrency": 2, "max_tokens": 8,
                  "input_tokens": 8, "request_timeout_s": 2, "deadline_s": BENCH_DEADLINE_S,
                  "same_run_baseline": False, "ignore_eos": False},
        "eval": {"ground_truth": str(w / "gt" / "v1"), "concurrency": 2, "max_tokens": 8, "request_timeout_s": 2,
                 "retries": 1, "deadline_s": EVAL_DEADLINE_S},
    }
    for section, values in override.items():
        cfg.setdefault(section, {}).update(values)
    path = w / "llmgate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "weights.bin").write_bytes(b"\0" * 64)
    (tmp_path / "gt" / "v1" / "data").mkdir(parents=True)
    (tmp_path / "gt" / "v1" / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GT_ITEMS))
    return {"w": tmp_path, "config": _config(tmp_path), "workdir": tmp_path / "ws", "store": tmp_path / "results.db"}


def _new_run(world: dict[str, Any], *, booted_at: str | None = None, image: ImageRef | None = None) -> str:
    """A stored run (dagger plan), with a boot result attached to `booted_at` when given."""
    ws = Workspace(world["workdir"], str(world["store"]))
    runner = Runner(ws=ws, cfg=load_config(world["config"]), plan=get_plan("dagger"))
    run = runner.create(image=image or ImageRef(repository="r.example/faults", digest=DIGEST),
                        model_dir=world["w"] / "model")
    if booted_at is not None:
        run.add_stage(StageResult(stage=Stage.BOOT, status=StageStatus.OK, metrics={"load_time_s": 0.1},
                                  reason=f"attached to {booted_at}").finish())
        ws.checkpoint(run)
    return run.run_id


def _env() -> dict[str, str]:
    # os.environ as Python holds it: the process environment under pytest can carry a COLUMNS=80 that a
    # C library put there, and a CLI told it has 80 columns folds long paths in its messages.
    return dict(os.environ)


def _llmgate(world: dict[str, Any], *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pipeline", "--workdir", str(world["workdir"]), "--store",
                        str(world["store"]), *args], capture_output=True, text=True, timeout=timeout, cwd=world["w"],
                       env=_env(), check=False)
    return r, time.monotonic() - t0


def _spawn(world: dict[str, Any], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--workdir", str(world["workdir"]), "--store",
                             str(world["store"]), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=world["w"], env=_env())


def _stored(world: dict[str, Any], run_id: str) -> RunRecord:
    """The run as the store holds it, after checking the store file is intact."""
    with contextlib.closing(sqlite3.connect(world["store"])) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    return Store(str(world["store"])).get(run_id)


def _clean(r: subprocess.CompletedProcess[str]) -> str:
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "MarkupError" not in out, out[-3000:]
    return " ".join(out.split())


def _wait_busy(base_url: str, timeout_s: float = 60) -> None:
    """Until the metronome is streaming at least one request (its own gauge says so)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            text = httpx.get(base_url + "/metrics", timeout=2).text
            if any(line.startswith("vllm:num_requests_running") and float(line.split()[-1]) > 0
                   for line in text.splitlines()):
                return
        time.sleep(0.1)
    raise AssertionError("the stage never started streaming")


def _kill(m: Running) -> None:
    m.proc.kill()
    m.proc.wait(10)


# -- the server under test ------------------------------------------------------------------------------------
def test_server_killed_mid_bench(world) -> None:
    with Running("--tokens", "50", "--gap-ms", "100") as m:
        run_id = _new_run(world, booted_at=m.base_url)
        world["config"] = _config(world["w"], bench={"request_timeout_s": 10, "deadline_s": 20})
        proc = _spawn(world, "bench", "--run", run_id, "--server-url", m.base_url, "--config", str(world["config"]))
        _wait_busy(m.base_url)
        t_kill = time.monotonic()
        _kill(m)
        out, err = proc.communicate(timeout=60)
    took = time.monotonic() - t_kill
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    text = _clean(r)
    assert r.returncode == 3, text[-2000:]
    assert took < 20, took  # the bench deadline
    run = _stored(world, run_id)
    bench = run.stages["bench"]
    assert bench.status is StageStatus.FAILED and "stopped accepting connections" in (bench.reason or "")
    assert run.decision is Decision.ERROR and run.decision_reason.startswith("stage bench:")
    assert "llmgate.pid" not in run.labels


def test_server_killed_mid_eval(world) -> None:
    with Running("--tokens", "50", "--gap-ms", "100") as m:
        run_id = _new_run(world, booted_at=m.base_url)
        proc = _spawn(world, "eval", "--run", run_id, "--server-url", m.base_url, "--config", str(world["config"]))
        _wait_busy(m.base_url)
        t_kill = time.monotonic()
        _kill(m)
        out, err = proc.communicate(timeout=60)
    took = time.monotonic() - t_kill
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    text = _clean(r)
    assert r.returncode == 3, text[-2000:]
    assert took < EVAL_DEADLINE_S + SLACK_S, took
    run = _stored(world, run_id)
    ev = run.stages["eval"]
    assert ev.status in (StageStatus.FAILED, StageStatus.ERROR), ev
    assert "no item was answered" in (ev.reason or "") or "eval.deadline_s" in (ev.reason or ""), ev.reason
    assert all(item.error for item in ev.items)  # every item kept, with why it failed
    assert run.decision is Decision.ERROR and run.decision_reason.startswith("stage eval:")


@pytest.mark.parametrize("fault", ["silent", "drip"])
def test_server_stalled_or_dripping_during_bench(world, fault: str) -> None:
    with Running("--fault", fault, "--gap-ms", "50") as m:
        run_id = _new_run(world, booted_at=m.base_url)
        r, took = _llmgate(world, "bench", "--run", run_id, "--server-url", m.base_url, "--config",
                           str(world["config"]))
    text = _clean(r)
    assert r.returncode == 3, text[-2000:]
    assert took < BENCH_DEADLINE_S + SLACK_S, took
    run = _stored(world, run_id)
    bench = run.stages["bench"]
    assert bench.status is StageStatus.FAILED and "every request failed" in (bench.reason or "")
    assert f"bench.deadline_s={BENCH_DEADLINE_S:g}s reached" in (bench.reason or "")  # the deadline is named
    assert run.decision is Decision.ERROR


@pytest.mark.parametrize("fault", ["silent", "drip"])
def test_server_stalled_or_dripping_during_eval(world, fault: str) -> None:
    """A silent server times every item out (each read waits `eval.request_timeout_s`); a dripping one
    streams without end and only the stage deadline stops it."""
    deadline = 12.0 if fault == "silent" else EVAL_DEADLINE_S  # room for every item to time out on its own
    world["config"] = _config(world["w"], eval={"deadline_s": deadline})
    with Running("--fault", fault, "--gap-ms", "50") as m:
        run_id = _new_run(world, booted_at=m.base_url)
        r, took = _llmgate(world, "eval", "--run", run_id, "--server-url", m.base_url, "--config",
                           str(world["config"]))
    text = _clean(r)
    assert r.returncode == 3, text[-2000:]
    assert took < deadline + SLACK_S, took
    run = _stored(world, run_id)
    ev = run.stages["eval"]
    # each request's own wall-clock bound (eval.request_timeout_s) or the collection's (eval.deadline_s)
    assert ev.status in (StageStatus.FAILED, StageStatus.ERROR), ev
    assert "no complete response within 2s" in (ev.reason or "") or "eval.deadline_s=" in (ev.reason or ""), ev
    assert run.decision is Decision.ERROR


def test_eval_ends_at_its_deadline_against_a_stream_kept_alive_without_tokens(world) -> None:
    """The repro: SSE keep-alive comments keep every read inside its timeout (eval hung forever; bench
    against the same server ended in 17 s). With requests allowed far longer than the stage, only
    `eval.deadline_s` can end it."""
    world["config"] = _config(world["w"], eval={"request_timeout_s": 120})
    with Running("--fault", "keepalive") as m:
        run_id = _new_run(world, booted_at=m.base_url)
        r, took = _llmgate(world, "eval", "--run", run_id, "--server-url", m.base_url, "--config",
                           str(world["config"]))
    text = _clean(r)
    assert r.returncode == 3, text[-2000:]
    assert took < EVAL_DEADLINE_S + SLACK_S, took
    assert f"eval.deadline_s={EVAL_DEADLINE_S:g}s" in text
    run = _stored(world, run_id)
    ev = run.stages["eval"]
    assert ev.status in (StageStatus.FAILED, StageStatus.ERROR) and "eval.deadline_s" in (ev.reason or ""), ev
    assert run.decision is Decision.ERROR


def test_eval_against_a_server_whose_error_body_is_markup(world) -> None:
    body = '{"error":{"message":"[/boom] overloaded [bold]now"}}'
    with Running("--fault", "http500", "--error-body", body) as m:
        run_id = _new_run(world, booted_at=m.base_url)
        r, _ = _llmgate(world, "eval", "--run", run_id, "--server-url", m.base_url, "--config",
                           str(world["config"]))
    text = _clean(r)
    assert r.returncode == 3, text[-2000:]
    assert "[/boom] overloaded [bold]now" in text  # quoted as it came, not read as markup
    run = _stored(world, run_id)
    assert run.stages["eval"].status is StageStatus.FAILED and "HTTP 500" in (run.stages["eval"].reason or "")


def test_sigterm_mid_bench_marks_the_run_interrupted(world) -> None:
    with Running("--tokens", "50", "--gap-ms", "100") as m:
        run_id = _new_run(world, booted_at=m.base_url)
        world["config"] = _config(world["w"], bench={"request_timeout_s": 10, "deadline_s": 30})
        proc = _spawn(world, "bench", "--run", run_id, "--server-url", m.base_url, "--config", str(world["config"]))
        _wait_busy(m.base_url)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    text = _clean(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert proc.returncode == 3 and "interrupted (SIGTERM)" in text, text[-2000:]
    run = _stored(world, run_id)
    assert run.decision is Decision.INTERRUPTED and run.interrupted_stage == "bench"
    assert "SIGTERM" in run.decision_reason and "llmgate.pid" not in run.labels


def test_a_killed_bench_is_marked_interrupted_by_the_next_invocation(world) -> None:
    with Running("--tokens", "50", "--gap-ms", "100") as m:
        run_id = _new_run(world, booted_at=m.base_url)
        world["config"] = _config(world["w"], bench={"request_timeout_s": 10, "deadline_s": 30})
        proc = _spawn(world, "bench", "--run", run_id, "--server-url", m.base_url, "--config", str(world["config"]))
        _wait_busy(m.base_url)
        proc.kill()  # kill -9: no handler runs, the record says "bench" is running in a process now gone
        proc.communicate(timeout=30)
        assert _stored(world, run_id).decision is Decision.PENDING
        other = _new_run(world, booted_at=m.base_url)
        r, _ = _llmgate(world, "boot", "--run", other, "--server-url", m.base_url, "--config", str(world["config"]))
    _clean(r)
    run = _stored(world, run_id)
    assert run.decision is Decision.INTERRUPTED and run.interrupted_stage == "bench"
    assert f"({proc.pid}) died during bench" in run.decision_reason


# -- the registry -----------------------------------------------------------------------------------------------
class CuttingProxy:
    """A TCP proxy in front of the local registry that cuts every connection once `cut_after` bytes have
    passed through it (either direction, all connections together), and closes each later connection as
    soon as it is accepted: the registry vanishing mid-transfer."""

    def __init__(self, upstream: tuple[str, int], cut_after: int) -> None:
        self.upstream, self.cut_after = upstream, cut_after
        self.moved = 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.cut.is_set():
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                with self._lock:
                    self.moved += len(data)
                    if self.moved >= self.cut_after:
                        self._cut()
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _cut(self) -> None:
        self.cut.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._cut()
        self.listener.close()


def _registry(local_stack) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    host, _, port = local_stack.registry.partition(":")
    return host, int(port or 80)


def test_registry_cut_mid_leak_check(world, local_stack) -> None:
    """The leak check reads every layer of the locked base image through a proxy cut after 256 KiB."""
    proxy = CuttingProxy(_registry(local_stack), cut_after=256 * 1024)
    try:
        repo = f"{proxy.host}/{local_stack.base_ref.split('/', 1)[1].split('@')[0]}"
        run_id = _new_run(world, image=ImageRef(repository=repo, digest=local_stack.base_digest))
        ws = Workspace(world["workdir"], str(world["store"]))
        run = ws.store.get(run_id)
        run.add_stage(StageResult(stage=Stage.BUILD, status=StageStatus.OK, details=BuildDetails(
            dockerfile="-", context="-", image=f"{repo}:t", digest=local_stack.base_digest)).finish())
        ws.checkpoint(run)
        r, took = _llmgate(world, "leak", "--run", run_id, "--config", str(world["config"]))
    finally:
        proxy.close()
    text = _clean(r)
    assert r.returncode == 3, text[-2000:]
    assert proxy.cut.is_set() and "registry unreachable" in text and proxy.host in text
    assert took < 120
    stored = _stored(world, run_id)
    assert stored.stages["leak"].status is StageStatus.ERROR and "registry unreachable" in stored.stages["leak"].reason
    assert stored.decision is Decision.ERROR and stored.decision_reason.startswith("stage leak:")


def test_registry_cut_mid_push(world, local_stack) -> None:
    """`llmgate build` of a small image whose push goes through a proxy cut after 1 MiB; the push is
    bounded by build.push_timeout_s (dockerd retries a failed layer upload on its own)."""
    ctx = world["w"] / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                                    "RUN head -c 8000000 /dev/urandom > /srv/filler\nUSER 65534\n")
    proxy = CuttingProxy(_registry(local_stack), cut_after=1024 * 1024)
    image = f"{proxy.host}/llmgate-test/faults-push"
    try:
        world["config"] = _config(world["w"], build={"dockerfile": str(ctx / "Dockerfile"), "context": str(ctx),
                                                     "repository": image, "push_timeout_s": 25, "wheels": []},
                                  stack={"lock_file": str(local_stack.lock_file)})
        r, _ = _llmgate(world, "build", "--config", str(world["config"]), "--model-dir", str(world["w"] / "model"),
                           "--tag", "fault-push", timeout=600)
    finally:
        proxy.close()
        subprocess.run(["docker", "rmi", "-f", f"{image}:fault-push"], capture_output=True, check=False)
    text = _clean(r)
    assert r.returncode == 3, text[-3000:]
    assert proxy.cut.is_set() and ("docker push failed" in text or "did not finish in 25s" in text), text[-2000:]
    store = Store(str(world["store"]))
    (run,) = store.runs(limit=5)
    stored = _stored(world, run.run_id)
    assert stored.stages["build"].status is StageStatus.ERROR and stored.image.digest is None
    assert stored.decision is Decision.ERROR and stored.decision_reason.startswith("stage build:")
    log = world["workdir"] / "runs" / run.run_id / "build.log"
    assert log.is_file() and "filler" in log.read_text()  # the build's log is kept, though its push failed


def test_a_failing_shell_form_run_ends_the_run_with_its_log(world, local_stack) -> None:
    """`RUN false` (shell form): BuildKit's log quotes `[/bin/sh -c ...]`; the run stops at the build with
    exit 3 and the reason, the whole log kept, and nothing of it read as markup."""
    ctx = world["w"] / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo '[/boom] [bold]x' && false\n"
                                    "RUN false\nUSER 65534\n")
    world["config"] = _config(world["w"], build={"dockerfile": str(ctx / "Dockerfile"), "context": str(ctx),
                                                 "repository": f"{local_stack.registry}/llmgate-test/faults-build",
                                                 "wheels": []},
                              stack={"lock_file": str(local_stack.lock_file)})
    r, _ = _llmgate(world, "run", "--config", str(world["config"]), "--model-dir", str(world["w"] / "model"),
                    "--tag", "fault-run-false", timeout=600)
    text = _clean(r)
    assert r.returncode == 3, text[-3000:]
    assert "build failed: docker build failed (exit 1)" in text and "[/boom] [bold]x" in text
    (run,) = Store(str(world["store"])).runs(limit=5)
    stored = _stored(world, run.run_id)
    assert stored.stages["build"].status is StageStatus.FAILED and set(stored.stages) == {"build"}
    assert stored.decision is Decision.ERROR and stored.decision_reason.startswith("stage build: docker build failed")
    log = (world["workdir"] / "runs" / run.run_id / "build.log").read_text()
    assert "[/boom] [bold]x" in log and "/bin/sh -c" in log


def test_a_build_that_hangs_ends_at_build_timeout(world, local_stack) -> None:
    ctx = world["w"] / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN sleep 600\nUSER 65534\n")
    world["config"] = _config(world["w"], build={"dockerfile": str(ctx / "Dockerfile"), "context": str(ctx),
                                                 "repository": f"{local_stack.registry}/llmgate-test/faults-hang",
                                                 "wheels": [], "timeout_s": 5},
                              stack={"lock_file": str(local_stack.lock_file)})
    r, took = _llmgate(world, "build", "--config", str(world["config"]), "--model-dir", str(world["w"] / "model"),
                       "--tag", "fault-hang", timeout=300)
    text = _clean(r)
    assert r.returncode == 3, text[-3000:]
    assert took < 5 + SLACK_S + 30, took  # the engine may take a while to start the step it is then told to stop
    assert "did not finish within build.timeout_s=5s" in text
    (run,) = Store(str(world["store"])).runs(limit=5)
    stored = _stored(world, run.run_id)
    assert stored.stages["build"].status is StageStatus.FAILED and stored.decision is Decision.ERROR


# -- the disk ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(path: Path, size: str = "1m"):  # type: ignore[no-untyped-def]
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        _unavailable("a small tmpfs needs `mount` and root (CI runs as root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        _unavailable(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _fill(path: Path) -> None:
    """Write until the file system says it is full (unbuffered: nothing left to fail at close)."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)


def test_full_disk_of_the_work_dir(world) -> None:
    """The work dir on a full tmpfs, the store elsewhere: the stage cannot write its record copy or its
    artifacts; the store says so."""
    with _tmpfs(world["w"] / "small") as small, Running() as m:
        world["workdir"] = small / "ws"
        run_id = _new_run(world, booted_at=m.base_url)
        _fill(small)
        r, _ = _llmgate(world, "bench", "--run", run_id, "--server-url", m.base_url, "--config",
                           str(world["config"]))
        text = _clean(r)
    assert r.returncode == 3, text[-2000:]
    assert "No space left on device" in text and str(small) in text
    run = _stored(world, run_id)
    assert run.decision is Decision.ERROR and "No space left on device" in run.decision_reason
    assert "llmgate.pid" not in run.labels


def test_full_disk_of_the_store(world) -> None:
    """The SQLite store itself on a full tmpfs: the write fails, the file stays a valid database holding the
    run as it was, and the command says where."""
    with _tmpfs(world["w"] / "small", size="4m") as small, Running() as m:
        world["store"] = small / "results.db"
        run_id = _new_run(world, booted_at=m.base_url)
        before = _stored(world, run_id)
        _fill(small)
        r, _ = _llmgate(world, "bench", "--run", run_id, "--server-url", m.base_url, "--config",
                           str(world["config"]))
        text = _clean(r)
        assert r.returncode == 3, text[-2000:]
        assert str(small) in text
        after = _stored(world, run_id)  # integrity checked while still full
    assert after.run_id == before.run_id and after.image == before.image
