"""The server's own view from its Prometheus `/metrics`, for cross-checking the client's figures.

Snapshots are taken right after warm-up and right after the measured requests; histogram deltas
(`_sum`/`_count`) give the server's mean TTFT/ITL/E2E over exactly the measured window. The
client-minus-server TTFT exposes what sits between client and engine (proxy buffering, queueing in
front of the engine, network). Gauges (queue depth, KV-cache use) are sampled during the run.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import httpx

# Per engine: figure -> metric names, newest first (engines renamed some across versions).
FAMILIES: dict[str, dict[str, tuple[str, ...]]] = {
    "vllm": {
        "ttft": ("vllm:time_to_first_token_seconds",),
        "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        "e2e": ("vllm:e2e_request_latency_seconds",),
        "waiting": ("vllm:num_requests_waiting",),
        "running": ("vllm:num_requests_running",),
        "kv_cache": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    },
    "sglang": {
        "ttft": ("sglang:time_to_first_token_seconds",),
        "itl": ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        "e2e": ("sglang:e2e_request_latency_seconds",),
        "waiting": ("sglang:num_queue_reqs",),
        "running": ("sglang:num_running_reqs",),
        "kv_cache": ("sglang:token_usage",),
    },
    "tgi": {  # TGI exports no TTFT histogram; its per-token mean and request duration are compared
        "itl": ("tgi_request_mean_time_per_token_duration",),
        "e2e": ("tgi_request_duration",),
        "waiting": ("tgi_queue_size",),
        "running": ("tgi_batch_current_size",),
    },
}

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


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


def detect(snapshot: dict[str, float]) -> tuple[str | None, dict[str, str]]:
    """Which engine's names are present, and the name used for each figure."""
    for engine, figures in FAMILIES.items():
        found = {}
        for fig, names in figures.items():
            for n in names:
                if n in snapshot or f"{n}_sum" in snapshot:
                    found[fig] = n
                    break
        if found:
            return engine, found
    return None, {}


def histogram_mean(before: dict[str, float], after: dict[str, float], name: str) -> tuple[float | None, float]:
    """Mean of the observations added between two snapshots, and how many there were."""
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
        wanted = {fig: n for fig, n in names.items() if fig in ("waiting", "running", "kv_cache")}
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
) -> dict:
    """Server-side means over the measured window and client-minus-server differences (seconds)."""
    if before is None or after is None:
        return {"engine": None}
    engine, names = detect(after)
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
