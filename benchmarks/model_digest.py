"""Weights-manifest throughput against `sha256sum` on the same files.

Creates a temporary weights directory (default: 4 shards of 64 MiB of random bytes plus a few small
files), reads it once so both contenders start from the page cache, then times `sha256sum` over
every file and `build_manifest` (the code the pipeline and the serving image's readiness helper
run), alternating, `--repeat` times each, and prints the best MB/s of each and the ratio.

Usage: python benchmarks/model_digest.py [--mib-per-shard 64] [--shards 4] [--repeat 3] [--dir DIR]
Target: manifest throughput >= 80 % of sha256sum's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.supplychain.weights_manifest import build_manifest


def make_weights(root: Path, shards: int, mib: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = []
    block = os.urandom(1 << 20)
    for i in range(shards):
        p = root / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        with p.open("wb") as f:
            for j in range(mib):
                f.write(block[j % 7:] + block[: j % 7])  # distinct blocks, cheap to make
        files.append(p)
    for name, text in (("config.json", '{"model_type": "llama"}'), ("tokenizer.json", "{}" * 1000)):
        (root / name).write_text(text)
        files.append(root / name)
    return files


def time_sha256sum(files: list[Path]) -> float:
    t0 = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def time_manifest(root: Path) -> float:
    t0 = time.perf_counter()
    build_manifest(root)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib-per-shard", type=int, default=64)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to create the files (default: a temp dir)")
    args = ap.parse_args()
    if shutil.which("sha256sum") is None:
        print("sha256sum not found (coreutils)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="llmgate-digest-bench-", dir=args.dir))
    try:
        root = base / "weights"
        files = make_weights(root, args.shards, args.mib_per_shard)
        total = sum(p.stat().st_size for p in files)
        time_sha256sum(files)  # warm the page cache for both
        ref, ours = [], []
        for _ in range(args.repeat):
            ref.append(time_sha256sum(files))
            ours.append(time_manifest(root))
        mb = total / 1e6
        ref_mbs, our_mbs = mb / min(ref), mb / min(ours)
        print(f"files: {len(files)}, {mb:.0f} MB (page cache warm), best of {args.repeat}")
        print(f"sha256sum:       {ref_mbs:8.1f} MB/s")
        print(f"weights manifest:{our_mbs:8.1f} MB/s")
        print(f"ratio:           {our_mbs / ref_mbs:8.2f} (target >= 0.80)")
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
