"""What a cold `llmgate run` of the demo model spends its time on, on this machine.

1. One cold `llmgate run` of the good demo model in a fresh work dir (nothing stored; the machine's
   BuildKit cache as it is): the command's wall time and every stage's from the record (leak, scan and
   sign run side by side, so their figures overlap), eval split into collection and scoring.
2. The heavy parts again, one at a time so they do not share the CPUs, each with its wall time and the
   CPU time of this process's children (llmgate and the tools it runs; a serving container's CPU is the
   engine's and is not counted):
     leak      `llmgate stage leak --fresh`: the walk over every layer of the pushed image
     scan      `llmgate stage scan --fresh`: trivy
     scoring   `llmgate eval --rescore`: every score again from the stored answers (no server)
     boot      `llmgate stage boot --fresh`: a cold start until the first completion

Wall time on a busy machine is the neighbours' as much as llmgate's; CPU time is steadier. The load
average before and after is printed.

Usage: python benchmarks/cold_run.py [--model DIR] [--tag TAG] [--workdir DIR] [--keep]
Needs: `llmgate stack up` (registry and engine); makes the demo model when absent.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.models import RunRecord
from pipeline.report.units import fmt_seconds
from pipeline.schemas.eval import EvalDetails
from pipeline.store import Store


def llmgate() -> list[str]:
    exe = Path(sys.executable).with_name("llmgate")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline"]


def timed(args: list[str], log: Path) -> tuple[float, float, int]:
    """(wall s, children's CPU s, exit code) of one llmgate command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n== {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.run([*llmgate(), *args], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, check=False,
                              env={**os.environ, "NO_COLOR": "1"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def newest(workdir: Path) -> RunRecord:
    store = Store(workdir / "results.db")
    try:
        runs = store.runs(limit=1)
    finally:
        store.close()
    if not runs:
        raise SystemExit("no run recorded")
    return runs[0]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / ".llmgate" / "models" / "demo-v3")
    ap.add_argument("--tag", default="cold-run", help="image tag the run uses")
    ap.add_argument("--workdir", type=Path, default=None, help="work dir and store (default: a fresh temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    args = ap.parse_args()

    if not (args.model / "config.json").is_file():
        subprocess.run([*llmgate(), "demo-model", str(args.model)], cwd=REPO, check=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="llmgate-cold-"))
    log = workdir / "cold_run.log"
    print(f"machine: {os.cpu_count()} CPUs; {load()}\nwork dir {workdir} (log {log})")
    wd = ["--workdir", str(workdir)]
    try:
        wall, cpu, code = timed([*wd, "run", "--model-dir", str(args.model), "--tag", args.tag], log)
        run = newest(workdir)
        print(f"\n1. cold run: exit {code} ({run.decision.value}) in {fmt_seconds(wall)} "
              f"(llmgate and its tools: {fmt_seconds(cpu)} CPU)")
        for name, res in run.stages.items():
            took = res.duration_s or 0.0
            print(f"   {name:<10} {fmt_seconds(took):>10}  {took / wall:6.1%}")
        ev = run.stages.get("eval")
        details = ev.details_as(EvalDetails) if ev is not None else None
        if ev is not None and details is not None and details.collection is not None and ev.duration_s:
            collect = details.collection.duration_s
            print(f"   eval = collection {fmt_seconds(collect)} ({details.collection.n_items} items at concurrency "
                  f"{details.collection.concurrency}) + scoring {fmt_seconds(ev.duration_s - collect)}")

        print("\n2. one at a time (wall, CPU of llmgate and its tools):")
        rid = ["--run", run.run_id]
        for label, cmd in (("leak", ["stage", "leak", *rid, "--fresh"]), ("scan", ["stage", "scan", *rid, "--fresh"]),
                           ("scoring", ["eval", *rid, "--rescore"]), ("boot", ["stage", "boot", *rid, "--fresh"])):
            w, c, code = timed([*wd, *cmd], log)
            print(f"   {label:<10} {fmt_seconds(w):>10} wall  {fmt_seconds(c):>10} CPU  (exit {code})")
        print(f"\n{load()}")
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
