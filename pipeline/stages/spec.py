"""What a stage is, in one place: `StageSpec`, declared once per stage in `pipeline/stages/<x>.py`.

The plans, the runner's dispatch, reuse keys, the measurement sets, the metric catalogue (each stage
declares what it measures), the stage's own command and its exit code, and the check a stage's inputs
must pass before anything is recorded are all read from the spec, so adding a stage is its file, its
line in `pipeline/stages/registry.py`, its `gates.yaml` entry and its test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import ExitCode
from pipeline.metrics import Catalogue, DimensionInfo, Metric, MetricInfo, Series
from pipeline.models import Decision, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas import Details
from pipeline.stages.context import StageContext, StageOptions

StageFn = Callable[[RunRecord, StageContext], StageResult]
# Runs before the runner marks or records anything for the stage: a refusal here (GateFailed, exit 1)
# leaves the stored record exactly as it was.
Precheck = Callable[[RunRecord, StageContext], None]
# The stage's own inputs, beyond the release identity and tool versions the runner adds, that its
# result depends on; None: unknown, so the result is recomputed.
KeyParts = Callable[[RunRecord, PipelineConfig, StageOptions], dict[str, Any] | None]
# Whether a stored result the runner found to reuse still stands for this run (the build it names is
# still in the registry under this run's tag): False measures again.
StillValid = Callable[[RunRecord, StageResult, StageContext], bool]
# Whether a stage that runs only when asked for was asked for, by the options of this invocation.
Requested = Callable[[StageOptions], bool]
# Whether a checking stage that ran to the end found the release fit (`leaks == 0`, ...).
Check = Callable[[StageResult], bool]
ExitCheck = Callable[[RunRecord, StageResult], ExitCode]


@dataclass(frozen=True)
class Variant:
    """How one plan runs the stage differently (the Dagger plan records a build instead of building)."""

    run: StageFn | None = None
    doc: str | None = None
    produces: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StageSpec:
    stage: Stage
    run: StageFn
    doc: str
    # The help of the stage's own command, `llmgate <name>` (what it does, its exit codes, an example);
    # None: `doc` with the exit codes every stage command has. The command's options come from the
    # spec: `--server-url` where it serves or talks to a server, `--fresh` where a result can be reused
    # (pipeline/cli/stage_cmds.py).
    help: str | None = None
    details: type[Details] | None = None  # the model of `StageResult.details`
    needs: tuple[Stage, ...] = ()  # stages whose results this one reads
    reads: tuple[Stage, ...] = ()  # stages whose results it also reads when they are there
    digest: bool = True  # works on the image by digest, so the run must name one
    server: bool = False  # talks to the server the boot step started (or attached to)
    starts_server: bool = False  # starts (and measures) the server the `server` stages talk to
    credentials: tuple[str, ...] = ()  # names in pipeline.orchestrate.plan.CREDENTIALS
    group: str | None = None  # steps of one group may run side by side
    on_request: bool = False  # runs only when asked for
    requested: Requested | None = None  # with `on_request`: whether these options ask for it
    # An event about a target rather than a fact about the release: recorded only when this metric
    # says it happened.
    event: str | None = None
    # What it measures: the metric catalogue (`pipeline.metrics.Catalogue`) is built from these.
    metrics: tuple[Metric, ...] = ()
    samples: tuple[Series, ...] = ()  # per-request series a margin can compare with a rank test
    items: Mapping[str, DimensionInfo] = field(default_factory=lambda: MappingProxyType({}))  # per-item scores
    # Metrics (and sample series) it records; None: every one it declares.
    produces: tuple[str, ...] | None = None
    reuse_key: KeyParts | None = None  # None: never reused, always runs
    still_valid: StillValid | None = None  # None: a stored result with the same key stands
    # `failed` means the release could not be measured (not that it measured badly): the run stops.
    measurement: bool = False
    # Its result is signed as an evidence link where it is measured, and nothing reads it (the gate, a
    # later stage, a reuse) unless that link verifies.
    evidence: bool = False
    # Measures the machine as much as the release: reused only while recent and undisturbed, never
    # for an attached server, and measured again on `--remeasure`.
    measures_machine: bool = False
    check: Check | None = None  # a checking stage: `ok` says it ran; this says whether it passed
    # A result that is not ok is a refusal (exit 1) rather than an infrastructure failure (exit 3).
    refuses: bool = False
    exit_check: ExitCheck | None = None  # replaces the default exit code of the stage's command
    precheck: Precheck | None = None
    plans: Mapping[str, Variant] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def name(self) -> str:
        return self.stage.value

    @property
    def recorded(self) -> dict[str, MetricInfo]:
        """The metrics this stage records (all it declares unless `produces` narrows them)."""
        known = Catalogue.of((self,)).metrics.get(self.stage, {})
        return dict(known) if self.produces is None else {n: known[n] for n in self.produces if n in known}

    def fn(self, plan: str) -> StageFn:
        variant = self.plans.get(plan)
        return variant.run if variant is not None and variant.run is not None else self.run

    def passed(self, res: StageResult) -> bool | None:
        """Whether a checking stage that ran found the release fit; None for a stage that checks nothing
        or did not run to the end."""
        if self.check is None or res.status is not StageStatus.OK:
            return None
        return self.check(res)

    def outcome(self, res: StageResult) -> str:
        """The word to show for the stage: its status, or "blocked" for a check that ran and failed."""
        return "blocked" if self.passed(res) is False else res.status.value

    def exit_code(self, run: RunRecord, res: StageResult) -> ExitCode:
        """0 when the stage's own check passed, 1 when it found the release wanting (or refused), 3 when
        it failed to measure. A stage that did not run is never a pass."""
        if res.status is StageStatus.SKIPPED:
            return ExitCode.GATE_FAILED
        if self.exit_check is not None:
            return self.exit_check(run, res)
        if res.status is not StageStatus.OK:
            return ExitCode.GATE_FAILED if self.check is not None or self.refuses else ExitCode.INFRA
        return ExitCode.GATE_FAILED if self.passed(res) is False else ExitCode.PASS


def decision_exit(run: RunRecord, _res: StageResult) -> ExitCode:
    """The exit code of a stage that decides the run: 0 only on a pass."""
    return ExitCode.PASS if run.decision is Decision.PASS else ExitCode.GATE_FAILED


def file_sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def tree_sha(root: Path) -> str | None:
    """sha256 over every file's relative path and content under `root` (small trees: manifests)."""
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


# A measuring stage signs its own result where it is measured (pipeline/supplychain/evidence.py); the
# gate verifies those links and signs its verdict. Without the key they are unsigned previews.
EVIDENCE = ("cosign_key", "cosign_password", "cosign_public_key")
