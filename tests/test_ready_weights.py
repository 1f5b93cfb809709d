"""The serving images' readiness helper checks the mounted weights against LLMGATE_MODEL_DIGEST.

The helper (dockerfiles/runtime/llmgate-ready) is run as the image runs it: a fresh process each
probe, reading its environment, on real temp directories; the entrypoints (dockerfiles/runtime/
llmgate-serve-*) run it before the server, with a stand-in server on PATH that records whether it ran."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

import pytest

from pipeline.supplychain.model_digest import model_ref

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "dockerfiles" / "runtime" / "llmgate-ready"


def probe(weights: Path, cache: Path, digest: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LLMGATE_MODEL_DIGEST"}
    env.update({"MODEL_PATH": str(weights), "LLMGATE_READY_CACHE": str(cache), "PORT": "9", "READY_TIMEOUT_S": "2"})
    if digest is not None:
        env["LLMGATE_MODEL_DIGEST"] = digest
    return subprocess.run([sys.executable, str(HELPER), *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    w = tmp_path / "models"
    (w / "sub").mkdir(parents=True)
    (w / "config.json").write_text('{"model_type": "llama"}')
    (w / "model.safetensors").write_bytes(os.urandom(300_000))
    (w / "sub" / "tokenizer.json").write_text("{}")
    return w


def test_match_then_cache_hit_then_changed_file(weights: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "weights.json"
    good = model_ref(weights).digest
    first = probe(weights, cache, good, "--weights-only")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"weights verified: {weights} has digest {good}" in first.stdout
    took = re.search(r"; (\d+\.\d)s\)$", first.stdout.strip())
    assert took is not None and float(took.group(1)) < 60, first.stdout  # the pass's own duration
    assert "3 file(s) read, 0 hashed earlier in this start" in first.stdout
    assert json.loads(cache.read_text())["digest"] == good

    again = probe(weights, cache, good, "--weights-only")  # the next probe: a new process, files untouched
    assert again.returncode == 0 and "verified at this start; 0 file(s) with a changed" in again.stdout

    (weights / "model.safetensors").write_bytes(os.urandom(300_000))  # swapped weights, same size
    swapped = model_ref(weights).digest
    changed = probe(weights, cache, good, "--weights-only")
    assert changed.returncode == 1
    assert f"not ready: weights at {weights} have digest {swapped}, expected {good}" in changed.stdout
    assert "1 file(s) with a changed size, mtime, ctime or inode read" in changed.stdout


def test_same_size_rewrite_with_the_old_mtime_is_read_again(weights: Path, tmp_path: Path) -> None:
    """#22 repro 10: size and mtime can be put back after a rewrite (`touch -d`); the ctime cannot."""
    cache = tmp_path / "c.json"
    good = model_ref(weights).digest
    assert probe(weights, cache, good, "--weights-only").returncode == 0
    shard = weights / "model.safetensors"
    before = shard.stat()
    shard.write_bytes(os.urandom(before.st_size))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (shard.stat().st_size, shard.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    res = probe(weights, cache, good, "--weights-only")
    assert res.returncode == 1 and "have digest" in res.stdout and f"expected {good}" in res.stdout


def test_mismatch_stays_not_ready_and_never_asks_the_server(weights: Path, tmp_path: Path) -> None:
    wrong = "sha256:" + "0" * 64
    res = probe(weights, tmp_path / "c.json", wrong)
    assert res.returncode == 1
    assert f"have digest {model_ref(weights).digest}, expected {wrong}" in res.stdout
    assert "urlopen" not in res.stderr and "ready: streamed" not in res.stdout


def test_a_new_container_start_hashes_everything_again(weights: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    good = model_ref(weights).digest
    assert probe(weights, cache, good, "--weights-only").returncode == 0
    data = json.loads(cache.read_text())
    data["start_id"] = "another-boot:12345"  # as left by the previous start of this container
    cache.write_text(json.dumps(data))
    res = probe(weights, cache, good, "--weights-only")
    assert res.returncode == 0 and "3 file(s) read, 0 hashed earlier" in res.stdout


def test_before_start_reads_every_file_whatever_the_cache_says(weights: Path, tmp_path: Path) -> None:
    """The entrypoint's check trusts no cache, not even a complete one of this start."""
    cache = tmp_path / "c.json"
    good = model_ref(weights).digest
    assert probe(weights, cache, good, "--weights-only").returncode == 0
    res = probe(weights, cache, good, "--before-start")
    assert res.returncode == 0 and "before the server starts: full manifest, 3 file(s) read" in res.stdout


def test_a_rewritten_file_is_read_again(weights: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    good = model_ref(weights).digest
    assert probe(weights, cache, good, "--weights-only").returncode == 0
    (weights / "config.json").write_text('{"model_type": "gpt2!"}')
    res = probe(weights, cache, good, "--weights-only")
    assert res.returncode == 1 and "1 file(s) with a changed" in res.stdout


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_unset_or_empty_digest_is_never_ready(weights: Path, tmp_path: Path, value: str | None) -> None:
    """#22 repro 10: an empty LLMGATE_MODEL_DIGEST used to skip the check (exit 0)."""
    for args in ((), ("--weights-only",), ("--before-start",)):
        res = probe(weights, tmp_path / "c.json", value, *args)
        assert res.returncode == 1 and "LLMGATE_MODEL_DIGEST is unset or empty" in res.stdout, args
        assert "ready: streamed" not in res.stdout


@pytest.mark.parametrize("value", ["sha256:abc", "latest"])
def test_malformed_digest_is_not_ready(weights: Path, tmp_path: Path, value: str) -> None:
    res = probe(weights, tmp_path / "c.json", value, "--weights-only")
    assert res.returncode == 1 and "not a sha256 digest" in res.stdout


def test_missing_or_unsafe_weights_are_not_ready(weights: Path, tmp_path: Path) -> None:
    good = model_ref(weights).digest
    res = probe(tmp_path / "nothing", tmp_path / "c.json", good, "--weights-only")
    assert res.returncode == 1 and "weights directory not found" in res.stdout
    (weights / "escape").symlink_to(tmp_path)
    res = probe(weights, tmp_path / "c.json", good, "--weights-only")
    assert res.returncode == 1 and "outside the weights directory" in res.stdout


def test_serving_images_ship_the_same_manifest_code() -> None:
    line = "COPY pipeline/supplychain/weights_manifest.py /usr/local/lib/llmgate/weights_manifest.py"
    for name in ("cpu.Dockerfile", "vllm.cuda.Dockerfile"):
        assert line in (REPO / "dockerfiles" / name).read_text(), name
    assert "!pipeline/supplychain/weights_manifest.py" in (REPO / ".dockerignore").read_text().splitlines()
    source = (REPO / "pipeline" / "supplychain" / "weights_manifest.py").read_text()
    imports = {ln.split()[1] for ln in source.splitlines() if ln.startswith(("import ", "from "))}
    assert imports <= {"__future__", "hashlib", "json", "os", "stat", "collections.abc", "dataclasses"}, imports


def _stand_ins(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH with the readiness helper (run by this interpreter) and a stand-in `transformers` that writes
    a marker when the entrypoint starts it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "server-started"
    scripts = {"llmgate-ready": f'#!/bin/sh\nexec "{sys.executable}" "{HELPER}" "$@"\n',
               "transformers": f'#!/bin/sh\necho started > "{marker}"\n'}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    return bin_dir, marker


@pytest.mark.parametrize("matches", [True, False])
def test_the_entrypoint_verifies_the_weights_before_the_server_loads_them(weights: Path, tmp_path: Path,
                                                                          matches: bool) -> None:
    bin_dir, marker = _stand_ins(tmp_path)
    want = model_ref(weights).digest if matches else "sha256:" + "0" * 64
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL_PATH": str(weights), "LLMGATE_MODEL_DIGEST": want,
           "LLMGATE_READY_CACHE": str(tmp_path / "c.json")}
    res = subprocess.run(["sh", str(REPO / "dockerfiles" / "runtime" / "llmgate-serve-cpu")], capture_output=True,
                         text=True, env=env, timeout=60, check=False)
    if matches:
        assert res.returncode == 0 and marker.exists(), res.stdout + res.stderr
        assert "before the server starts: full manifest" in res.stdout
    else:
        assert res.returncode == 1 and not marker.exists()  # the server never started on unverified weights
        assert f"expected {want}" in res.stdout


def test_every_entrypoint_checks_the_weights_before_its_server() -> None:
    for name, server in (("cpu", "exec transformers serve"), ("vllm", "exec vllm serve"),
                         ("llamacpp", "exec python3 -m llama_cpp.server")):
        text = (REPO / "dockerfiles" / "runtime" / f"llmgate-serve-{name}").read_text()
        check = text.index("llmgate-ready --before-start || exit 1")
        assert check < text.index(server), name


# --- the second half of ready: a real streamed token from the server ------------------------------------


class _Server:
    """A stand-in OpenAI-compatible server on a free port: answers each POST with `status` and `body`
    (an SSE stream as servers send it) and records the requests it got."""

    def __init__(self, status: int, body: bytes) -> None:
        import http.server
        import threading

        outer = self
        self.requests: list[tuple[str, dict[str, str], dict]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append((self.path, dict(self.headers), json.loads(data)))
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _sse(*events: object, space: bool = True) -> bytes:
    sep = "data: " if space else "data:"
    return "".join(f"{sep}{e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events).encode()


ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}  # vLLM's first chunk
TOKEN = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}


def ready(weights: Path, tmp_path: Path, server: _Server | None, **env: str) -> subprocess.CompletedProcess[str]:
    extra = {"PORT": str(server.port) if server else "9", "READY_HOST": "127.0.0.1", **env}
    keep = {k: v for k, v in os.environ.items() if not k.startswith("READY_")}
    keep.update({"MODEL_PATH": str(weights), "LLMGATE_READY_CACHE": str(tmp_path / "c.json"),
                 "LLMGATE_MODEL_DIGEST": model_ref(weights).digest, "READY_TIMEOUT_S": "5", **extra})
    return subprocess.run([sys.executable, str(HELPER)], capture_output=True, text=True, env=keep, timeout=60,
                          check=False)


def test_ready_needs_a_streamed_token_and_asks_for_exactly_one(weights: Path, tmp_path: Path) -> None:
    with _Server(200, _sse(ROLE, TOKEN, "[DONE]")) as srv:
        res = ready(weights, tmp_path, srv)
    assert res.returncode == 0 and "ready: streamed a completion token" in res.stdout, res.stdout + res.stderr
    [(path, headers, body)] = srv.requests
    assert path == "/v1/chat/completions"
    assert headers["Accept"] == "text/event-stream" and headers["Content-Type"] == "application/json"
    assert body == {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1, "stream": True,
                    "temperature": 0}  # no "model": the server is pinned to the one it started with


def test_ready_model_and_path_come_from_the_environment(weights: Path, tmp_path: Path) -> None:
    with _Server(200, _sse(TOKEN)) as srv:
        res = ready(weights, tmp_path, srv, READY_MODEL="tiny", READY_PATH="/openai/v1/chat/completions")
    assert res.returncode == 0, res.stdout + res.stderr
    [(path, _, body)] = srv.requests
    assert path == "/openai/v1/chat/completions" and body["model"] == "tiny"


def test_a_finish_reason_alone_is_a_generated_token(weights: Path, tmp_path: Path) -> None:
    """max_tokens 1 can end on a token that decodes to nothing: the finish reason still shows generation."""
    done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    with _Server(200, _sse(ROLE, done, "[DONE]", space=False)) as srv:
        res = ready(weights, tmp_path, srv)
    assert res.returncode == 0 and "ready: streamed" in res.stdout, res.stdout + res.stderr


def test_comments_and_unparsable_events_are_skipped_not_taken_as_tokens(weights: Path, tmp_path: Path) -> None:
    body = b": keep-alive\n\nevent: ping\n\n" + _sse("{not json", {"choices": None}, TOKEN, space=False)
    with _Server(200, body) as srv:
        res = ready(weights, tmp_path, srv)
    assert res.returncode == 0 and "ready: streamed" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("body", [
    _sse(ROLE, "[DONE]", TOKEN),  # nothing generated before [DONE]; what follows it is not the answer
    _sse(ROLE),  # the stream ends after the role chunk
    b"",  # 200 with an empty body
    b'{"choices": [{"delta": {"content": "Hi"}}]}\n',  # not an event stream
], ids=["done-first", "role-only", "empty", "not-sse"])
def test_a_stream_without_a_generated_token_is_not_ready(weights: Path, tmp_path: Path, body: bytes) -> None:
    with _Server(200, body) as srv:
        res = ready(weights, tmp_path, srv)
    assert res.returncode == 1 and "ready: streamed" not in res.stdout
    assert "not ready: the stream ended without a generated token" in res.stderr


@pytest.mark.parametrize("status", [202, 503])
def test_a_status_other_than_200_is_not_ready(weights: Path, tmp_path: Path, status: int) -> None:
    with _Server(status, _sse(TOKEN)) as srv:
        res = ready(weights, tmp_path, srv)
    assert res.returncode == 1 and "ready: streamed" not in res.stdout
    assert f"not ready: HTTP {'Error ' if status >= 400 else ''}{status}" in res.stderr


def test_no_server_is_not_ready(weights: Path, tmp_path: Path) -> None:
    res = ready(weights, tmp_path, None)
    assert res.returncode == 1 and res.stderr.startswith("not ready: ") and "Connection refused" in res.stderr


def test_a_pass_cut_short_resumes_and_only_a_complete_match_is_trusted(weights: Path, tmp_path: Path) -> None:
    """A probe's timeout can cut the first pass short: its entries are reused by the next probe, which
    completes the pass and records it; a mismatch is never recorded as a complete pass."""
    cache = tmp_path / "c.json"
    good = model_ref(weights).digest
    assert probe(weights, cache, good, "--weights-only").returncode == 0
    data = json.loads(cache.read_text())
    data["complete"] = False
    del data["digest"]
    cache.write_text(json.dumps(data))  # as left by a pass that hashed every file but did not finish
    res = probe(weights, cache, good, "--weights-only")
    assert res.returncode == 0 and "0 file(s) read, 3 hashed earlier in this start" in res.stdout
    data = json.loads(cache.read_text())
    assert data["complete"] is True and data["digest"] == good
    assert "verified at this start; 0 file(s)" in probe(weights, cache, good, "--weights-only").stdout

    (weights / "config.json").write_text('{"model_type": "other"}')
    assert probe(weights, cache, good, "--weights-only").returncode == 1
    assert json.loads(cache.read_text())["complete"] is False


def test_a_malformed_cache_entry_costs_that_file_a_read_and_no_other(weights: Path, tmp_path: Path) -> None:
    cache = tmp_path / "new" / "dirs" / "c.json"  # the cache's folders are made as needed
    good = model_ref(weights).digest
    assert probe(weights, cache, good, "--weights-only").returncode == 0
    data = json.loads(cache.read_text())
    first, second, third = sorted(data["entries"])
    # an entry of another shape (an older helper's), and one that is no list at all
    data["entries"] = {first: "not a stat key", second: 5, third: data["entries"][third]}
    cache.write_text(json.dumps(data))
    res = probe(weights, cache, good, "--weights-only")
    assert res.returncode == 0 and "verified at this start; 2 file(s) with a changed" in res.stdout, res.stdout


def _helper_module():  # type: ignore[no-untyped-def]
    """The helper loaded in this process (it has no .py name), to reach its functions directly."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("llmgate_ready", str(HELPER))
    spec = importlib.util.spec_from_loader("llmgate_ready", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _saving_helper(weights: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[tuple[bool, int]]]:
    """The helper over `weights`, and the list of its cache saves as (complete, entries) as they happen."""
    mod = _helper_module()
    monkeypatch.setenv("MODEL_PATH", str(weights))
    monkeypatch.setenv("LLMGATE_READY_CACHE", str(tmp_path / "c.json"))
    saved: list[tuple[bool, int]] = []
    real_save = mod.save_cache

    def spy(path: Path, data: dict) -> None:  # type: ignore[type-arg]
        saved.append((bool(data["complete"]), len(data["entries"])))
        real_save(path, data)

    monkeypatch.setattr(mod, "save_cache", spy)
    return mod, saved


def test_a_long_first_pass_saves_its_progress_and_a_trusted_pass_does_not(
        weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first pass saves what it hashed every SAVE_EVERY_S (here: after every file), so a probe cut
    short by its timeout resumes; a pass that starts from a verification of this start writes nothing."""
    mod, saved = _saving_helper(weights, tmp_path, monkeypatch)
    monkeypatch.setattr(mod, "SAVE_EVERY_S", -1.0)
    good = model_ref(weights).digest
    assert mod.check_weights(good) is True
    assert saved == [(False, 1), (False, 2), (False, 3), (True, 3)]
    saved.clear()
    assert mod.check_weights(good) is True
    assert saved == []


def test_a_first_pass_saves_once_more_than_save_every_s_has_passed_since_the_last_save(
        weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a clock that moves 1 s per reading: the pass starts at 100 s (101 s is its duration's start), the
    files are hashed at 102, 103 and 105 s. Exactly 2 s since the start is not more than SAVE_EVERY_S (2 s),
    3 s is: the pass saves after the second file (at 104 s), not after the third (1 s later), then once
    complete."""
    mod, saved = _saving_helper(weights, tmp_path, monkeypatch)
    ticks = iter(range(100, 10_000))
    monkeypatch.setattr(mod, "time", type("Clock", (), {"monotonic": staticmethod(lambda: float(next(ticks)))}))
    assert mod.SAVE_EVERY_S == 2.0
    assert mod.check_weights(model_ref(weights).digest) is True
    assert saved == [(False, 2), (True, 3)]


def test_a_start_identity_without_proc_is_still_a_start_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a kernel without /proc/1/stat or boot_id the helper still runs: the identity is just weaker."""
    mod = _helper_module()
    real = mod.start_id()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    # proc(5): "pid (comm) state ..." where comm may hold spaces and parentheses; starttime is field 22
    fields = re.fullmatch(r"\d+ \(.*\) (.*)", Path("/proc/1/stat").read_text().strip(), re.DOTALL)
    assert fields is not None
    assert real == f"{boot}:{fields.group(1).split()[22 - 3]}"

    def unreadable(self: Path, *a: object, **k: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert mod.start_id() == ":"


def test_an_unwritable_cache_costs_speed_never_readiness(weights: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    res = probe(weights, blocker / "c.json", model_ref(weights).digest, "--weights-only")
    assert res.returncode == 0 and "weights verified" in res.stdout, res.stdout + res.stderr
    assert f"cannot write cache {blocker / 'c.json'}" in res.stdout


def test_a_complete_pass_for_another_digest_is_not_trusted(weights: Path, tmp_path: Path) -> None:
    """A cache vouches only for the digest it verified: a complete pass recorded for other weights is a
    cache of hashes, not a verification."""
    cache = tmp_path / "c.json"
    good = model_ref(weights).digest
    assert probe(weights, cache, good, "--weights-only").returncode == 0
    data = json.loads(cache.read_text())
    data["digest"] = "sha256:" + "7" * 64
    cache.write_text(json.dumps(data))
    res = probe(weights, cache, good, "--weights-only")
    assert res.returncode == 0 and "0 file(s) read, 3 hashed earlier in this start" in res.stdout, res.stdout
