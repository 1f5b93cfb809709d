"""What signing evidence where it is measured costs: a link per stage, the gate's checks, the verdict log.

Builds a run shaped like the demo's (an eval result with `--items` scored items, a bench result with
`--samples` latency samples per series, small build/leak/scan/sign/boot/manifests results), then times,
best of `--repeat`:

- loading the signing key (cosign's scrypt KDF: paid once per process);
- `result_digest` and `sign_result` for the eval and bench results (what the Runner adds per stage);
- `require_evidence` over the whole run (what the gate adds before judging);
- appending to a verdict log of `--log` entries in a SQLite store and reading it back verified (what each
  gate, attest and promotion adds).

Usage: python benchmarks/evidence_signing.py [--items 505] [--samples 2000] [--log 1000] [--repeat 5]
Target: signing a stage's result costs milliseconds, not seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.models import (
    GroundTruthRef,
    ImageRef,
    ItemResult,
    ModelRef,
    PolicyRef,
    RunRecord,
    Stage,
    StageResult,
    StageStatus,
    utcnow,
)
from pipeline.store import Store
from pipeline.supplychain import cosign_keys as ck
from pipeline.supplychain.evidence import require_evidence, result_digest, sign_result
from pipeline.supplychain.verdict_log import LogEntry, VerdictLog

REPOSITORY = "127.0.0.1:5000/llmgate/server"


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_run(items: int, samples: int) -> RunRecord:
    run = RunRecord(image=ImageRef(repository=REPOSITORY, tag="bench", digest="sha256:" + "ab" * 32),
                    model=ModelRef(path="/m", digest="sha256:" + "cd" * 32, files=4, bytes=1 << 30),
                    policy=PolicyRef(name="gates.yaml", files=["gates.yaml"], sha256="ef" * 32),
                    ground_truth=GroundTruthRef(version="v2", sha256="01" * 32, n_items=items), config_hash="23" * 32)
    run.stages["eval"] = StageResult(stage=Stage.EVAL, status=StageStatus.OK, metrics={"correctness_mean": 0.9}, items=[
        ItemResult(item_id=f"q{i}", question="What is the capital of France? " * 3, reference="Paris",
                   response="The capital of France is Paris. " * 4, latency_s=0.8, ttft_s=0.05,
                   scores={"correctness": 1.0, "faithfulness": 0.9, "refusal": 1.0}) for i in range(items)]).finish()
    series = {name: [0.001 * (i % 997) for i in range(samples)] for name in ("ttft_s", "tpot_s", "itl_s", "e2e_s")}
    run.stages["bench"] = StageResult(stage=Stage.BENCH, status=StageStatus.OK, samples=series,
                                      metrics={"ttft_p99_s": 0.2}).finish()
    for stage in (Stage.BUILD, Stage.LEAK, Stage.SCAN, Stage.SIGN, Stage.BOOT, Stage.MANIFESTS):
        run.stages[stage.value] = StageResult(stage=stage, status=StageStatus.OK, metrics={"x": 1.0}).finish()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=505)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--log", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="llmgate-evidence-bench-") as tmp:
        files = ck.write_key_pair(Path(tmp) / "keys", b"")
        load = best(lambda: ck.load_private_key_file(files.private_key, b""), max(1, args.repeat // 2))
        key = ck.load_private_key_file(files.private_key, b"")
        run = make_run(args.items, args.samples)
        size = {s: len(run.stages[s].model_dump_json()) for s in ("eval", "bench")}
        digest = {s: best(lambda s=s: result_digest(run.stages[s]), args.repeat) for s in ("eval", "bench")}
        sign = {s: best(lambda s=s: sign_result(run.stages[s], run, key), args.repeat) for s in ("eval", "bench")}
        for s in run.stages.values():
            sign_result(s, run, key)
        verify = best(lambda: require_evidence(run, key.public, signing=True), args.repeat)

        store = Store(Path(tmp) / "results.db")
        log = VerdictLog(store, key.public, seen_dir=Path(tmp) / "seen", read_registry=False)

        def entry(i: int) -> LogEntry:
            return LogEntry(repository=REPOSITORY, image=run.image.digest or "", model=f"sha256:{i:064x}",
                            decision="pass", run_id=f"r{i}", created=utcnow(),
                            verdict_sha256=hashlib.sha256(str(i).encode()).hexdigest())

        t0 = time.perf_counter()
        for i in range(args.log - 1):
            log.append(REPOSITORY, entry(i), key)
        fill = time.perf_counter() - t0
        append = best(lambda: log.append(REPOSITORY, entry(args.log + int(time.time_ns() % 1_000_000)), key), 1)
        view = best(lambda: log.view(REPOSITORY), args.repeat)

    out = {
        "key_load_s": round(load, 4),
        "result_bytes": size,
        "result_digest_ms": {k: round(v * 1e3, 2) for k, v in digest.items()},
        "sign_result_ms": {k: round(v * 1e3, 2) for k, v in sign.items()},
        "gate_require_evidence_ms": round(verify * 1e3, 2),
        "log_entries": args.log,
        "log_fill_mean_append_ms": round(fill / max(1, args.log - 1) * 1e3, 2),
        "log_append_at_size_ms": round(append * 1e3, 2),
        "log_view_verified_ms": round(view * 1e3, 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
