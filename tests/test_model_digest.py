"""Weights manifest: the content digest that is a release's model identity."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from pipeline.errors import BadInput
from pipeline.supplychain.model_digest import model_ref
from pipeline.supplychain.weights_manifest import CHUNK_BYTES, build_manifest, sha256_file


def _weights(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(os.urandom(3 * CHUNK_BYTES + 17))  # several chunks, ragged end
    (root / "sub" / "tokenizer.json").write_text("{}")
    (root / "empty").write_bytes(b"")
    return root


def test_manifest_is_canonical_json_of_every_file(tmp_path: Path) -> None:
    root = _weights(tmp_path / "w")
    ref = model_ref(root)
    m = build_manifest(root)
    doc = json.loads(m.raw)
    assert [f["path"] for f in doc["files"]] == ["config.json", "empty", "model.safetensors", "sub/tokenizer.json"]
    for f in doc["files"]:
        data = (root / f["path"]).read_bytes()
        assert f == {"path": f["path"], "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert m.raw == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert ref.digest == "sha256:" + hashlib.sha256(m.raw).hexdigest() == m.digest
    assert (ref.files, ref.bytes, ref.path) == (4, sum(f["size"] for f in doc["files"]), str(root))


def test_digest_depends_on_content_and_names_not_on_location_or_times(tmp_path: Path) -> None:
    a = _weights(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    for p in sorted(a.rglob("*")):
        dst = b / p.relative_to(a)
        dst.mkdir(exist_ok=True) if p.is_dir() else dst.write_bytes(p.read_bytes())
    os.utime(b / "config.json", (1, 1))
    (b / "emptydir").mkdir()
    assert model_ref(a).digest == model_ref(b).digest
    with (b / "model.safetensors").open("r+b") as f:  # one byte in the middle of a chunk
        f.seek(CHUNK_BYTES + 5)
        byte = f.read(1)
        f.seek(CHUNK_BYTES + 5)
        f.write(bytes([byte[0] ^ 1]))
    assert model_ref(a).digest != model_ref(b).digest
    (b / "model.safetensors").write_bytes((a / "model.safetensors").read_bytes())
    (b / "sub" / "tokenizer.json").rename(b / "sub" / "tokenizer2.json")
    assert model_ref(a).digest != model_ref(b).digest


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    p = tmp_path / "f"
    data = os.urandom(2 * CHUNK_BYTES + 3)
    p.write_bytes(data)
    assert sha256_file(p) == (len(data), hashlib.sha256(data).hexdigest())


def test_symlinks_inside_are_recorded_not_followed_outside_refused(tmp_path: Path) -> None:
    root = _weights(tmp_path / "w")
    (root / "link.json").symlink_to("sub/tokenizer.json")
    doc = json.loads(build_manifest(root).raw)
    assert {"path": "link.json", "symlink": "sub/tokenizer.json"} in doc["files"]
    assert model_ref(root).files == 4  # a link is recorded, not counted as a file

    secret = tmp_path / "outside.bin"
    secret.write_bytes(b"x")
    (root / "escape").symlink_to(secret)
    with pytest.raises(BadInput, match="outside the weights directory") as ei:
        model_ref(root)
    assert ei.value.where == str(root / "escape")
    (root / "escape").unlink()
    (root / "dangling").symlink_to("nope")
    with pytest.raises(BadInput, match="points to nothing"):
        model_ref(root)


def test_special_files_and_missing_dir_are_bad_input(tmp_path: Path) -> None:
    root = _weights(tmp_path / "w")
    os.mkfifo(root / "pipe")
    with pytest.raises(BadInput, match="not a regular file") as ei:
        model_ref(root)
    assert ei.value.where == str(root / "pipe")
    with pytest.raises(BadInput, match="not found"):
        model_ref(tmp_path / "missing")


def test_stat_cache_reuses_unchanged_files_only(tmp_path: Path) -> None:
    root = _weights(tmp_path / "w")
    first = build_manifest(root)
    known = {e.path: e for e in first.entries}
    again = build_manifest(root, known=known)
    assert again.digest == first.digest and again.hashed == 0
    st = (root / "config.json").stat()
    (root / "config.json").write_text('{"model_type": "gpt2"}')  # same size? no: force a new mtime too
    os.utime(root / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = build_manifest(root, known=known)
    assert changed.hashed == 1 and changed.digest != first.digest
    assert changed.digest == build_manifest(root).digest
