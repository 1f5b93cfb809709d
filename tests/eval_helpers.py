"""Helpers for the eval and demo-model tests: a small ground-truth subset, a demo model trained on
it, and `transformers serve` of that model on an ephemeral loopback port (the real server)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
GT_V1 = REPO / "ground_truth" / "v1"


GT_V2 = REPO / "ground_truth" / "v2"


def subset_ground_truth(dest_root: Path, n_answer: int, n_refuse: int, source: Path = GT_V1) -> Path:
    """`source`'s first n_answer should-answer and n_refuse should-refuse rows, as dest_root/<its version>."""
    rows = [json.loads(line) for line in (source / "data" / "test.jsonl").read_text().splitlines() if line.strip()]
    keep = [r for r in rows if r["expected_behaviour"] == "answer"][:n_answer]
    keep += [r for r in rows if r["expected_behaviour"] == "refuse"][:n_refuse]
    d = dest_root / source.name / "data"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    return dest_root / source.name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def transformers_serve(model_dir: Path, hub_cache: Path, timeout_s: float = 120) -> Iterator[str]:
    """`transformers serve MODEL_DIR` on 127.0.0.1:<ephemeral>; yields the base URL."""
    port = free_port()
    hub_cache.mkdir(parents=True, exist_ok=True)  # without a hub cache dir its /v1/models answers 500
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "OMP_NUM_THREADS": "1"}
    exe = Path(sys.executable).with_name("transformers")
    proc = subprocess.Popen(
        [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("transformers serve did not become healthy")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
