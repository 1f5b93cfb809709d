"""The metric, sample and item-dimension names a gate may read, as docs/ARCHITECTURE.md defines them.

A policy is checked against this registry when it is loaded, so a typo in `gates.yaml`
(`bench.ttft_p99` instead of `bench.ttft_p99_s`) stops the pipeline before anything is built,
instead of turning into a gate that is silently `not_run`. Plug-ins (supply chain, manifests)
add their own names with `register_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Better = Literal["lower", "higher"]


@dataclass(frozen=True)
class MetricInfo:
    better: Better
    compare: str | None = None  # default paired/sample source for a margin ("items:x", "samples:y")


@dataclass(frozen=True)
class DimensionInfo:
    binary: bool  # 0/1 per item -> McNemar; otherwise a paired bootstrap
    scorer: bool  # produced by a scorer whose calibration may be checked (min_agreement)


def _lat(samples: str | None) -> MetricInfo:
    return MetricInfo("lower", f"samples:{samples}" if samples else None)


STAGE_METRICS: dict[str, dict[str, MetricInfo]] = {
    "build": {"build_s": _lat(None), "image_bytes": _lat(None)},
    "leak": {"leaks": _lat(None)},
    "scan": {
        k: _lat(None) for k in ("critical", "high", "medium", "low", "unknown", "secrets", "misconfigs", "blocking")
    },
    "sign": {"verified": MetricInfo("higher")},
    "boot": {
        "load_time_s": _lat("load_time_s"),
        "port_open_s": _lat(None),
        "health_ok_s": _lat(None),
        "first_completion_s": _lat(None),
        "load_time_p50_s": _lat("load_time_s"),
        "load_time_p95_s": _lat("load_time_s"),
        "readiness_honest": MetricInfo("higher"),
    },
    "bench": {
        **{f"ttft_{s}_s": _lat("ttft_s") for s in ("mean", "p50", "p90", "p99")},
        **{f"tpot_{s}_s": _lat("tpot_s") for s in ("mean", "p50", "p90", "p99")},
        **{f"itl_{s}_s": _lat(None) for s in ("p50", "p99")},
        **{f"e2e_{s}_s": _lat("e2e_s") for s in ("p50", "p99")},
        "output_tokens_per_s": MetricInfo("higher"),
        "requests_per_s": MetricInfo("higher"),
        "error_rate": _lat(None),
        "goodput": MetricInfo("higher"),
    },
    "eval": {
        "correctness_mean": MetricInfo("higher", "items:correctness"),
        "correctness_string_mean": MetricInfo("higher", "items:correctness_string"),
        "faithfulness_mean": MetricInfo("higher", "items:faithfulness"),
        "answer_relevance_mean": MetricInfo("higher", "items:answer_relevance"),
        "refusal_accuracy": MetricInfo("higher", "items:refusal"),
        "over_refusal_rate": MetricInfo("lower"),
        "under_refusal_rate": MetricInfo("lower"),
        "latency_adherence": MetricInfo("higher", "items:latency_ok"),
        "item_error_rate": MetricInfo("lower"),
    },
    "manifests": {"violations": _lat(None)},
}

STAGE_SAMPLES: dict[str, set[str]] = {
    "boot": {"load_time_s"},
    "bench": {"ttft_s", "tpot_s", "e2e_s"},
}

ITEM_STAGE = "eval"  # the only stage that produces per-item results
ITEM_DIMENSIONS: dict[str, DimensionInfo] = {
    "correctness": DimensionInfo(binary=False, scorer=True),
    "correctness_string": DimensionInfo(binary=False, scorer=False),
    "faithfulness": DimensionInfo(binary=False, scorer=True),
    "answer_relevance": DimensionInfo(binary=False, scorer=True),
    "refusal": DimensionInfo(binary=True, scorer=True),
    "latency_ok": DimensionInfo(binary=True, scorer=False),
}


def register_metrics(stage: str, metrics: dict[str, MetricInfo], samples: set[str] | None = None) -> None:
    """Let a plug-in (supply chain, manifests) declare more names; existing names are kept."""
    known = STAGE_METRICS.setdefault(stage, {})
    for name, info in metrics.items():
        known.setdefault(name, info)
    if samples:
        STAGE_SAMPLES.setdefault(stage, set()).update(samples)


@dataclass(frozen=True)
class Source:
    """A parsed gate source: `stage.metric`, `items:[stage.]dimension` or `samples:[stage.]name`."""

    kind: Literal["metric", "items", "samples"]
    stage: str
    name: str

    def __str__(self) -> str:
        if self.kind == "metric":
            return f"{self.stage}.{self.name}"
        return f"{self.kind}:{self.stage}.{self.name}"

    @property
    def better(self) -> Better:
        if self.kind == "metric":
            return STAGE_METRICS[self.stage][self.name].better
        return "higher" if self.kind == "items" else "lower"  # scores are 0..1 good; samples are latencies

    @property
    def dimension(self) -> DimensionInfo | None:
        return ITEM_DIMENSIONS.get(self.name) if self.kind == "items" else None


def parse_source(text: str) -> Source:
    """Parse and check a source against the registry; ValueError names what is wrong."""
    text = text.strip()
    if text.startswith("items:"):
        rest = text.removeprefix("items:")
        stage, _, name = rest.rpartition(".")
        stage = stage or ITEM_STAGE
        if stage != ITEM_STAGE:
            raise ValueError(f"per-item scores come only from the '{ITEM_STAGE}' stage, not '{stage}'")
        if name not in ITEM_DIMENSIONS:
            raise ValueError(f"unknown item dimension {name!r}; known: {', '.join(sorted(ITEM_DIMENSIONS))}")
        return Source("items", stage, name)
    if text.startswith("samples:"):
        rest = text.removeprefix("samples:")
        stage, _, name = rest.rpartition(".")
        owners = [s for s, names in STAGE_SAMPLES.items() if name in names]
        if not owners:
            known = sorted(f"{s}.{n}" for s, names in STAGE_SAMPLES.items() for n in names)
            raise ValueError(f"unknown sample series {name!r}; known: {', '.join(known)}")
        if stage and stage not in owners:
            raise ValueError(f"stage '{stage}' records no sample series {name!r} (it is in {', '.join(owners)})")
        return Source("samples", stage or owners[0], name)
    stage, dot, name = text.partition(".")
    if not dot or not name:
        raise ValueError(f"expected 'stage.metric', 'items:<dimension>' or 'samples:<name>', got {text!r}")
    if stage not in STAGE_METRICS:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(sorted(STAGE_METRICS))}")
    if name not in STAGE_METRICS[stage]:
        raise ValueError(
            f"unknown metric {name!r} for stage '{stage}'; known: {', '.join(sorted(STAGE_METRICS[stage]))}"
        )
    return Source("metric", stage, name)
