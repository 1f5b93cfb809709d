"""Hostile input, the resources class: no input can make llmgate hang or take the machine's memory.

Each case runs `python -m pipeline` in a subprocess, as CI runs it, under a wall-clock timeout (60 s: a
hang fails the test, whatever the machine's load) and (where memory is the point) an address-space limit
(RLIMIT_AS, 1 GiB: a command here peaks near 200 MB), and must end with exit 2 naming the file or field:

- a YAML alias bomb in llmgate.yaml or a policy (7 levels took 29 s and 1 GB, 8 levels past 200 s);
- `bench.requests: 99999999999999999999999` (7.9 GB after 100 s, the deadline ignored);
- a FIFO given as policy, config, ground truth, store URL file, secret file, `summary --output` or
  `gate --junit` (each waited forever for a writer);
- `/dev/zero` as policy, config, report, key or label file (7-10 GB in 15 s);
- one 32 MB SSE event (the client re-scanned its whole buffer on every read, and timed out).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LIMIT_AS = 1 << 30
DIGEST = "sha256:" + "cd" * 32


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def _llmgate(w: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
             limit_memory: bool = True) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pipeline", "--workdir", str(w / "ws"), *args], capture_output=True,
                       text=True, timeout=timeout, cwd=w, check=False, env={**os.environ, **(env or {})},
                       preexec_fn=_limited if limit_memory else None)
    return r, time.monotonic() - t0


def _said(r: subprocess.CompletedProcess[str]) -> str:
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "unexpected" not in out, out[-3000:]
    return " ".join(out.split())


def _bomb(levels: int) -> str:
    """A "billion laughs": each level is nine aliases of the one before (9**levels leaves)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


# -- N: YAML alias bombs ----------------------------------------------------------------------------------
def test_an_alias_bomb_in_the_config_is_refused_fast(tmp_path: Path) -> None:
    cfg = tmp_path / "llmgate.yaml"
    cfg.write_text("extra:\n" + "".join(f"  {line}\n" for line in _bomb(8).splitlines()))
    r, _ = _llmgate(tmp_path, "run", "--config", str(cfg), "--model-dir", str(tmp_path), timeout=60)
    said = _said(r)
    assert r.returncode == 2 and f"{cfg}:1: not accepted: aliases expand the document" in said, said
    assert not (tmp_path / "ws" / "results.db").exists()


def test_an_alias_bomb_in_a_policy_is_refused_fast(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"extends: {REPO / 'gates.yaml'}\n" + _bomb(8))
    r, _ = _llmgate(tmp_path, "policy", "check", str(policy), timeout=60)
    assert r.returncode == 2 and "aliases expand the document" in _said(r)


def test_a_self_referring_alias_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "llmgate.yaml"
    cfg.write_text("extra:\n  loop: &a [1, *a]\n")
    r, _ = _llmgate(tmp_path, "run", "--config", str(cfg), timeout=60)
    assert r.returncode == 2 and "refers to a node that contains it" in _said(r)


def test_ordinary_anchors_and_merge_keys_are_still_read(tmp_path: Path) -> None:
    from pipeline.config import load_config

    cfg = tmp_path / "llmgate.yaml"
    cfg.write_text("extra:\n  defaults: &d {a: 1, b: [1, 2, 3]}\n  one: {<<: *d, c: 2}\n  two: *d\n"
                   "bench: {deadline_s: 6e2}\n")
    c = load_config(cfg)
    assert c.extra["one"] == {"a": 1, "b": [1, 2, 3], "c": 2} and c.extra["two"] == {"a": 1, "b": [1, 2, 3]}
    assert c.bench.deadline_s == 600.0  # YAML 1.2's `6e2`, a number (YAML 1.1 reads a string)


# -- O: request counts and deadlines ------------------------------------------------------------------------
def _world(tmp_path: Path, **bench: Any) -> Path:
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "config.json").write_text("{}")
    cfg = {"gates_file": str(REPO / "gates.local.yaml"), "boot": {"model_dir": str(tmp_path / "model")},
           "bench": {"prompts": "synthetic", "input_tokens": 8, "max_tokens": 4, "warmup": 0,
                     "same_run_baseline": False, "request_timeout_s": 5, **bench}}
    path = tmp_path / "llmgate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_an_unbounded_request_count_is_refused_before_any_work(tmp_path: Path) -> None:
    """The repro: `bench: {requests: 99999999999999999999999, deadline_s: 10}` built prompts for that many
    requests before the deadline could act (7.9 GB after 100 s)."""
    from pipeline.config import load_config
    from pipeline.models import ImageRef
    from pipeline.orchestrate.plan import get_plan
    from pipeline.orchestrate.runner import Runner
    from pipeline.workspace import Workspace

    run = Runner(ws=Workspace(tmp_path / "ws"), cfg=load_config(_world(tmp_path)), plan=get_plan("local")).create(
        image=ImageRef(repository="r.example/x", digest=DIGEST), model_dir=tmp_path / "model")
    cfg = _world(tmp_path, requests=99999999999999999999999, deadline_s=10)
    r, _ = _llmgate(tmp_path, "bench", "--run", run.run_id, "--config", str(cfg), "--server-url",
                       "http://127.0.0.1:1", timeout=60)
    said = _said(r)
    assert r.returncode == 2 and f"{cfg}: bench.requests: Input should be less than or equal to" in said, said


@pytest.mark.parametrize(("bench", "fragment"), [
    ({"requests": 100_001}, "bench.requests"),
    ({"warmup": 10**9}, "bench.warmup"),
    ({"requests": 50_000, "input_tokens": 4096}, "synthetic prompt tokens, more than"),
    ({"concurrency": 10**9}, "bench.concurrency"),
    ({"sweep_levels": [1, 10**9]}, "bench.sweep_levels.1"),
    ({"max_tokens": 10**12}, "bench.max_tokens"),
    ({"block_size": 10**9}, "bench.block_size"),
])
def test_counts_that_size_work_have_upper_bounds(tmp_path: Path, bench: dict[str, Any], fragment: str) -> None:
    from pipeline.config import load_config
    from pipeline.errors import BadInput

    with pytest.raises(BadInput) as exc:
        load_config(_world(tmp_path, **bench))
    assert fragment in exc.value.render()


def test_the_bench_deadline_ends_the_largest_allowed_bench(tmp_path: Path) -> None:
    """The largest request count the config allows, against a server, with an 8 s deadline: the bench
    ends at its deadline (the requests not sent are counted as such), within the 1 GiB address space."""
    from pipeline.config import MAX_REQUESTS, load_config
    from pipeline.models import ImageRef, StageResult, StageStatus
    from pipeline.orchestrate.plan import get_plan
    from pipeline.orchestrate.runner import Runner
    from pipeline.store import Store
    from pipeline.workspace import Workspace
    from tests.doubles.metronome import Running

    cfg = _world(tmp_path, requests=MAX_REQUESTS, deadline_s=8, concurrency=4)
    ws = Workspace(tmp_path / "ws")
    run = Runner(ws=ws, cfg=load_config(cfg), plan=get_plan("local")).create(
        image=ImageRef(repository="r.example/x", digest=DIGEST), model_dir=tmp_path / "model")
    run.add_stage(StageResult(stage="boot", status=StageStatus.OK, reason="attached").finish())
    ws.checkpoint(run)
    with Running("--ttft-ms", "1", "--gap-ms", "1") as m:
        r, _ = _llmgate(tmp_path, "bench", "--run", run.run_id, "--config", str(cfg), "--server-url", m.base_url,
                        timeout=90)
    assert r.returncode == 0, _said(r)
    bench = Store(tmp_path / "ws" / "results.db").get(run.run_id).stages["bench"]
    assert "bench.deadline_s=8s reached" in (bench.reason or ""), bench.reason
    assert bench.metrics["error_rate"] < 1  # it measured until the deadline, then stopped
    lines = (ws.run_dir(run.run_id) / "bench-samples.jsonl").read_text().splitlines()
    assert len(lines) == MAX_REQUESTS  # every request due is in the denominator, sent or not


# -- P: FIFOs ----------------------------------------------------------------------------------------------------
def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("case", ["policy", "config", "ground-truth", "store-url-file", "secret-file", "summary-output",
                                  "gate-junit", "scan-report"])
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, case: str) -> None:
    fifo = _fifo(tmp_path / "pipe")
    env: dict[str, str] = {}
    if case == "policy":
        args = ["policy", "check", str(fifo)]
    elif case == "config":
        args = ["run", "--config", str(fifo)]
    elif case == "ground-truth":
        gt = tmp_path / "gt" / "v1" / "data"
        gt.mkdir(parents=True)
        os.mkfifo(gt / "test.jsonl")
        fifo = gt / "test.jsonl"
        args = ["ground-truth", "check", str(gt.parent)]
    elif case == "store-url-file":
        args, env = ["runs", "list"], {"LLMGATE_STORE_URL_FILE": str(fifo)}
    elif case == "secret-file":
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text("{}")
        cfg = tmp_path / "llmgate.yaml"
        cfg.write_text(yaml.safe_dump({
            "build": {"secrets": {"token": {"file": str(fifo)}}, "context": str(REPO),
                      "dockerfile": str(REPO / "dockerfiles" / "cpu.Dockerfile")},
            "stack": {"lock_file": str(REPO / "dockerfiles" / "base.lock.json")},
            "boot": {"model_dir": str(tmp_path / "model")}, "eval": {"ground_truth": str(REPO / "ground_truth" / "v1")},
            "gates_file": str(REPO / "gates.local.yaml")}))
        args = ["run", "--config", str(cfg)]
        env = {"DOCKER_HOST": "unix:///nonexistent/llmgate-hostile.sock"}  # never a build, whatever happens
    elif case == "summary-output":
        args = ["summary", "--output", str(fifo)]
    elif case == "gate-junit":
        args = ["gate", "--junit", str(fifo)]
    else:
        args = ["scan", "--report", str(fifo)]
    r, _ = _llmgate(tmp_path, *args, timeout=60, env=env)
    said = _said(r)
    assert r.returncode == 2 and "FIFO" in said and str(fifo) in said, said


# -- Q: devices that never end ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["policy", "check", "/dev/zero"], ["run", "-c", "/dev/zero"],
                                  ["scan", "--report", "/dev/zero"], ["verify", f"r.example/x@{DIGEST}", "--key",
                                                                       "/dev/zero"],
                                  ["calibrate", "refusal", "--labels", "/dev/zero"], ["lint-dockerfiles",
                                                                                     "--no-hadolint", "/dev/zero"]],
                         ids=["policy", "config", "report", "key", "labels", "dockerfile"])
def test_dev_zero_is_refused_fast_in_bounded_memory(tmp_path: Path, args: list[str]) -> None:
    r, _ = _llmgate(tmp_path, *args, timeout=60)
    said = _said(r)
    assert r.returncode == 2 and "/dev/zero" in said and ("character device" in said or "not UTF-8" in said), said


def test_dev_zero_as_the_store_url_file(tmp_path: Path) -> None:
    r, _ = _llmgate(tmp_path, "runs", "list", timeout=60, env={"LLMGATE_STORE_URL_FILE": "/dev/zero"})
    assert r.returncode == 2 and "is a character device" in _said(r)


# -- one huge SSE event --------------------------------------------------------------------------------------------
def test_one_huge_sse_event_fails_its_request_fast_with_a_clear_reason() -> None:
    """One 32 MB event: the client copied and re-scanned its whole buffer on every read (quadratic), so
    the request ran into its timeout; now the event is refused as soon as it passes the limit."""
    from pipeline.bench.client import chat_payload
    from pipeline.bench.load import Target, fixed_concurrency

    big = json.dumps({"choices": [{"index": 0, "delta": {"content": "x" * (32 << 20)}, "finish_reason": None}]})
    body = (f"data: {big}\n\n" + 'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
            "data: [DONE]\n\n").encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(body))
        writer.write(body)
        try:
            await writer.drain()
        except ConnectionError:
            pass  # the client gave up on the stream, as it should
        writer.close()

    async def go() -> tuple[Any, float]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        t0 = time.perf_counter()
        (s,) = await fixed_concurrency(Target(f"http://127.0.0.1:{port}", timeout_s=5), [chat_payload("m", "q", 8)], 1)
        server.close()
        return s, time.perf_counter() - t0

    s, _ = asyncio.run(go())
    assert s.error is not None and "an event larger than 8 MiB" in s.error, s.error
