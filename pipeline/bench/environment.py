"""Noisy-neighbour check: was the bench machine disturbed while latency was measured?

Latency figures from a machine where the hypervisor gave CPU time to other guests (steal), or where
other work already kept the CPUs busy before the bench started, say more about the neighbours than
about the release. The bench reads the kernel's CPU accounting (`/proc/stat`) and load average
(`/proc/loadavg`, proc(5)) over a short quiet window before the bench and across the bench itself;
the gate engine then marks the run's performance gates inconclusive (`environment_disturbed`)
instead of blocking or passing them.

What each reading can tell:
- steal (before and during): time the hypervisor ran something else while this VM wanted the CPU;
  it is never the bench's own doing, so it is judged in both windows.
- busy before: the share of CPU time spent outside idle during the quiet window, before any request
  is sent (the server is up and idle); high means other work competes for the CPUs.
- others during: the CPU time spent during the bench by processes that are neither the bench (this
  process and its children) nor the server under test (the process trees of the server pids the boot
  stage recorded), as a share of all CPU time: the machine's busy time (/proc/stat) minus what those
  trees used (/proc/[pid]/stat utime, stime and the reaped children's cutime, cstime). Work that starts
  mid-bench (another job's build, a test suite) shows here even when the quiet window before was quiet.
  It is read only when every process of the bench's own side can be told apart: a local server whose
  pid is unknown would count as other work, so then it is not judged.
- load average (1-minute, per CPU): recorded for people, not judged; it trails by a minute and
  includes the boot that just happened and the bench's own work.
`share` (EnvironmentReport) is what the gate engine may blame a slowdown on: a machine that lost a share
s of its CPU time is at most 1 / (1 - s) times slower for the release.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.schemas.bench import DisturbanceLimits, EnvironmentReport


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU time (clock ticks) over all CPUs, and the load average, at one moment."""

    total: int
    idle: int  # idle + iowait
    steal: int
    load1: float
    cpus: int


def read_sample(proc: Path = Path("/proc")) -> CpuSample:
    """Parse `/proc/stat` ("cpu user nice system idle iowait irq softirq steal guest guest_nice", guest
    time already counted in user/nice) and `/proc/loadavg`. OSError/ValueError when unreadable."""
    stat = (proc / "stat").read_text().splitlines()
    head = next(line for line in stat if line.startswith("cpu "))
    fields = [int(x) for x in head.split()[1:]]
    fields += [0] * (10 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    cpus = sum(1 for line in stat if line.startswith("cpu") and line[3:4].isdigit()) or (os.cpu_count() or 1)
    load1 = float((proc / "loadavg").read_text().split()[0])
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return CpuSample(total=total, idle=idle + iowait, steal=steal, load1=load1, cpus=cpus)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole > 0 else None


def tree_ticks(proc: Path, roots: Sequence[int]) -> int | None:
    """CPU clock ticks used by the processes `roots` and all their descendants (proc(5) /proc/[pid]/stat:
    utime, stime, and cutime, cstime of children already reaped), or None when a root is not there."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue  # exited while listing
        rest = raw[raw.rfind(")") + 2 :].split()  # comm may hold spaces and parentheses
        try:
            pid, ppid = int(d.name), int(rest[1])
            ticks[pid] = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        except (IndexError, ValueError):
            continue
        parent[pid] = ppid
    if any(r not in ticks for r in roots):
        return None
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return sum(ticks[p] for p in seen)


class EnvironmentProbe:
    """`before()` over a quiet window, `start()` when the first request goes, `stop()` after the last.

    `own` are the pids whose process trees are the bench's own side (this process, a local server's
    pid); None: nothing is attributed, and other processes' CPU time is not read."""

    def __init__(
        self,
        *,
        proc: Path = Path("/proc"),
        limits: DisturbanceLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        own: Sequence[int] | None = None,
    ) -> None:
        self.proc, self.limits, self.clock, self.sleep = proc, limits or DisturbanceLimits(), clock, sleep
        self.own = list(own) if own is not None else None
        self._before: tuple[CpuSample, CpuSample, float] | None = None
        self._start: tuple[CpuSample, float] | None = None
        self._own_start: int | None = None
        self._unreadable: str | None = None

    def _read(self) -> CpuSample | None:
        try:
            return read_sample(self.proc)
        except (OSError, ValueError, StopIteration) as exc:
            self._unreadable = f"cannot read CPU accounting under {self.proc}: {exc}"
            return None

    def before(self, window_s: float = 1.0) -> None:
        """Sample a quiet window (nothing of the bench running yet)."""
        t0, a = self.clock(), self._read()
        self.sleep(window_s)
        b = self._read()
        if a is not None and b is not None:
            self._before = (a, b, self.clock() - t0)

    def quiet(self, window_s: float = 1.0) -> bool:
        """Sample a window now and say whether it was quiet (no steal, the CPUs not busy): for waiting
        until other work is over before measuring again."""
        t0, a = self.clock(), self._read()
        self.sleep(window_s)
        b = self._read()
        if a is None or b is None:
            return True  # nothing can be judged, nothing to wait for
        self._before = (a, b, self.clock() - t0)
        dt = b.total - a.total
        steal = _share(b.steal - a.steal, dt) or 0.0
        busy = _share(dt - (b.idle - a.idle) - (b.steal - a.steal), dt) or 0.0
        return steal <= self.limits.steal and busy <= self.limits.busy_before

    def _own_ticks(self) -> int | None:
        if not self.own:
            return None
        try:
            return tree_ticks(self.proc, self.own)
        except OSError:
            return None

    def start(self) -> None:
        s = self._read()
        if s is not None:
            self._start = (s, self.clock())
            self._own_start = self._own_ticks()

    def stop(self) -> EnvironmentReport:
        end = self._read()
        lim = self.limits
        if self._unreadable or end is None:
            return EnvironmentReport(cpus=os.cpu_count() or 1, window_before_s=0.0, window_during_s=0.0,
                                     steal_before=None, steal_during=None, busy_before=None, load_before=None,
                                     load_during=None, limits=lim, disturbed=False, unreadable=self._unreadable)
        steal_b = busy_b = load_b = None
        win_b = 0.0
        if self._before is not None:
            a, b, win_b = self._before
            dt = b.total - a.total
            steal_b = _share(b.steal - a.steal, dt)
            busy_b = _share(dt - (b.idle - a.idle) - (b.steal - a.steal), dt)
            load_b = a.load1 / a.cpus
        steal_d = others_d = None
        win_d = 0.0
        if self._start is not None:
            s, t = self._start
            dt = end.total - s.total
            steal_d = _share(end.steal - s.steal, dt)
            win_d = self.clock() - t
            own_end = self._own_ticks() if self._own_start is not None else None
            if own_end is not None and self._own_start is not None and dt > 0:
                busy = dt - (end.idle - s.idle) - (end.steal - s.steal)
                others_d = min(1.0, max(0.0, (busy - (own_end - self._own_start)) / dt))
        reasons = []
        for label, v in (("before", steal_b), ("during", steal_d)):
            if v is not None and v > lim.steal:
                reasons.append(f"CPU steal {v:.1%} {label} the bench (limit {lim.steal:.0%})")
        if busy_b is not None and busy_b > lim.busy_before:
            reasons.append(
                f"CPUs {busy_b:.0%} busy before the bench started (limit {lim.busy_before:.0%}): other work was running"
            )
        if others_d is not None and others_d > lim.others_during:
            reasons.append(
                f"other processes used {others_d:.0%} of the CPUs during the bench (limit {lim.others_during:.0%})"
            )
        return EnvironmentReport(
            cpus=end.cpus, window_before_s=win_b, window_during_s=win_d, steal_before=steal_b, steal_during=steal_d,
            busy_before=busy_b, load_before=load_b, load_during=end.load1 / end.cpus, others_during=others_d,
            limits=lim, disturbed=bool(reasons), reasons=reasons,
        )
