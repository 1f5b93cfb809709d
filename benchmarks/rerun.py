"""Re-run cost of `llmgate run` on the local CPU demo: cold, unchanged, and with changed weights.

Four runs of the real CLI against the local stack (registry on 127.0.0.1:5000, Docker Engine), in a
fresh work dir and store of their own, so the first run finds nothing to reuse:

  cold             first run of the demo model                       (nothing stored)
  unchanged        the same release again, default flags              (boot, bench and eval reused while the
                                                                       policy's reuse.bench_max_age_s allows)
  remeasure        the same release again with --remeasure            (boot and bench measured again)
  changed weights  the same image, ground truth and policy, other weights (the degraded demo model)

For each it prints the wall time of the command and the per-stage split read back from the run
record (duration, or the run a reused result came from, and why), then the targets: an unchanged
re-run with the default flags <= 10 % of the cold run's wall time, and a changed-weights re-run that
rebuilds nothing (build, leak and scan reused). The load average before and after is printed: figures
from a busy machine are not a quiet one's (a disturbed bench is never reused, so on a busy machine the
unchanged re-run may rightly measure again).

"Cold" means no stored results; BuildKit's layer cache is the machine's own (pruning shared caches is
not this script's business), so the cold build may be faster than on a new machine. A build is
reused from the same tracked source content (commit, plus uncommitted changes keyed by their content).

Usage: python benchmarks/rerun.py [--models DIR] [--workdir DIR] [--tag TAG] [--keep]
Needs: `llmgate stack up` (registry and engine); makes the demo models under --models when absent.
Takes several minutes: run it with `nice`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.models import RunRecord
from pipeline.report.units import fmt_seconds
from pipeline.store import Store

TARGET = 0.10  # unchanged re-run wall time / cold wall time
NEVER_REBUILT = ("build", "leak", "scan")  # what a changed-weights re-run must reuse


@dataclass
class Timed:
    label: str
    wall_s: float
    exit_code: int
    run: RunRecord
    remeasured: list[str]  # the command's own lines saying why a stored measurement was not reused


def llmgate() -> list[str]:
    exe = Path(sys.executable).with_name("llmgate")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline"]


def ensure_model(models: Path, name: str, degraded: bool) -> Path:
    out = models / name
    if not (out / "config.json").is_file():
        cmd = [*llmgate(), "demo-model", str(out), *(["--degraded"] if degraded else [])]
        print(f"making the demo model: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    return out


def run_once(label: str, workdir: Path, model: Path, tag: str, *extra: str, log: Path) -> Timed:
    cmd = [*llmgate(), "--workdir", str(workdir), "run", "--model-dir", str(model), "--tag", tag, *extra]
    print(f"\n== {label}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False,
                          env={**os.environ, "NO_COLOR": "1"})
    wall = time.perf_counter() - start
    with log.open("a") as fh:
        fh.write(f"\n== {label}: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    remeasured = [line.split("] ", 1)[-1] for line in (proc.stdout + proc.stderr).splitlines()
                  if ": measuring again: " in line]
    store = Store(workdir / "results.db")
    try:
        newest = store.runs(limit=1)
    finally:
        store.close()
    if not newest:
        raise SystemExit(f"{label}: no run recorded (exit {proc.returncode}); see {log}")
    run = newest[0]
    print(f"   exit {proc.returncode} ({run.decision.value}) in {fmt_seconds(wall)}; run {run.run_id}", flush=True)
    return Timed(label, wall, proc.returncode, run, remeasured)


def stage_split(t: Timed) -> str:
    parts = []
    for name, res in t.run.stages.items():
        if res.reused_from:
            parts.append(f"{name} reused({res.reused_from})")
        else:
            took = fmt_seconds(res.duration_s) if res.duration_s is not None else "-"
            parts.append(f"{name} {took}" + ("" if res.status.value == "ok" else f" [{res.status.value}]"))
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=REPO / ".llmgate" / "models",
                    help="where the demo models are (made when absent)")
    ap.add_argument("--workdir", type=Path, default=None, help="work dir and store (default: a fresh temp dir)")
    ap.add_argument("--tag", default="report-rerun", help="image tag the runs use")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    args = ap.parse_args()

    good = ensure_model(args.models, "demo-v3", degraded=False)
    other = ensure_model(args.models, "demo-v3-degraded", degraded=True)
    print(f"machine: {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f} (1, 5, 15 min)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="llmgate-rerun-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "rerun.log"
    print(f"work dir {workdir} (log {log})")
    try:
        runs = [
            run_once("cold", workdir, good, args.tag, log=log),
            run_once("unchanged", workdir, good, args.tag, log=log),
            run_once("remeasure", workdir, good, args.tag, "--remeasure", log=log),
            run_once("changed weights", workdir, other, args.tag, log=log),
        ]
    finally:
        if args.workdir is None and not args.keep:
            print(f"(removing {workdir}; --keep keeps it)")

    cold = runs[0].wall_s
    print("\nwall time and per-stage split (duration, or reused from run):")
    for t in runs:
        print(f"  {t.label:<16} {fmt_seconds(t.wall_s):>10}  {t.wall_s / cold:6.1%} of cold  exit {t.exit_code}")
        print(f"  {'':<16} {stage_split(t)}")
    unchanged = runs[1]
    ok = unchanged.wall_s <= TARGET * cold
    print(f"target unchanged re-run (default flags) <= {TARGET:.0%} of cold: {'met' if ok else 'MISSED'} "
          f"({unchanged.wall_s / cold:.1%})")
    for name, res in unchanged.run.stages.items():
        if res.reused_from and name in ("boot", "bench"):
            print(f"  {name}: {res.reason}")
        elif name in ("boot", "bench"):
            print(f"  {name}: measured again ({fmt_seconds(res.duration_s) if res.duration_s else '-'})")
    for line in unchanged.remeasured:
        print(f"  why: {line}")
    changed = runs[3].run
    rebuilt = [s for s in NEVER_REBUILT if (r := changed.stages.get(s)) is None or not r.reused_from]
    same_image = changed.image.digest == runs[0].run.image.digest
    print(f"changed weights: image {'unchanged' if same_image else 'CHANGED'} ({changed.image.digest}), "
          f"model {changed.model.digest if changed.model else '-'} (cold: "
          f"{runs[0].run.model.digest if runs[0].run.model else '-'})")
    if not rebuilt:
        print("target changed weights rebuild nothing: met (build, leak, scan reused)")
    else:
        print(f"target changed weights rebuild nothing: MISSED (recomputed: {', '.join(rebuilt)})")
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
