"""The serving images' readiness helper checks the mounted weights against LLMGATE_MODEL_DIGEST.

The helper (dockerfiles/runtime/llmgate-ready) is run as the image runs it: a fresh process each
probe, reading its environment, on real temp directories."""

from __future__ import annotations

import json
import os
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
    assert "full manifest, 3 file(s) read" in first.stdout
    assert json.loads(cache.read_text())["digest"] == good

    again = probe(weights, cache, good, "--weights-only")  # the next probe: a new process, files untouched
    assert again.returncode == 0 and "cached by path+size+mtime, 0 changed file(s) read" in again.stdout

    (weights / "model.safetensors").write_bytes(os.urandom(300_000))  # swapped weights, same size
    swapped = model_ref(weights).digest
    changed = probe(weights, cache, good, "--weights-only")
    assert changed.returncode == 1
    assert f"not ready: weights at {weights} have digest {swapped}, expected {good}" in changed.stdout
    assert "1 changed file(s) read" in changed.stdout


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
    assert res.returncode == 0 and "full manifest, 3 file(s) read" in res.stdout


def test_a_rewritten_file_is_read_again(weights: Path, tmp_path: Path) -> None:
    """The cache is keyed by size+mtime: a file rewritten with a new mtime is read again."""
    cache = tmp_path / "c.json"
    good = model_ref(weights).digest
    assert probe(weights, cache, good, "--weights-only").returncode == 0
    (weights / "config.json").write_text('{"model_type": "gpt2!"}')
    res = probe(weights, cache, good, "--weights-only")
    assert res.returncode == 1 and "1 changed file(s) read" in res.stdout


def test_unset_digest_is_logged_and_readiness_is_the_completion_check(weights: Path, tmp_path: Path) -> None:
    res = probe(weights, tmp_path / "c.json", None)
    assert "weights not checked: LLMGATE_MODEL_DIGEST is not set" in res.stdout
    assert res.returncode == 1 and "not ready:" in res.stderr  # nothing listens on port 9
    assert not (tmp_path / "c.json").exists()
    assert probe(weights, tmp_path / "c.json", None, "--weights-only").returncode == 0


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
