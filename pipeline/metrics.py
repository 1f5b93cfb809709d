"""What stages measure, as types and a catalogue: every metric's stage, unit and better direction, the
per-request sample series, and the per-item score dimensions.

Each stage declares its own metrics in its spec (`pipeline/stages/<x>.py`: `metrics=(Metric(...), ...)`);
this module holds only the types and the `Catalogue` built from those declarations. Gates (`stage.metric`
sources), reports, exports and the plan check read a catalogue, so a name or a direction is defined
once. A policy is checked against it when it loads: a typo in `gates.yaml` (`bench.ttft_p99` for
`bench.ttft_p99_s`) stops the pipeline before anything is built instead of becoming a gate that is
silently `not_run`.

How the catalogue reaches the layers below the stages: whoever runs a plan (the runner) passes that
plan's own catalogue to the policy it loads, so a plan with a stage of its own gates that stage's
metrics; readers with no plan in hand (the reports, `policy check`, the promotion's policy floor) read
the one the stage registry installs when it is imported (`install`). Passing it down to every report
would thread one argument through some twenty functions that only format units; an import-time
registration alone would make a plan's own stages invisible to its gates. Reading the installed
catalogue before any was installed raises rather than finding no metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Literal, Protocol

from pipeline.models import Stage

Better = Literal["lower", "higher"]
Unit = Literal["s", "bytes", "count", "ratio", "bool", "tokens/s", "requests/s", "load"]


@dataclass(frozen=True)
class Metric:
    """A scalar a stage records, as its stage declares it (`StageSpec.metrics`)."""

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


@dataclass(frozen=True, kw_only=True)
class MetricInfo(Metric):
    """A metric with the stage that records it: what a gate source `stage.metric` names."""

    stage: Stage

    @classmethod
    def of(cls, stage: Stage, metric: Metric) -> MetricInfo:
        return cls(stage=stage, **{f.name: getattr(metric, f.name) for f in fields(Metric)})

    @property
    def source(self) -> str:
        return f"{self.stage.value}.{self.name}"


@dataclass(frozen=True)
class Series:
    """A per-request series a stage records (seconds; lower is better), which a margin can compare with a
    rank test. `performance`: it measures how fast the machine ran, like a performance metric."""

    name: str
    performance: bool = False


@dataclass(frozen=True)
class DimensionInfo:
    binary: bool  # 0/1 per item -> McNemar / Tango; otherwise a paired bootstrap
    scorer: bool  # produced by a scorer whose calibration may be checked (min_agreement)


class Declares(Protocol):
    """What a stage declares about its measurements (a `StageSpec` is one)."""

    @property
    def stage(self) -> Stage: ...
    @property
    def metrics(self) -> tuple[Metric, ...]: ...
    @property
    def samples(self) -> tuple[Series, ...]: ...
    @property
    def items(self) -> Mapping[str, DimensionInfo]: ...


# Per-item scores are ratios, higher better; per-request samples are seconds, lower better.
_SERIES: dict[str, tuple[Better, Unit]] = {"items:": ("higher", "ratio"), "samples:": ("lower", "s")}


@dataclass(frozen=True)
class Catalogue:
    """Every metric, sample series and item dimension of a set of stages, by stage."""

    metrics: Mapping[Stage, Mapping[str, MetricInfo]] = field(default_factory=lambda: MappingProxyType({}))
    samples: Mapping[Stage, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    performance_samples: Mapping[Stage, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    item_stage: Stage | None = None  # the one stage that produces per-item results
    item_dimensions: Mapping[str, DimensionInfo] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, stages: Iterable[Declares]) -> Catalogue:
        metrics: dict[Stage, dict[str, MetricInfo]] = {}
        samples: dict[Stage, frozenset[str]] = {}
        performance: dict[Stage, frozenset[str]] = {}
        item_stage: Stage | None = None
        dimensions: dict[str, DimensionInfo] = {}
        for s in stages:
            declared: dict[str, MetricInfo] = {}
            for m in s.metrics:
                if m.name in declared:
                    raise ValueError(f"stage {s.stage.value} declares metric {m.name!r} twice")
                declared[m.name] = MetricInfo.of(s.stage, m)
            if declared:
                metrics[s.stage] = declared
            if s.samples:
                samples[s.stage] = frozenset(x.name for x in s.samples)
            if perf := frozenset(x.name for x in s.samples if x.performance):
                performance[s.stage] = perf
            if s.items:
                if item_stage is not None:  # `items:<dimension>` names no stage: one stage answers it
                    raise ValueError(f"stages {item_stage.value} and {s.stage.value} both declare per-item scores")
                item_stage, dimensions = s.stage, dict(s.items)
        return cls(MappingProxyType(metrics), MappingProxyType(samples), MappingProxyType(performance),
                   item_stage, MappingProxyType(dimensions))

    def metric(self, stage: Stage | str, name: str) -> MetricInfo | None:
        try:
            return self.metrics.get(Stage(stage), {}).get(name)
        except ValueError:
            return None

    def _kind(self, source: str) -> tuple[Better, Unit] | None:
        for prefix, kind in _SERIES.items():
            if source.startswith(prefix):
                return kind
        stage, _, name = source.partition(".")
        info = self.metric(stage, name)
        return (info.better, info.unit) if info else None

    def better(self, source: str) -> Better | None:
        """Which way is better for `stage.metric`, `items:…` (higher: scores) or `samples:…` (lower: latency)."""
        kind = self._kind(source)
        return kind[0] if kind else None

    def unit(self, source: str) -> Unit | None:
        """The unit of `stage.metric`; per-item scores are ratios, per-request samples seconds."""
        kind = self._kind(source)
        return kind[1] if kind else None


# A bench that interleaved the baseline release with the candidate (pipeline/bench/interleave.py)
# records the baseline's series next to the candidate's under this prefix: `baseline_ttft_s`.
SAME_RUN_PREFIX = "baseline_"


def same_run_series(name: str) -> str:
    """The sample series holding the baseline release's requests measured in this run."""
    return SAME_RUN_PREFIX + name


_installed: Catalogue | None = None


def install(catalogue: Catalogue) -> None:
    """Make `catalogue` the one readers with no plan in hand use (the stage registry installs its own)."""
    global _installed
    _installed = catalogue


def catalogue() -> Catalogue:
    """The installed catalogue: the stage registry's, once `pipeline.stages.registry` is imported."""
    if _installed is None:
        raise RuntimeError("no metric catalogue is installed: import pipeline.stages.registry (it installs the "
                           "registered stages' metrics) or pass a catalogue")
    return _installed


def metric(stage: Stage | str, name: str) -> MetricInfo | None:
    return catalogue().metric(stage, name)


def better(source: str) -> Better | None:
    """Which way is better for `stage.metric`, `items:…` or `samples:…`, in the installed catalogue."""
    return catalogue().better(source)


def unit(source: str) -> Unit | None:
    """The unit of `stage.metric` in the installed catalogue."""
    return catalogue().unit(source)
