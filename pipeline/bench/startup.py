"""Watching a server start: milestones, readiness honesty, bounded wait, death detected at once.

Three loops run side by side from container start (t = 0):
- the port loop: TCP connect until the published port accepts (`port_open_s`);
- the probe loop: GET the readiness path the manifests use, every `interval_s` (`health_ok_s` = first 200);
- the completion loop: real streamed completions, one after the other (`first_completion_s` = end of
  the first one that succeeds; this is the load time).
A fourth loop asks the engine whether the container is still alive, so a server that exits is reported
with its exit code at once instead of after the timeout. Everything is bounded by `timeout_s`.

Readiness is honest when (a) no completion started after the probe first said ready failed, and
(b) the probe said ready no later than `lag_tolerance_s` after the first successful completion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipeline.bench.client import API_PATHS, request_payload, stream_request


@dataclass
class Attempt:
    started_s: float
    ended_s: float
    ok: bool
    reason: str | None = None


@dataclass
class Probe:
    t_s: float
    status: int | None
    reason: str | None = None


@dataclass
class StartupTimeline:
    """Seconds since container start for each milestone; None when it never happened."""

    port_open_s: float | None = None
    health_ok_s: float | None = None
    first_completion_s: float | None = None
    model: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    died: bool = False
    exit_code: int | None = None
    timed_out: bool = False
    reason: str = ""
    readiness_honest: bool | None = None
    readiness_reason: str = ""

    @property
    def ready(self) -> bool:
        return self.first_completion_s is not None and not self.died

    def as_dict(self, max_events: int = 200) -> dict[str, Any]:
        d = asdict(self)
        d["attempts"] = d["attempts"][-max_events:]
        d["probes"] = d["probes"][-max_events:]
        return d


def judge_readiness(tl: StartupTimeline, path: str, lag_tolerance_s: float) -> tuple[bool | None, str]:
    if tl.first_completion_s is None:
        return None, "not judged: no completion succeeded"
    if tl.health_ok_s is not None:
        false_ready = [a for a in tl.attempts if not a.ok and a.started_s >= tl.health_ok_s]
        if false_ready:
            return False, (
                f"{path} said ready at {tl.health_ok_s:.2f}s but {len(false_ready)} completion(s) started after "
                f"that failed (first: {false_ready[0].reason})"
            )
        lag = tl.health_ok_s - tl.first_completion_s
        if lag > lag_tolerance_s:
            return False, f"{path} became ready {lag:.1f}s after completions worked (tolerance {lag_tolerance_s:g}s)"
        return True, f"{path} ready at {tl.health_ok_s:.2f}s, first completion at {tl.first_completion_s:.2f}s"
    last = tl.probes[-1] if tl.probes else None
    seen = f"last answer {last.status or last.reason}" if last else "never answered"
    return False, (
        f"{path} still not ready {lag_tolerance_s:g}s after completions worked from "
        f"{tl.first_completion_s:.2f}s ({seen})"
    )


async def watch_startup(
    *,
    base_url: str,
    alive: Callable[[], tuple[bool, int | None]],
    t0: float,
    timeout_s: float,
    readiness_path: str = "/v1/models",
    api: str = "chat",
    model: str | None = None,
    interval_s: float = 0.25,
    lag_tolerance_s: float = 15.0,
    request_timeout_s: float = 30.0,
) -> StartupTimeline:
    """Watch from `t0` (perf_counter at container start) until the first good completion (and the
    probe's verdict), the container's death, or `timeout_s` after `t0`, whichever comes first."""
    tl = StartupTimeline(model=model)
    port_open = asyncio.Event()
    deadline = t0 + timeout_s
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    def since() -> float:
        return time.perf_counter() - t0

    async def port_loop() -> None:
        while True:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
                try:
                    # docker-proxy accepts on the host port before anything listens in the container,
                    # then closes at once: only a connection that stays open counts.
                    closed = await asyncio.wait_for(r.read(1), timeout=0.05) == b""
                except TimeoutError:
                    closed = False
                w.close()
                if not closed:
                    tl.port_open_s = since()
                    port_open.set()
                    return
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(interval_s)

    async def probe_loop(client: httpx.AsyncClient) -> None:
        await port_open.wait()
        while True:
            t = since()
            try:
                r = await client.get(base_url + readiness_path, timeout=5.0)
                probe = Probe(t, r.status_code)
                if r.status_code == 200 and tl.model is None and readiness_path.rstrip("/").endswith("/models"):
                    try:
                        tl.model = r.json()["data"][0]["id"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        pass
            except httpx.HTTPError as exc:
                probe = Probe(t, None, f"{type(exc).__name__}: {exc}"[:200])
            tl.probes.append(probe)
            if probe.status == 200 and tl.health_ok_s is None:
                tl.health_ok_s = since()
            if tl.first_completion_s is not None and (
                tl.health_ok_s is not None or since() > tl.first_completion_s + lag_tolerance_s
            ):
                return
            await asyncio.sleep(interval_s)

    async def completion_loop(client: httpx.AsyncClient) -> None:
        await port_open.wait()
        while True:
            payload = request_payload(api, tl.model, "ping", 2)
            left = deadline - time.perf_counter()
            s = await stream_request(
                client, base_url + API_PATHS[api], payload, timeout_s=max(0.5, min(request_timeout_s, left))
            )
            end = (s.end_s or time.perf_counter()) - t0
            tl.attempts.append(Attempt(s.sent_s - t0, end, s.ok, s.error))
            if s.ok:
                tl.first_completion_s = end
                return
            await asyncio.sleep(interval_s)

    async def alive_loop() -> None:
        while True:
            ok, code = await asyncio.to_thread(alive)
            if not ok:
                tl.died, tl.exit_code = True, code
                return
            await asyncio.sleep(max(interval_s, 0.5))

    async with httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(request_timeout_s, connect=2.0)) as client:
        tasks = [asyncio.ensure_future(c) for c in (port_loop(), probe_loop(client), completion_loop(client))]
        _, probing, completing = tasks
        watcher = asyncio.ensure_future(alive_loop())
        await asyncio.wait(
            {completing, watcher}, timeout=max(0.0, deadline - time.perf_counter()), return_when=asyncio.FIRST_COMPLETED
        )
        if completing.done() and not watcher.done():
            # the probe may trail the first completion by up to the tolerance; give it that long
            await asyncio.wait({probing, watcher}, timeout=lag_tolerance_s + 1.0, return_when=asyncio.FIRST_COMPLETED)
        for task in (*tasks, watcher):
            task.cancel()
        await asyncio.gather(*tasks, watcher, return_exceptions=True)

    if tl.died:
        last = tl.attempts[-1].reason if tl.attempts else "none attempted"
        tl.reason = f"container exited with code {tl.exit_code} {since():.1f}s after start (last completion: {last})"
        if tl.first_completion_s is not None:
            tl.reason = f"container exited with code {tl.exit_code} after becoming ready"
    elif tl.first_completion_s is None or tl.first_completion_s > timeout_s:
        tl.timed_out = True
        last = tl.attempts[-1].reason if tl.attempts else "no attempt (port never accepted)"
        probe = tl.probes[-1] if tl.probes else None
        tl.reason = (
            f"not ready within {timeout_s:g}s: port {'open' if tl.port_open_s is not None else 'closed'}, "
            f"readiness {probe.status if probe else 'never answered'}, last completion: {last}"
        )
        tl.first_completion_s = None
    tl.readiness_honest, tl.readiness_reason = judge_readiness(tl, readiness_path, lag_tolerance_s)
    return tl
