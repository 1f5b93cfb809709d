"""Summary figures over per-request samples. The definitions below are the only ones (docs/METRICS.md
repeats them word for word):

- TTFT  = send -> first chunk carrying content (seconds).
- TPOT  = (E2E - TTFT) / (N - 1), N = `usage.completion_tokens` (asked for with
          `stream_options.include_usage`); when the server sends no usage, N is counted with the model's
          tokenizer (or, without one, as the number of content chunks) and the result is marked estimated.
- ITL   = gap between two consecutive content chunks, pooled over all requests.
- E2E   = send -> last SSE event of the stream.
- output_tokens_per_s = sum of N over successful requests / measurement wall time
          (first send -> last stream end).
- requests_per_s      = successful requests / measurement wall time.
- error_rate          = failed requests / all requests that were due (nothing is dropped).
- goodput             = requests that succeeded AND met every SLO at once (TTFT, TPOT, E2E when set)
          / all requests that were due.
- Percentiles: numpy linear interpolation (`np.percentile`, method="linear"), over successful requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.bench.client import RequestSample


@dataclass(frozen=True)
class Slo:
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def met(self, s: RequestSample) -> bool:
        """Every SLO at once; a TPOT SLO on a one-token answer is met (TPOT is undefined)."""
        if not s.ok:
            return False
        checks = ((self.ttft_s, s.ttft_s), (self.tpot_s, s.tpot_s), (self.e2e_s, s.e2e_s))
        return all(limit is None or value is None or value <= limit for limit, value in checks)


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def describe(values: Sequence[float], prefix: str, stats: Sequence[str] = ("mean", "p50", "p90", "p99")) -> dict:
    out: dict[str, float | None] = {}
    for st in stats:
        if st == "mean":
            out[f"{prefix}_mean_s"] = float(np.mean(values)) if len(values) else None
        else:
            out[f"{prefix}_{st}_s"] = percentile(values, float(st[1:]))
    return out


def summarize(samples: Sequence[RequestSample], slo: Slo | None = None) -> dict[str, float | None]:
    """The bench stage's metrics (names as in docs/ARCHITECTURE.md) over the measured samples."""
    measured = [s for s in samples if s.phase == "measure"]
    ok = [s for s in measured if s.ok]
    ttft = [s.ttft_s for s in ok if s.ttft_s is not None]
    tpot = [s.tpot_s for s in ok if s.tpot_s is not None]
    e2e = [s.e2e_s for s in ok if s.e2e_s is not None]
    itl = [x for s in ok for x in s.itl_s]
    m: dict[str, float | None] = {}
    m |= describe(ttft, "ttft")
    m |= describe(tpot, "tpot")
    m |= describe(itl, "itl", ("p50", "p99"))
    m |= describe(e2e, "e2e", ("p50", "p99"))
    total = len(measured)
    if ok:
        start = min(s.sent_s for s in measured)
        end = max(s.end_s for s in ok if s.end_s is not None)
        wall = max(end - start, 1e-9)
        m["output_tokens_per_s"] = sum(s.output_tokens or 0 for s in ok) / wall
        m["requests_per_s"] = len(ok) / wall
    else:
        m["output_tokens_per_s"] = 0.0 if total else None
        m["requests_per_s"] = 0.0 if total else None
    m["error_rate"] = (total - len(ok)) / total if total else None
    if slo is not None and total:
        m["goodput"] = sum(1 for s in measured if slo.met(s)) / total
    m["requests"] = float(total)
    m["tokens_estimated"] = float(any(s.estimated for s in ok))
    return m


def error_reasons(samples: Sequence[RequestSample]) -> dict[str, int]:
    """Failed measured requests grouped by the first words of their reason."""
    out: dict[str, int] = {}
    for s in samples:
        if s.phase == "measure" and s.error:
            key = s.error.split(":")[0][:60]
            out[key] = out.get(key, 0) + 1
    return out
