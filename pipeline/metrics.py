"""The one registry of what stages measure: every metric's stage, unit and better direction, the
per-request sample series, and the per-item score dimensions.

Gates (`stage.metric` sources), reports, exports and the plan check all read it, so a name or a
direction is defined once. A policy is checked against it when it loads: a typo in `gates.yaml`
(`bench.ttft_p99` for `bench.ttft_p99_s`) stops the pipeline before anything is built instead of
becoming a gate that is silently `not_run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.models import Stage

Better = Literal["lower", "higher"]
Unit = Literal["s", "bytes", "count", "ratio", "bool", "tokens/s", "requests/s", "load"]


@dataclass(frozen=True)
class MetricInfo:
    stage: Stage
    name: str
    unit: Unit
    better: Better
    # The paired or per-request data a non-inferiority margin on this metric compares by default
    # ("items:<dimension>" or "samples:<series>"); None: the metric has no such data.
    compare: str | None = None
    # Depends on how fast the machine ran the bench: judged only when the environment was quiet
    # (see pipeline/bench/environment.py) and compared with a drift allowance against stored runs.
    performance: bool = False
    description: str = ""

    @property
    def source(self) -> str:
        return f"{self.stage.value}.{self.name}"


@dataclass(frozen=True)
class DimensionInfo:
    binary: bool  # 0/1 per item -> McNemar / Tango; otherwise a paired bootstrap
    scorer: bool  # produced by a scorer whose calibration may be checked (min_agreement)


def _m(
    stage: Stage,
    name: str,
    unit: Unit,
    better: Better,
    compare: str | None = None,
    *,
    performance: bool = False,
    description: str = "",
) -> MetricInfo:
    return MetricInfo(stage, name, unit, better, compare, performance, description)


def _bench_latency(name: str, series: str | None) -> MetricInfo:
    return _m(Stage.BENCH, name, "s", "lower", f"samples:{series}" if series else None, performance=True)


_ALL: tuple[MetricInfo, ...] = (
    _m(Stage.BUILD, "build_s", "s", "lower"),
    _m(Stage.BUILD, "image_bytes", "bytes", "lower"),
    _m(Stage.LEAK, "leaks", "count", "lower", description="secret byte sequences found in the image"),
    *(
        _m(Stage.SCAN, k, "count", "lower")
        for k in ("critical", "high", "medium", "low", "unknown", "secrets", "misconfigs", "blocking")
    ),
    _m(Stage.SIGN, "verified", "bool", "higher"),
    _m(Stage.ATTEST, "verdict_attested", "bool", "higher", description="the verdict is a signed attestation"),
    _m(Stage.ATTEST, "attested", "count", "higher", description="attestations signed and read back"),
    _m(Stage.BOOT, "load_time_s", "s", "lower", "samples:load_time_s"),
    _m(Stage.BOOT, "port_open_s", "s", "lower"),
    _m(Stage.BOOT, "health_ok_s", "s", "lower"),
    _m(Stage.BOOT, "first_completion_s", "s", "lower"),
    _m(Stage.BOOT, "load_time_p50_s", "s", "lower", "samples:load_time_s"),
    _m(Stage.BOOT, "load_time_p95_s", "s", "lower", "samples:load_time_s"),
    _m(Stage.BOOT, "readiness_honest", "bool", "higher"),
    *(_bench_latency(f"ttft_{s}_s", "ttft_s") for s in ("mean", "p50", "p90", "p99")),
    *(_bench_latency(f"tpot_{s}_s", "tpot_s") for s in ("mean", "p50", "p90", "p99")),
    *(_bench_latency(f"itl_{s}_s", None) for s in ("p50", "p99")),
    *(_bench_latency(f"e2e_{s}_s", "e2e_s") for s in ("p50", "p99")),
    _m(Stage.BENCH, "output_tokens_per_s", "tokens/s", "higher", performance=True),
    _m(Stage.BENCH, "requests_per_s", "requests/s", "higher", performance=True),
    _m(Stage.BENCH, "error_rate", "ratio", "lower"),
    _m(Stage.BENCH, "goodput", "ratio", "higher", performance=True,
       description="share of all requests that succeeded and met every SLO at once"),
    # Noisy-neighbour readings (pipeline/bench/environment.py): CPU steal is the share of CPU time the
    # hypervisor gave to other guests; busy, the share of CPU time not idle in a quiet window before the
    # bench; load, the 1-minute load average per CPU; disturbed (1/0) is the judgement.
    _m(Stage.BENCH, "env_steal_before", "ratio", "lower"),
    _m(Stage.BENCH, "env_steal_during", "ratio", "lower"),
    _m(Stage.BENCH, "env_busy_before", "ratio", "lower"),
    _m(Stage.BENCH, "env_load_before", "load", "lower"),
    _m(Stage.BENCH, "env_load_during", "load", "lower"),
    # CPU time of processes other than the bench and the server under test, during the bench; and the
    # share of the machine other work took (what a disturbed run's slowdown can be blamed on)
    _m(Stage.BENCH, "env_others_during", "ratio", "lower"),
    _m(Stage.BENCH, "env_disturbance", "ratio", "lower"),
    _m(Stage.BENCH, "env_disturbed", "bool", "lower"),
    _m(Stage.EVAL, "correctness_mean", "ratio", "higher", "items:correctness"),
    _m(Stage.EVAL, "correctness_string_mean", "ratio", "higher", "items:correctness_string"),
    _m(Stage.EVAL, "faithfulness_mean", "ratio", "higher", "items:faithfulness"),
    _m(Stage.EVAL, "answer_relevance_mean", "ratio", "higher", "items:answer_relevance"),
    _m(Stage.EVAL, "refusal_accuracy", "ratio", "higher", "items:refusal"),
    _m(Stage.EVAL, "over_refusal_rate", "ratio", "lower"),
    _m(Stage.EVAL, "under_refusal_rate", "ratio", "lower"),
    _m(Stage.EVAL, "latency_adherence", "ratio", "higher", "items:latency_ok"),
    _m(Stage.EVAL, "item_error_rate", "ratio", "lower"),
    _m(Stage.MANIFESTS, "violations", "count", "lower"),
)

METRICS: dict[Stage, dict[str, MetricInfo]] = {}
for _info in _ALL:
    METRICS.setdefault(_info.stage, {})[_info.name] = _info

# Per-request series (seconds; lower is better) a margin can compare with a rank test.
SAMPLES: dict[Stage, frozenset[str]] = {
    Stage.BOOT: frozenset({"load_time_s"}),
    Stage.BENCH: frozenset({"ttft_s", "tpot_s", "e2e_s"}),
}
PERFORMANCE_SAMPLES: dict[Stage, frozenset[str]] = {Stage.BENCH: SAMPLES[Stage.BENCH]}

# A bench that interleaved the baseline release with the candidate (pipeline/bench/interleave.py)
# records the baseline's series next to the candidate's under this prefix: `baseline_ttft_s`.
SAME_RUN_PREFIX = "baseline_"

ITEM_STAGE = Stage.EVAL  # the only stage that produces per-item results
ITEM_DIMENSIONS: dict[str, DimensionInfo] = {
    "correctness": DimensionInfo(binary=False, scorer=True),
    "correctness_string": DimensionInfo(binary=False, scorer=False),
    "faithfulness": DimensionInfo(binary=False, scorer=True),
    "answer_relevance": DimensionInfo(binary=False, scorer=True),
    "refusal": DimensionInfo(binary=True, scorer=True),
    "latency_ok": DimensionInfo(binary=True, scorer=False),
}


def same_run_series(name: str) -> str:
    """The sample series holding the baseline release's requests measured in this run."""
    return SAME_RUN_PREFIX + name


def metric(stage: Stage | str, name: str) -> MetricInfo | None:
    try:
        return METRICS.get(Stage(stage), {}).get(name)
    except ValueError:
        return None


def _of_source(source: str) -> MetricInfo | None:
    stage, _, name = source.partition(".")
    return metric(stage, name)


# Per-item scores are ratios, higher better; per-request samples are seconds, lower better.
_SERIES: dict[str, tuple[Better, Unit]] = {"items:": ("higher", "ratio"), "samples:": ("lower", "s")}


def _kind(source: str) -> tuple[Better, Unit] | None:
    for prefix, kind in _SERIES.items():
        if source.startswith(prefix):
            return kind
    info = _of_source(source)
    return (info.better, info.unit) if info else None


def better(source: str) -> Better | None:
    """Which way is better for `stage.metric`, `items:…` (higher: scores) or `samples:…` (lower: latency)."""
    kind = _kind(source)
    return kind[0] if kind else None


def unit(source: str) -> Unit | None:
    """The unit of `stage.metric`; per-item scores are ratios, per-request samples seconds."""
    kind = _kind(source)
    return kind[1] if kind else None
