"""Gate sources: `stage.metric`, `items:[<stage>.]dimension` or `samples:[stage.]series`, parsed and
checked against a metric catalogue (`pipeline.metrics.Catalogue`, built from the stages' declarations).

A parsed source carries what the catalogue says about it (unit, direction, whether it measures the
machine), so nothing downstream looks a name up again."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pipeline.metrics import Better, Catalogue, DimensionInfo, MetricInfo
from pipeline.models import Stage

_PERCENTILE = re.compile(r"_p(\d{2})_s$")


@dataclass(frozen=True)
class Source:
    kind: Literal["metric", "items", "samples"]
    stage: Stage
    name: str
    info: MetricInfo | None = field(default=None, compare=False, repr=False)  # a metric's entry
    dimension: DimensionInfo | None = field(default=None, compare=False, repr=False)  # an item dimension's
    # Measured by the bench, so a disturbed machine makes it meaningless.
    performance: bool = field(default=False, compare=False, repr=False)

    def __str__(self) -> str:
        if self.kind == "metric":
            return f"{self.stage.value}.{self.name}"
        return f"{self.kind}:{self.stage.value}.{self.name}"

    @property
    def label(self) -> str:
        """The name as the plan check shows it: `ttft_p99_s`, `samples:ttft_s`, `items:correctness`."""
        return self.name if self.kind == "metric" else f"{self.kind}:{self.name}"

    @property
    def better(self) -> Better:
        if self.kind == "metric":
            assert self.info is not None  # parse_source admits registered metrics only
            return self.info.better
        return "higher" if self.kind == "items" else "lower"  # scores are 0..1 good; samples are latencies

    @property
    def unit(self) -> str | None:
        if self.kind == "metric":
            return self.info.unit if self.info else None
        return "ratio" if self.kind == "items" else "s"

    @property
    def quantile(self) -> float | None:
        """The quantile a percentile metric reports (`bench.ttft_p99_s` -> 0.99), else None."""
        m = _PERCENTILE.search(self.name) if self.kind == "metric" else None
        return int(m.group(1)) / 100 if m else None


def _stage(text: str, catalogue: Catalogue) -> Stage:
    try:
        return Stage(text)
    except ValueError:
        known = ", ".join(s.value for s in catalogue.metrics)
        raise ValueError(f"unknown stage {text!r}; known: {known}") from None


def parse_source(text: str, catalogue: Catalogue) -> Source:
    """Parse and check a source against `catalogue`; ValueError names what is wrong."""
    text = text.strip()
    if text.startswith("items:"):
        stage_text, _, name = text.removeprefix("items:").rpartition(".")
        item_stage = catalogue.item_stage
        if item_stage is None:
            raise ValueError("no stage records per-item scores")
        if stage_text and stage_text != item_stage.value:
            raise ValueError(f"per-item scores come only from the '{item_stage.value}' stage, not '{stage_text}'")
        dims = catalogue.item_dimensions
        if name not in dims:
            raise ValueError(f"unknown item dimension {name!r}; known: {', '.join(sorted(dims))}")
        return Source("items", item_stage, name, dimension=dims[name])
    if text.startswith("samples:"):
        stage_text, _, name = text.removeprefix("samples:").rpartition(".")
        owners = [s for s, names in catalogue.samples.items() if name in names]
        if not owners:
            known = sorted(f"{s.value}.{n}" for s, names in catalogue.samples.items() for n in names)
            raise ValueError(f"unknown sample series {name!r}; known: {', '.join(known)}")
        if stage_text and stage_text not in {o.value for o in owners}:
            raise ValueError(
                f"stage '{stage_text}' records no sample series {name!r} (it is in {', '.join(o.value for o in owners)})"
            )
        stage = Stage(stage_text) if stage_text else owners[0]
        return Source("samples", stage, name,
                      performance=name in catalogue.performance_samples.get(stage, frozenset()))
    stage_text, dot, name = text.partition(".")
    if not dot or not name:
        raise ValueError(f"expected 'stage.metric', 'items:<dimension>' or 'samples:<name>', got {text!r}")
    stage = _stage(stage_text, catalogue)
    known = catalogue.metrics.get(stage, {})
    if name not in known:
        raise ValueError(f"unknown metric {name!r} for stage '{stage.value}'; known: {', '.join(sorted(known))}")
    info = known[name]
    return Source("metric", stage, name, info=info, performance=info.performance)
