"""First contact: set-up and the demo from a fresh clone, split by phase (what a new user waits for).

Clones this repository (its HEAD commit: commit what you want measured) into a temporary directory and
runs there, with every command's wall time taken from bash's own trace (`PS4` carrying `$EPOCHREALTIME`):

  set-up  `bash scripts/setup.sh`: system packages (checked; installed only when missing), the virtual
          environment and `pip install` (the machine's pip cache as it is), `llmgate stack up` (engine,
          registry, base image), the signing key
  demo    `bash scripts/demo.sh`: both demo models, the good model's run and the degraded model's (each
          also split by stage from its run record, eval into collection and scoring), the dashboard

then checks the targets: the demo after set-up within 5 minutes, the good model passing and the degraded
one blocked, and the two model digests equal to the ones pinned in tests/test_demo_model.py (what a fresh
clone writes on any machine). The load average before and after is printed: the targets are for a quiet
2-core machine, and figures from a busy one are not that machine's.

The serving image is built with the machine's BuildKit cache as it is: on a machine that built it before,
the build is mostly cached (a new machine adds the torch and transformers layers).

Usage: python benchmarks/first_run.py [--dir DIR] [--keep] [--tag-prefix PREFIX] [--demo-only]
Needs: what scripts/setup.sh needs (Debian, root for missing packages, PyPI); takes several minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.report.units import fmt_seconds
from pipeline.store import Store
from pipeline.supplychain.weights_manifest import build_manifest

DEMO_TARGET_S = 300.0
TRACE = re.compile(r"^@+@(\d+\.\d+)@@ (.*)$")
# What each traced command is, by the first pattern its text matches (scripts/setup.sh, scripts/demo.sh).
PHASES = [
    ("system packages", re.compile(r"dpkg -s|apt-get|command -v (apt-get|kubectl)|id -u")),
    ("virtual environment", re.compile(r"-m venv")),
    ("pip install", re.compile(r"pip install")),
    ("stack up (engine, registry, base image)", re.compile(r"stack up")),
    ("signing key", re.compile(r"keys generate")),
    ("demo model (good)", re.compile(r"demo-model \S+demo-v\d+ ")),
    ("demo model (degraded)", re.compile(r"demo-model .*--degraded")),
    ("run: good model", re.compile(r" run --model-dir \S+demo-v\d+ ")),
    ("run: degraded model", re.compile(r" run --model-dir \S+-degraded ")),
    ("dashboard", re.compile(r" report --out")),
    ("run listing", re.compile(r" runs list")),
]


@dataclass
class Traced:
    wall_s: float
    exit_code: int
    cpu_s: float = 0.0  # the script's processes and the tools they ran (not a container's, nor dockerd's)
    phases: dict[str, float] = field(default_factory=dict)


def traced(script: str, cwd: Path, env: dict[str, str], log: Path) -> Traced:
    """Run `bash -x script`, each traced command's wall time summed into its phase ("other" otherwise).
    bash ignores a PS4 from the environment when run as root, so the trace format comes in through BASH_ENV
    (a file every non-interactive bash reads first)."""
    rc = log.with_suffix(".bashenv")
    rc.write_text("PS4='@@${EPOCHREALTIME}@@ '\n")
    env = {**env, "BASH_ENV": str(rc)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    with log.open("w") as fh:
        proc = subprocess.run(["bash", "-x", script], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                              check=False)
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    marks: list[tuple[float, str]] = []
    for line in log.read_text(errors="replace").splitlines():
        m = TRACE.match(line)
        if m:
            marks.append((float(m.group(1)), m.group(2)))
    phases: dict[str, float] = {}
    ends = [t for t, _ in marks[1:]] + [end]
    for (t, text), nxt in zip(marks, ends[: len(marks)], strict=True):
        name = next((n for n, pat in PHASES if pat.search(text)), "other")
        phases[name] = phases.get(name, 0.0) + (nxt - t)
    return Traced(wall_s=end - start, exit_code=proc.returncode, cpu_s=cpu, phases=phases)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return os.getloadavg().__repr__()


def pinned_digests() -> dict[str, str]:
    text = (REPO / "tests" / "test_demo_model.py").read_text()
    return dict(re.findall(r'"(good|degraded)": "(sha256:[0-9a-f]{64})"', text))


def stage_split(clone: Path) -> list[str]:
    store = Store(clone / ".llmgate" / "results.db")
    try:
        runs = list(reversed(store.runs(limit=2)))
    finally:
        store.close()
    lines = []
    for run in runs:
        parts = []
        for name, res in run.stages.items():
            took = "reused" if res.reused_from else fmt_seconds(res.duration_s) if res.duration_s else "-"
            parts.append(f"{name} {took}")
        ev = run.stages.get("eval")
        collection = getattr(getattr(ev.details, "collection", None), "duration_s", None) if ev else None
        if ev is not None and ev.duration_s and collection is not None and not ev.reused_from:
            parts.append(f"(eval: collection {fmt_seconds(collection)}, scoring "
                         f"{fmt_seconds(ev.duration_s - collection)})")
        lines.append(f"  {run.image.tag or run.run_id} [{run.decision.value}]: " + ", ".join(parts))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=None, help="where to clone (default: a fresh temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the clone")
    ap.add_argument("--tag-prefix", default="demo", help="image tags the demo pushes: PREFIX-good, PREFIX-degraded")
    ap.add_argument("--demo-only", action="store_true",
                    help="time only the demo, in the clone --dir already holds (set up by an earlier run); its "
                         "demo models and runs are removed first")
    args = ap.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="llmgate-first-run-"))
    clone = root / "llmgate"
    load_before = uptime()
    print(f"machine: {os.cpu_count()} CPUs; {load_before}")
    if args.demo_only:
        if not (clone / ".venv" / "bin" / "llmgate").exists():
            raise SystemExit(f"--demo-only: no set-up clone at {clone}")
        for stale in ("models", "runs", "site", "results.db"):
            path = clone / ".llmgate" / stale
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    else:
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], check=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    print(f"fresh clone of {head} in {clone}")
    env = {**os.environ, "NO_COLOR": "1", "DEMO_TAG": args.tag_prefix}
    env.pop("VIRTUAL_ENV", None)
    try:
        setup = Traced(wall_s=0.0, exit_code=0)
        if not args.demo_only:
            setup = traced("scripts/setup.sh", clone, env, root / "setup.log")
            print(f"set-up: exit {setup.exit_code} in {fmt_seconds(setup.wall_s)}, {fmt_seconds(setup.cpu_s)} CPU "
                  f"(log {root / 'setup.log'})")
            if setup.exit_code != 0:
                raise SystemExit("set-up failed; see the log")
        demo = traced("scripts/demo.sh", clone, env, root / "demo.log")
        print(f"demo:   exit {demo.exit_code} in {fmt_seconds(demo.wall_s)}, {fmt_seconds(demo.cpu_s)} CPU of llmgate "
              f"and its tools, the serving containers not counted (log {root / 'demo.log'})")
        print("\nphases (wall time):")
        for label, t in (("set-up", setup), ("demo", demo)):
            if not t.wall_s:
                continue
            for name, s in sorted(t.phases.items(), key=lambda kv: -kv[1]):
                print(f"  {label:<7} {name:<42} {fmt_seconds(s):>10}  {s / t.wall_s:6.1%}")
        print("\nruns (per stage, from the records):")
        print("\n".join(stage_split(clone)))
        digests = {name: build_manifest(clone / ".llmgate" / "models" / d).digest
                   for name, d in (("good", "demo-v3"), ("degraded", "demo-v3-degraded"))}
        pinned = pinned_digests()
        print("\ntargets:")
        ok = demo.wall_s <= DEMO_TARGET_S
        print(f"  demo after set-up <= {fmt_seconds(DEMO_TARGET_S)}: {'met' if ok else 'MISSED'} "
              f"({fmt_seconds(demo.wall_s)})")
        print(f"  good model passes, degraded blocked (demo.sh exit 0): {'met' if demo.exit_code == 0 else 'MISSED'}")
        for name, digest in digests.items():
            same = digest == pinned.get(name)
            print(f"  {name} model digest {digest[:19]}… equals the pinned one: {'met' if same else 'MISSED'}")
        print(f"\nload after: {uptime()}")
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"(kept {root})")


if __name__ == "__main__":
    main()
