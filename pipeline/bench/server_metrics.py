"""The server's own view from its Prometheus `/metrics`, for cross-checking the client's figures.

Snapshots are taken right after warm-up and right after the measured requests; histogram deltas
(`_sum`/`_count`) give the server's mean TTFT/ITL/E2E over exactly the measured window (a server with
counters instead of a per-token histogram, llama.cpp, gives its mean time per token as the ratio of its
seconds and tokens counters' deltas). The client-minus-server TTFT exposes what sits between client and
engine (proxy buffering, queueing in front of the engine, network). Gauges (queue depth, KV-cache use)
are sampled during the run.

Which names mean what comes from the serving profiles (pipeline.serving.profiles); with a profile
given, only its names are read, else the engine is recognised from the names present.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import httpx

from pipeline.serving.profiles import PROFILES, ServingProfile

FIGURES = ("ttft", "itl", "e2e", "waiting", "running", "kv_cache")
GAUGES = ("waiting", "running", "kv_cache")


def families(profile: ServingProfile) -> dict[str, tuple[str, ...]]:
    """figure -> metric names, newest spelling first."""
    return {fig: profile.metrics.figure(fig) for fig in FIGURES if profile.metrics.figure(fig)}


# Per engine: figure -> metric names (derived from the serving profiles).
FAMILIES: dict[str, dict[str, tuple[str, ...]]] = {name: families(p) for name, p in PROFILES.items()}

# A sample line of the text exposition format: name, optional {labels} (quoted values may hold '}' and
# escaped quotes), value, optional timestamp.
_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)')


def parse(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {sample name: value summed over label sets}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[m.group(1)] = out.get(m.group(1), 0.0) + value
    return out


def detect(snapshot: dict[str, float], profile: ServingProfile | None = None) -> tuple[str | None, dict[str, str]]:
    """Which engine's names are present, and the name used for each figure. With `profile`, only its
    names count (the engine is the profile's even when none of them is present)."""
    candidates = {profile.name: families(profile)} if profile is not None else FAMILIES
    for engine, figures in candidates.items():
        found = {}
        for fig, names in figures.items():
            for n in names:
                if n in snapshot or f"{n}_sum" in snapshot:
                    found[fig] = n
                    break
        p = PROFILES[engine]
        if p.metrics.itl_counters and all(c in snapshot for c in p.metrics.itl_counters):
            found.setdefault("itl", "/".join(p.metrics.itl_counters))
        if found or profile is not None:
            return engine, found
    return None, {}


def histogram_mean(before: dict[str, float], after: dict[str, float], name: str) -> tuple[float | None, float]:
    """Mean of the observations added between two snapshots, and how many there were. `name` may be a
    `seconds_total/tokens_total` counter pair (mean seconds per token over the window)."""
    if "/" in name:
        secs, count = name.split("/", 1)
        n = after.get(count, 0.0) - before.get(count, 0.0)
        s = after.get(secs, 0.0) - before.get(secs, 0.0)
        return (s / n if n > 0 else None), n
    n = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    s = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return (s / n if n > 0 else None), n


@dataclass
class Scraper:
    base_url: str
    path: str = "/metrics"
    available: bool | None = None
    reason: str = ""
    gauges: dict[str, list[float]] = field(default_factory=dict)

    async def snapshot(self, client: httpx.AsyncClient) -> dict[str, float] | None:
        if self.available is False:
            return None
        if not self.path:
            self.available, self.reason = False, "not scraped: the server exposes no Prometheus metrics"
            return None
        try:
            r = await client.get(self.base_url.rstrip("/") + self.path, timeout=5.0)
        except httpx.HTTPError as exc:
            self.available, self.reason = False, f"not scraped: {type(exc).__name__}: {exc}"
            return None
        if r.status_code != 200:
            self.available, self.reason = False, f"not scraped: {self.path} answered HTTP {r.status_code}"
            return None
        snap = parse(r.text)
        self.available = True
        return snap

    async def poll_gauges(self, client: httpx.AsyncClient, names: dict[str, str], every_s: float = 1.0) -> None:
        """Sample queue depth and KV-cache use until cancelled."""
        wanted = {fig: n for fig, n in names.items() if fig in GAUGES}
        while wanted:
            snap = await self.snapshot(client)
            if snap is None:
                return
            for fig, n in wanted.items():
                if n in snap:
                    self.gauges.setdefault(fig, []).append(snap[n])
            await asyncio.sleep(every_s)


def cross_check(
    before: dict[str, float] | None,
    after: dict[str, float] | None,
    client_means: dict[str, float | None],
    gauges: dict[str, list[float]],
    profile: ServingProfile | None = None,
) -> dict:
    """Server-side means over the measured window and client-minus-server differences (seconds)."""
    if before is None or after is None:
        return {"engine": profile.name if profile is not None else None}
    engine, names = detect(after, profile)
    out: dict = {"engine": engine, "names": names}
    for fig in ("ttft", "itl", "e2e"):
        if fig not in names:
            continue
        mean, n = histogram_mean(before, after, names[fig])
        out[f"server_{fig}_mean_s"] = mean
        out[f"server_{fig}_count"] = n
        client = client_means.get(fig)
        if mean is not None and client is not None:
            out[f"client_minus_server_{fig}_s"] = client - mean
    for fig, series in gauges.items():
        if series:
            out[f"{fig}_max"] = max(series)
            out[f"{fig}_mean"] = sum(series) / len(series)
    return out
