"""Gate sources: `stage.metric`, `items:[eval.]dimension` or `samples:[stage.]series`, parsed and
checked against the one metric registry (`pipeline/metrics.py`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pipeline import metrics
from pipeline.metrics import ITEM_DIMENSIONS, ITEM_STAGE, SAMPLES, Better, DimensionInfo, MetricInfo
from pipeline.models import Stage

_PERCENTILE = re.compile(r"_p(\d{2})_s$")


@dataclass(frozen=True)
class Source:
    kind: Literal["metric", "items", "samples"]
    stage: Stage
    name: str

    def __str__(self) -> str:
        if self.kind == "metric":
            return f"{self.stage.value}.{self.name}"
        return f"{self.kind}:{self.stage.value}.{self.name}"

    @property
    def label(self) -> str:
        """The name as the plan check shows it: `ttft_p99_s`, `samples:ttft_s`, `items:correctness`."""
        return self.name if self.kind == "metric" else f"{self.kind}:{self.name}"

    @property
    def info(self) -> MetricInfo | None:
        return metrics.metric(self.stage, self.name) if self.kind == "metric" else None

    @property
    def better(self) -> Better:
        if self.kind == "metric":
            info = self.info
            assert info is not None  # parse_source admits registered metrics only
            return info.better
        return "higher" if self.kind == "items" else "lower"  # scores are 0..1 good; samples are latencies

    @property
    def dimension(self) -> DimensionInfo | None:
        return ITEM_DIMENSIONS.get(self.name) if self.kind == "items" else None

    @property
    def quantile(self) -> float | None:
        """The quantile a percentile metric reports (`bench.ttft_p99_s` -> 0.99), else None."""
        m = _PERCENTILE.search(self.name) if self.kind == "metric" else None
        return int(m.group(1)) / 100 if m else None

    @property
    def performance(self) -> bool:
        """Measured by the bench, so a disturbed machine makes it meaningless."""
        if self.kind == "samples":
            return self.name in metrics.PERFORMANCE_SAMPLES.get(self.stage, frozenset())
        info = self.info
        return bool(info and info.performance)


def _stage(text: str) -> Stage:
    try:
        return Stage(text)
    except ValueError:
        known = ", ".join(s.value for s in metrics.METRICS)
        raise ValueError(f"unknown stage {text!r}; known: {known}") from None


def parse_source(text: str) -> Source:
    """Parse and check a source against the registry; ValueError names what is wrong."""
    text = text.strip()
    if text.startswith("items:"):
        stage_text, _, name = text.removeprefix("items:").rpartition(".")
        if stage_text and stage_text != ITEM_STAGE.value:
            raise ValueError(f"per-item scores come only from the '{ITEM_STAGE.value}' stage, not '{stage_text}'")
        if name not in ITEM_DIMENSIONS:
            raise ValueError(f"unknown item dimension {name!r}; known: {', '.join(sorted(ITEM_DIMENSIONS))}")
        return Source("items", ITEM_STAGE, name)
    if text.startswith("samples:"):
        stage_text, _, name = text.removeprefix("samples:").rpartition(".")
        owners = [s for s, names in SAMPLES.items() if name in names]
        if not owners:
            known = sorted(f"{s.value}.{n}" for s, names in SAMPLES.items() for n in names)
            raise ValueError(f"unknown sample series {name!r}; known: {', '.join(known)}")
        if stage_text and stage_text not in {o.value for o in owners}:
            raise ValueError(
                f"stage '{stage_text}' records no sample series {name!r} (it is in {', '.join(o.value for o in owners)})"
            )
        return Source("samples", Stage(stage_text) if stage_text else owners[0], name)
    stage_text, dot, name = text.partition(".")
    if not dot or not name:
        raise ValueError(f"expected 'stage.metric', 'items:<dimension>' or 'samples:<name>', got {text!r}")
    stage = _stage(stage_text)
    known = metrics.METRICS.get(stage, {})
    if name not in known:
        raise ValueError(f"unknown metric {name!r} for stage '{stage.value}'; known: {', '.join(sorted(known))}")
    return Source("metric", stage, name)
