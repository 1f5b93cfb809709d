"""Start-up watching (milestones, readiness honesty, bounded wait, death) against the metronome
TEST DOUBLE run as a local process; the Docker path is in test_boot_docker.py."""

from __future__ import annotations

import asyncio
import time

from pipeline.bench.startup import watch_startup
from tests.doubles.metronome import Running


def _watch(m: Running, t0: float, timeout_s: float = 10, lag: float = 1.0):
    return asyncio.run(
        watch_startup(
            base_url=m.base_url,
            alive=lambda: (m.proc.poll() is None, m.proc.returncode),
            t0=t0,
            timeout_s=timeout_s,
            interval_s=0.1,
            lag_tolerance_s=lag,
            request_timeout_s=5,
        )
    )


def test_milestones_in_order_and_honest_readiness() -> None:
    t0 = time.perf_counter()
    with Running("--complete-after-s", "1.0") as m:
        tl = _watch(m, t0)
    assert tl.ready and tl.readiness_honest, tl.readiness_reason
    assert tl.port_open_s <= tl.health_ok_s <= tl.first_completion_s + 0.2
    assert tl.first_completion_s >= 1.0
    assert tl.model == "metronome"  # found through /v1/models
    assert any(not a.ok for a in tl.attempts)  # completions were tried (and refused) while loading


def test_probe_ready_while_completions_fail_is_dishonest() -> None:
    t0 = time.perf_counter()
    with Running("--ready-after-s", "0", "--complete-after-s", "1.5") as m:
        tl = _watch(m, t0)
    assert tl.ready and tl.readiness_honest is False
    assert "said ready" in tl.readiness_reason


def test_probe_lagging_completions_is_dishonest_and_bounded() -> None:
    t0 = time.perf_counter()
    with Running("--ready-after-s", "30", "--complete-after-s", "0.3") as m:
        tl = _watch(m, t0, lag=1.0)
        took = time.perf_counter() - t0
    assert tl.ready and tl.readiness_honest is False and "still not ready" in tl.readiness_reason
    assert took < 6


def test_never_ready_is_bounded_with_a_clear_reason() -> None:
    t0 = time.perf_counter()
    with Running("--never-ready") as m:
        tl = _watch(m, t0, timeout_s=2.0)
        took = time.perf_counter() - t0
    assert not tl.ready and tl.timed_out and took < 5
    assert "not ready within 2s" in tl.reason and "HTTP 503" in tl.reason


def test_death_is_detected_at_once_with_the_exit_code() -> None:
    t0 = time.perf_counter()
    with Running("--never-ready", "--die-after-s", "0.8", "--exit-code", "9") as m:
        tl = _watch(m, t0, timeout_s=60)
        took = time.perf_counter() - t0
    assert tl.died and tl.exit_code == 9 and not tl.ready
    assert took < 5 and "exited with code 9" in tl.reason
