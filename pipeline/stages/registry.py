"""Every stage, in the order of the plans: the one list the plans, the dispatch, reuse, the measurement
sets, the metric catalogue and the stage commands are read from. A stage is added here by one line (its file
declares its `SPEC`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pipeline import metrics
from pipeline.errors import BadInput
from pipeline.models import Stage
from pipeline.stages import attest, bench, boot, build, evaluate, gate, leak, manifests, promote, scan, sign
from pipeline.stages.spec import StageSpec


class Registry:
    """An ordered set of stage specs, one per stage."""

    def __init__(self, specs: Iterable[StageSpec]) -> None:
        self.specs: tuple[StageSpec, ...] = tuple(specs)
        self._by_stage = {s.stage: s for s in self.specs}
        if len(self._by_stage) != len(self.specs):
            raise ValueError("a stage is registered twice")
        for i, spec in enumerate(self.specs):
            earlier = {s.stage for s in self.specs[:i]}
            if missing := [n.value for n in (*spec.needs, *spec.reads) if n not in earlier]:
                raise ValueError(f"stage {spec.name} reads {missing}, which do not run before it")
        # the metrics, sample series and item dimensions the stages declare (a name declared twice is refused)
        self.catalogue = metrics.Catalogue.of(self.specs)

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(self.specs)

    def __contains__(self, stage: object) -> bool:
        return stage in self._by_stage

    def get(self, stage: Stage | str) -> StageSpec | None:
        try:
            return self._by_stage.get(Stage(stage))
        except ValueError:
            return None

    def spec(self, stage: Stage | str) -> StageSpec:
        found = self.get(stage)
        if found is None:
            raise BadInput(f"no stage {str(stage)!r}; known: {', '.join(s.name for s in self.specs)}", where="stage")
        return found

    @property
    def linked(self) -> tuple[Stage, ...]:
        """The stages whose results carry evidence links, in order (`StageSpec.evidence`)."""
        return tuple(s.stage for s in self.specs if s.evidence)

    def replace(self, spec: StageSpec) -> Registry:
        """This registry with `spec` in place of the stage's spec, or appended when new."""
        if spec.stage in self._by_stage:
            return Registry(spec if s.stage is spec.stage else s for s in self.specs)
        return Registry((*self.specs, spec))


STAGES = Registry((
    build.SPEC,
    leak.SPEC,
    scan.SPEC,
    sign.SPEC,
    boot.SPEC,
    bench.SPEC,
    evaluate.SPEC,
    manifests.SPEC,
    gate.SPEC,
    attest.SPEC,
    promote.SPEC,
))

# The catalogue of every registered stage's metrics, for the readers below the stages that have no plan in
# hand (reports, `policy check`); a runner gives the gates its own plan's catalogue (pipeline/metrics.py).
CATALOGUE = STAGES.catalogue
metrics.install(CATALOGUE)
