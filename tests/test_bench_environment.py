"""The noisy-neighbour probe: readings from /proc in the kernel's own format (proc(5)), and the judgement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.bench.environment import DisturbanceLimits, EnvironmentProbe, read_sample

# /proc/stat as Linux writes it: aggregate line, one line per CPU, then other counters.
STAT = """cpu  {user} 0 {system} {idle} {iowait} 0 {softirq} {steal} 0 0
cpu0 1 0 1 1 0 0 0 0 0 0
cpu1 1 0 1 1 0 0 0 0 0 0
intr 123456 0 0
ctxt 987654
btime 1700000000
processes 4242
procs_running 3
procs_blocked 0
"""


class FakeProc:
    """A directory laid out like /proc with the two files the probe reads; each `tick` moves the counters."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.c = {"user": 1000, "system": 500, "idle": 8000, "iowait": 100, "softirq": 10, "steal": 0}
        self.load = 0.30
        self.write()

    def write(self) -> None:
        (self.root / "stat").write_text(STAT.format(**self.c))
        (self.root / "loadavg").write_text(f"{self.load:.2f} 0.25 0.20 2/345 6789\n")

    def tick(self, *, busy: int, idle: int, steal: int = 0) -> None:
        self.c["user"] += busy
        self.c["idle"] += idle
        self.c["steal"] += steal
        self.write()


def probe_with(proc: FakeProc, steps: list[dict[str, int]]) -> EnvironmentProbe:
    """A probe whose sleep advances the fake counters (the before window), then bench ticks by hand."""
    it = iter(steps)
    return EnvironmentProbe(proc=proc.root, sleep=lambda _s: proc.tick(**next(it)))


def test_quiet_machine_is_not_disturbed(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    probe = probe_with(proc, [{"busy": 20, "idle": 180}])
    probe.before(1.0)
    probe.start()
    proc.tick(busy=150, idle=50, steal=1)  # the bench itself keeps the CPUs busy: not a disturbance
    report = probe.stop()
    assert not report.disturbed and report.reasons == []
    assert report.busy_before == pytest.approx(0.1) and report.steal_during == pytest.approx(1 / 201)
    assert report.cpus == 2 and report.load_during == pytest.approx(0.15)
    assert report.metrics()["env_disturbed"] == 0.0 and report.metrics()["env_busy_before"] == pytest.approx(0.1)


def test_steal_during_the_bench_disturbs(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    probe = probe_with(proc, [{"busy": 20, "idle": 180}])
    probe.before()
    probe.start()
    proc.tick(busy=100, idle=60, steal=40)
    report = probe.stop()
    assert report.disturbed and report.steal_during == pytest.approx(0.2)
    assert report.reasons == ["CPU steal 20.0% during the bench (limit 5%)"]
    assert report.metrics()["env_disturbed"] == 1.0 and report.metrics()["env_steal_during"] == pytest.approx(0.2)


def test_busy_before_the_bench_disturbs(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    proc.load = 2.6
    proc.write()
    probe = probe_with(proc, [{"busy": 170, "idle": 30, "steal": 0}])
    probe.before()
    probe.start()
    proc.tick(busy=100, idle=100)
    report = probe.stop()
    assert report.disturbed and report.busy_before == pytest.approx(0.85)
    assert "CPUs 85% busy before the bench started (limit 50%)" in report.reasons[0]
    assert report.load_before == pytest.approx(1.3)
    lenient = EnvironmentProbe(proc=proc.root, limits=DisturbanceLimits(busy_before=0.9),
                               sleep=lambda _s: proc.tick(busy=170, idle=30))
    lenient.before()
    lenient.start()
    assert not lenient.stop().disturbed


def test_unreadable_proc_judges_nothing(tmp_path: Path) -> None:
    probe = EnvironmentProbe(proc=tmp_path / "nothing", sleep=lambda _s: None)
    probe.before()
    probe.start()
    report = probe.stop()
    assert not report.disturbed and report.unreadable and "nothing" in report.unreadable
    assert report.metrics()["env_disturbed"] is None  # unknown, never "quiet"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_reads_this_machines_proc() -> None:
    s = read_sample()
    assert s.cpus >= 1 and s.total > 0 and 0 <= s.steal <= s.total and s.load1 >= 0
    probe = EnvironmentProbe()
    probe.before(0.2)
    probe.start()
    sum(i * i for i in range(200_000))
    report = probe.stop()
    assert report.unreadable is None and report.busy_before is not None and 0 <= report.busy_before <= 1
    assert report.steal_during is not None and 0 <= report.steal_during <= 1
