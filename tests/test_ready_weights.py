"""The serving images' readiness helper checks the mounted weights against LLMGATE_MODEL_DIGEST.

The helper (dockerfiles/runtime/llmgate-ready) is run as the image runs it: a fresh process each
probe, reading its environment, on real temp directories; the entrypoints (dockerfiles/runtime/
llmgate-serve-*) run it before the server, with a stand-in server on PATH that records whether it ran."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

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
