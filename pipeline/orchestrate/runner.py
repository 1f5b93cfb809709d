"""The one Runner: runs the steps of a plan on one run record, and is the only thing that records.

Every way of running a stage goes through here: `llmgate run` (the whole plan), `llmgate stage NAME`
and the per-stage commands (one step), and the Dagger module (`llmgate run --run ID --only …` per segment). For
each step the runner:

- checks that the steps it needs have results, and gives it a server when it talks to one (the boot
  step starts it, or `--server-url` attaches to one started elsewhere);
- reuses a stored result whose inputs are identical (`reuse.input_key`), unless told `--fresh`;
- times it from its real start, turns an error inside it into a recorded stage error, checkpoints the
  record (store + run.json) before and after it, so that a killed process leaves a record that says
  which stage it died in;
- runs the steps of one group (leak, scan, sign) side by side when the machine has the cores.

Whatever happens, the run's reports are written at the end, also for a failed or blocked run.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import ExitCode, InfraError, LlmgateError
from pipeline.gates.policy import Policy, load_policy
from pipeline.models import Decision, ImageRef, RunRecord, Stage, StageResult, StageStatus, utcnow
from pipeline.orchestrate import reuse
from pipeline.orchestrate.plan import Plan, Step, get_plan
from pipeline.orchestrate.reap import reap_interrupted
from pipeline.orchestrate.release import new_run
from pipeline.orchestrate.stage_fns import stage_fn, stage_precheck
from pipeline.progress import NullReporter, Reporter
from pipeline.report.github import publish as publish_github
from pipeline.stages.context import ServedModel, StageContext, StageOptions
from pipeline.stages.spec import StageSpec
from pipeline.supplychain import evidence
from pipeline.supplychain.gate_sections import SECTIONS
from pipeline.supplychain.signing import ReleaseKeys, release_keys
from pipeline.telemetry import RunTrace, Telemetry
from pipeline.telemetry import from_env as telemetry_from_env
from pipeline.workspace import Workspace

PID_LABEL, HOST_LABEL, STAGE_LABEL = "llmgate.pid", "llmgate.host", "llmgate.stage"
_REUSE_NOTE = re.compile(r"(; )?reused from run \S+ \((same inputs|same inputs on this machine[^)]*)\)$")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled, a pod evicted) while a stage runs: handled like Ctrl-C, so the run is
    marked interrupted and its server stopped, rather than the process vanishing with the run pending."""


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; a caller in a thread keeps its own
        return

    def _raise(_signum: int, _frame: object) -> None:
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _why(exc: KeyboardInterrupt) -> str:
    return "interrupted (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (SIGINT)"


@dataclass(frozen=True)
class _Failed:
    """A stage that raised: the error, and when the stage started (its record keeps the real duration)."""

    error: LlmgateError
    started: datetime

    def result(self, stage: Stage) -> StageResult:
        return StageResult(stage=stage, status=StageStatus.ERROR, reason=self.error.render(),
                           started_at=self.started).finish()


@dataclass
class Runner:
    ws: Workspace
    cfg: PipelineConfig
    plan: Plan = field(default_factory=lambda: get_plan("local"))
    reporter: Reporter = field(default_factory=NullReporter)
    options: StageOptions = field(default_factory=StageOptions)
    adapters: Any = None
    policy: Policy | None = None
    parallel: bool | None = None  # None: when the machine has more than one core
    telemetry: Telemetry = field(default_factory=telemetry_from_env)  # OTLP when configured, else no-op
    _trace: RunTrace | None = field(default=None, init=False, repr=False)
    _keys: ReleaseKeys | None = field(default=None, init=False, repr=False)
    # stage -> digest of the link of the stored result a reused result came from (named in its new link)
    _reused_links: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.options.server_url is not None:
            check_server_url(self.options.server_url)
        self.options.plan = self.plan.name
        if self.parallel is None:
            self.parallel = (os.cpu_count() or 1) > 1

    # -- records -----------------------------------------------------------------------------------
    def load_policy(self) -> Policy:
        if self.policy is None:
            self.policy = load_policy(Path(self.cfg.gates_file), sections=SECTIONS, catalogue=self.plan.catalogue)
        return self.policy

    def create(self, *, tag: str | None = None, image: ImageRef | None = None,
               model_dir: Path | None = None) -> RunRecord:
        """A new run for the release the configuration describes, validated and stored. When this plan builds
        the image here, the build's own inputs are checked too, before anything is stored or built."""
        run = new_run(self.cfg, self.load_policy(), plan=self.plan.name, tag=tag, image=image, model_dir=model_dir)
        if image is None and self.plan.name == "local":
            from pipeline.stages.build import check_build_inputs

            check_build_inputs(self.cfg)
        self._checkpoint(run)
        self.reporter.step(f"run {run.run_id}: {run.image.by_tag}, model {run.model.digest[:19] if run.model else '-'}"
                           f" (target {run.target}, plan {self.plan.name})")
        return run

    def keys(self) -> ReleaseKeys:
        """The signing key every result of this invocation is signed with (None: unsigned previews), and the
        public key links are verified with; loaded once (the key file's KDF is deliberately slow)."""
        if self._keys is None:
            self._keys = release_keys(self.cfg.sign)
        return self._keys

    # -- running -----------------------------------------------------------------------------------
    def _runtime(self) -> Any:
        return self.context().adapters.container_runtime()

    def context(self) -> StageContext:
        from pipeline.adapters.bundle import Adapters

        if self.adapters is None:
            self.adapters = Adapters()
        return StageContext(cfg=self.cfg, ws=self.ws, reporter=self.reporter, adapters=self.adapters,
                            policy=self.load_policy(), options=self.options, keys_source=self.keys,
                            linked=self.plan.linked)

    def run(self, run: RunRecord, *, skip: Iterable[str] = (), only: Iterable[str] | None = None) -> RunRecord:
        """Every step of the plan (a step `on_request` only when asked for), then the reports. `only`: just
        these steps, in plan order and with their groups, the others left as they are (the Dagger module
        runs the plan in segments, starting the server between them)."""
        with _sigterm_interrupts():
            return self._run_plan(run, skip, None if only is None else self.check_stages(only, where="--only"))

    def _run_plan(self, run: RunRecord, skip: Iterable[str], only: set[str] | None = None) -> RunRecord:
        skipped = self.check_skip(skip)
        reap_interrupted(self.ws, self.reporter, self._runtime)
        ctx = self.context()
        self._start_trace(run)
        try:
            steps = [s for s in self.plan.steps if (not s.on_request or self._requested(s))
                     and (only is None or s.stage.value in only)]
            i = 0
            while i < len(steps):
                group = [steps[i]]
                while steps[i].group and i + len(group) < len(steps) and steps[i + len(group)].group == steps[i].group:
                    group.append(steps[i + len(group)])
                i += len(group)
                todo = [s for s in group if s.stage.value not in skipped]
                for s in group:
                    if s.stage.value in skipped:
                        self._record(run, StageResult(stage=s.stage, status=StageStatus.SKIPPED,
                                                      reason="not run: skipped on request (--skip)"))
                self._stop_on_failure(run, self._run_group(run, ctx, todo))
        except KeyboardInterrupt as exc:
            self._interrupted(run, _why(exc))
            raise
        except LlmgateError as exc:
            if run.decision is Decision.PENDING:  # a check before a step refused it: the run did not finish
                run.decision = Decision.ERROR
                run.decision_reason = exc.render().splitlines()[0]
            raise
        finally:
            ctx.close()
            self.finish(run)
        return run

    def _stop_on_failure(self, run: RunRecord, results: Sequence[StageResult], *, stop: bool = True) -> None:
        """A build that failed, or a measurement that failed (the server never became ready, died, or answered
        nothing usable), leaves nothing the later steps could judge: the run ends here as an error (exit 3)
        with that stage's reason, instead of running on into a gate that blocks on missing results. One stage
        of a stored run (`stop=False`) marks the record the same way and lets its command exit 3."""
        for res in results:
            if res.status is StageStatus.FAILED and self._spec(res.stage).measurement:
                why = (res.reason or "failed").splitlines()[0]
                run.decision = Decision.ERROR
                run.decision_reason = f"stage {res.stage.value}: {why}"
                self._checkpoint(run)
                if stop:
                    raise InfraError(f"{res.stage.value} failed: {why}", where=f"stage {res.stage.value}")

    def run_stage(self, run: RunRecord, stage: Stage | str) -> StageResult:
        """One step of the plan on a stored run (booting a server first when the step needs one)."""
        with _sigterm_interrupts():
            return self._run_one(run, stage)

    def _run_one(self, run: RunRecord, stage: Stage | str) -> StageResult:
        step = self.plan.step(Stage(stage))
        if step.on_request and not self._requested(step):
            from pipeline.errors import BadInput

            raise BadInput(f"stage {step.stage.value} runs only when asked for (`llmgate {step.stage.value}`)",
                           where="stage")
        reap_interrupted(self.ws, self.reporter, self._runtime)
        ctx = self.context()
        before = run.model_dump_json()
        self._start_trace(run)
        try:
            if step.server and self.options.server_url is None and not step.spec.starts_server:
                self._run_group(run, ctx, [self._server_step()])
            res = self._run_group(run, ctx, [step])[0]
            self._stop_on_failure(run, [res], stop=False)
            return res
        except KeyboardInterrupt as exc:
            self._interrupted(run, _why(exc))
            raise
        finally:
            ctx.close()
            self.finish(run, unchanged_since=before)

    def rescore(self, run: RunRecord) -> StageResult:
        """The eval stage again from the run's stored answers, with today's scorers (no server)."""
        from pipeline.stages.evaluate import rescore

        self._check_inputs(run, Stage.EVAL)  # the answers it re-scores are the stored eval result's
        try:
            res = rescore(run, self.cfg, self.ws.run_dir(run.run_id), self.reporter, judge=self.cfg.eval.judge)
            self._record(run, res)
            self.reporter.step(_describe(res, self._spec(res.stage)))
            return res
        finally:
            self.finish(run)

    # -- one group of steps ------------------------------------------------------------------------
    def _run_group(self, run: RunRecord, ctx: StageContext, steps: Sequence[Step]) -> list[StageResult]:
        prepared: list[tuple[Step, str | None]] = []
        results: dict[Stage, StageResult] = {}
        for step in steps:
            self._check_needs(run, step)
            key, found = self._reusable(run, step.stage, say=True)
            if found is not None and step.spec.starts_server and not self._server_steps_reusable(run):
                found = None  # a step after it needs a live server: boot for real
                self.reporter.step(f"{step.stage.value}: measuring again: a later step needs a live server (its "
                                   "stored result cannot stand for it)")
            if found is not None and self._still_valid(run, step, found[1]):
                results[step.stage] = self._reused(run, found[0], found[1], key)
            else:
                prepared.append((step, key))
        for step, _ in prepared:  # a refusal here changes nothing stored: no mark, no record
            self._check_inputs(run, step)
            precheck = stage_precheck(step)
            if precheck is not None:
                precheck(run, ctx)
        no_server: LlmgateError | None = None
        if step_server := [s for s, _ in prepared if s.server]:
            try:
                self._ensure_server(run, ctx, step_server[0])
            except LlmgateError as exc:
                no_server = exc
        self._mark(run, ",".join(s.stage.value for s, _ in prepared if not s.event))
        outcomes: list[tuple[Step, str | None, StageResult | _Failed]]
        if no_server is not None:
            outcomes = [(s, k, _Failed(no_server, utcnow())) for s, k in prepared]
        elif len(prepared) > 1 and self.parallel:
            with ThreadPoolExecutor(max_workers=len(prepared), thread_name_prefix="llmgate-stage") as pool:
                futures = [(s, k, pool.submit(self._call, run, ctx, s)) for s, k in prepared]
                outcomes = [(s, k, f.result()) for s, k, f in futures]
        else:
            outcomes = [(s, k, self._call(run, ctx, s)) for s, k in prepared]
        failure: tuple[Stage, LlmgateError] | None = None
        event_failure: LlmgateError | None = None
        for step, key, outcome in outcomes:
            if isinstance(outcome, _Failed):
                results[step.stage] = outcome.result(step.stage)
                if step.event is not None:
                    # An event about a target (a promotion that failed) is no fact about the release: the
                    # run's decision stays what its gate said, and the error goes on up.
                    event_failure = event_failure or outcome.error
                else:
                    failure = failure or (step.stage, outcome.error)
            else:
                outcome.input_key = key
                results[step.stage] = outcome
        ordered = [results[s.stage] for s in steps]
        for step, res in zip(steps, ordered, strict=True):
            if step.event is None or res.metrics.get(step.event) == 1.0:
                self._record(run, res)
            self.reporter.step(_describe(res, self._spec(res.stage)))
        if failure is not None:
            run.decision = Decision.ERROR
            run.decision_reason = f"stage {failure[0].value}: {failure[1].message}"
            self._checkpoint(run)
            raise failure[1]
        if event_failure is not None:
            raise event_failure
        return ordered

    def _call(self, run: RunRecord, ctx: StageContext, step: Step) -> StageResult | _Failed:
        self.reporter.step(f"{step.stage.value}: started")
        started = utcnow()
        try:
            result = stage_fn(step.stage, plan=self.plan)(run, ctx)
        except LlmgateError as exc:
            return _Failed(exc, started)
        except Exception as exc:  # noqa: BLE001 - a bug in a stage must still leave a record
            return _Failed(InfraError(f"{type(exc).__name__}: {exc}", where=f"stage {step.stage.value}"), started)
        result.started_at = started
        return result.finish()

    def _reused(self, run: RunRecord, source_run: str, stored: StageResult, key: str) -> StageResult:
        from pipeline.bench.reuse_policy import reuse_note
        from pipeline.schemas import BuildDetails

        res = stored.model_copy(deep=True)
        build = res.details_as(BuildDetails)
        if build is not None and run.image.tag:  # the same digest, under the tag this run asked for
            res.details = build.model_copy(update={"image": run.image.by_tag})
        res.reused_from = source_run
        res.input_key = key
        # Its link names the run that measured it; this run signs a link of its own for it (`_record`).
        self._reused_links[res.stage.value] = evidence.link_sha256(res.evidence)
        res.evidence = None
        measured = _REUSE_NOTE.sub("", res.reason or "")  # the stored result may itself have been reused
        why = (reuse_note(stored, self._reuse_policy(), run.created_at) if self._spec(res.stage).measures_machine
               else "same inputs")
        res.reason = (measured + "; " if measured else "") + f"reused from run {source_run} ({why})"
        return res

    def _check_inputs(self, run: RunRecord, step: Step | Stage) -> None:
        """The earlier results a step reads must carry verified links before it reads them, so that no stage
        signs a result computed from an edited one (`EvidenceRefused`, exit 1)."""
        stage = step if isinstance(step, Stage) else step.stage
        reads = (stage,) if isinstance(step, Stage) else (*step.needs, *step.reads)
        for s in reads:
            res = run.stage(s.value)
            if res is None or s not in self.plan.linked:
                continue
            keys = self.keys()
            check = evidence.check_result(res, run, keys.public_key)
            if not check.verified and (keys.signing is not None or check.signed):
                raise evidence.EvidenceRefused(f"refusing to run {stage.value} on an unproven input: {check.line()}",
                                               where=f"run {run.run_id}",
                                               hint=f"measure it again: `llmgate stage {s.value} --run {run.run_id} "
                                                    "--fresh`")

    def _not_reusable(self, stored: StageResult, key: str) -> str | None:
        """Why a stored result with this input key may not stand in for running the stage (None: it may):
        it must carry a link that verifies with the public key, signs exactly it, and names this key."""
        return evidence.check_reusable(stored, key, self.keys().public_key)

    def _spec(self, stage: Stage) -> StageSpec:
        return self.plan.step(stage).spec

    def _reuse_policy(self) -> Any:
        from pipeline.bench.reuse_policy import ReusePolicy

        section = self.load_policy().sections.get("reuse")
        return section if isinstance(section, ReusePolicy) else ReusePolicy()

    def _reusable(self, run: RunRecord, stage: Stage, *, say: bool = False
                  ) -> tuple[str | None, tuple[str, StageResult] | None]:
        """This step's input key, and the stored result that may stand for it (None: run it). A boot or
        bench must also be recent and undisturbed (the policy's `reuse` section); `say` reports why a stored
        one was not taken."""
        baseline = None
        spec = self._spec(stage)
        if spec.measures_machine and self.cfg.bench.same_run_baseline:
            last = self.ws.store.last_promoted(run.target)
            baseline = last.run_id if last is not None and last.run_id != run.run_id else None
        key = reuse.input_key(stage, run, self.cfg, self.options, baseline=baseline, spec=spec)
        if key is None or not reuse.may_reuse(stage, self.options, spec):
            return key, None
        found = self.ws.store.reusable(stage.value, key)
        if found is not None and (unproven := self._not_reusable(found[1], key)):
            if say:
                self.reporter.step(f"{stage.value}: the stored result of run {found[0]} is not reused: {unproven}")
            return key, None
        if found is not None and spec.measures_machine:
            from pipeline.bench.reuse_policy import why_not_reusable

            why = why_not_reusable(found[1], self._reuse_policy(), run.created_at)
            if why is not None:
                if say:
                    self.reporter.step(f"{stage.value}: measuring again: the stored {stage.value} of run {found[0]} "
                                       f"has the same inputs, but {why}")
                return key, None
        return key, found

    def _server_steps_reusable(self, run: RunRecord) -> bool:
        """Every step that talks to the server has a stored result that may stand for it (then boot can be
        reused too, and no server is started at all)."""
        for step in self.plan.steps:
            if not step.server or (step.on_request and not self._requested(step)):
                continue
            if self._reusable(run, step.stage)[1] is None:
                return False
        return True

    def _still_valid(self, run: RunRecord, step: Step, stored: StageResult) -> bool:
        """Whether a stored result found to reuse still stands for this run (`StageSpec.still_valid`)."""
        check = step.spec.still_valid
        return check is None or check(run, stored, self.context())

    def _server_step(self) -> Step:
        """The step that starts the server the `server` steps talk to (`StageSpec.starts_server`)."""
        for step in self.plan.steps:
            if step.spec.starts_server:
                return step
        raise InfraError(f"the {self.plan.name} plan has no step that starts a server", where="plan")

    def _ensure_server(self, run: RunRecord, ctx: StageContext, step: Step) -> None:
        if ctx.server is not None:
            return
        if self.options.server_url:
            ctx.hold_server(ServedModel(self.options.server_url.rstrip("/"), self.cfg.boot.served_model_name))
            return
        starter = self._server_step().stage.value
        boot = run.stage(starter)
        why = (boot.reason or boot.status.value).splitlines()[0] if boot is not None else f"{starter} has not run"
        raise InfraError(f"server did not boot: {why}", where=starter)

    def _check_needs(self, run: RunRecord, step: Step) -> None:
        from pipeline.errors import BadInput

        if step.digest and run.image.digest is None:
            raise BadInput(f"the run names no image digest, which {step.stage.value} works on",
                           where=f"run {run.run_id}", hint=f"run `llmgate stage build --run {run.run_id}` first")
        for need in step.needs:
            if run.stage(need.value) is None:
                raise BadInput(f"no '{need.value}' result, which {step.stage.value} reads", where=f"run {run.run_id}",
                               hint=f"run `llmgate stage {need.value} --run {run.run_id}` first")

    def check_skip(self, skip: Iterable[str]) -> set[str]:
        """The stage names `--skip` gives, each a stage of this plan (BadInput otherwise, before anything runs)."""
        return self.check_stages(skip, where="--skip")

    def check_stages(self, names: Iterable[str], *, where: str) -> set[str]:
        """Stage names given on the command line, each a stage of this plan (BadInput otherwise)."""
        given = set(names)
        unknown = given - {s.value for s in self.plan.stages}
        if unknown:
            from pipeline.errors import BadInput

            raise BadInput(f"unknown stage(s) {sorted(unknown)}; the {self.plan.name} plan has "
                           f"{', '.join(s.value for s in self.plan.stages)}", where=where)
        return given

    def _requested(self, step: Step) -> bool:
        return step.spec.requested is not None and step.spec.requested(self.options)

    # -- recording ---------------------------------------------------------------------------------
    def _record(self, run: RunRecord, result: StageResult) -> None:
        self._sign(run, result)
        run.add_stage(result)
        self._checkpoint(run)
        if self._trace is not None:
            self._trace.record_stage(result.stage.value, status=result.status.value, started_at=result.started_at,
                                     finished_at=result.finished_at, metrics=result.metrics, reason=result.reason,
                                     attributes={"llmgate.stage.reused_from": result.reused_from or ""})

    def _sign(self, run: RunRecord, result: StageResult) -> None:
        """Sign a measuring stage's result in the process that produced it, right before it is recorded:
        the one place every result passes through, so no stage function signs anything itself."""
        if result.stage not in self.plan.linked:
            return
        if result.finished_at is None:
            result.finish()  # what recording would set: the link signs the result as stored
        reused_link = self._reused_links.pop(result.stage.value, None)
        key = self.keys().signing
        if key is None:
            return  # no signing key (a pull-request job): an unsigned result, judged only in a preview
        step = self.plan.step(result.stage) if result.stage in self.plan.stages else None
        reads = (*step.needs, *step.reads) if step is not None else ()
        evidence.sign_result(result, run, key, reads=reads, reused_link=reused_link)

    def _start_trace(self, run: RunRecord) -> None:
        self._trace = self.telemetry.start_run(run.run_id, image_digest=run.image.digest,
                                               model_digest=run.model.digest if run.model else None,
                                               plan=self.plan.name)

    def _mark(self, run: RunRecord, stages: str) -> None:
        """Say in the stored record which process runs which stage, so a killed run can be told apart
        from a running one."""
        if not stages:
            return
        run.labels.update({PID_LABEL: str(os.getpid()), HOST_LABEL: socket.gethostname(), STAGE_LABEL: stages})
        self._checkpoint(run)

    def _interrupted(self, run: RunRecord, why: str) -> None:
        run.interrupted_stage = run.labels.get(STAGE_LABEL)
        run.decision = Decision.INTERRUPTED
        run.decision_reason = f"{why} during {run.interrupted_stage or 'the run'}"
        self._checkpoint(run)

    def _checkpoint(self, run: RunRecord) -> None:
        """Store the record and write run.json. When the work dir cannot take run.json (full, read-only),
        the store still gets the record, marked as an error with that reason and no longer running, so
        the failure is recorded where people look; then the error goes on up (exit 3)."""
        try:
            self.ws.checkpoint(run)
        except InfraError as exc:
            if run.decision is Decision.PENDING:
                run.decision = Decision.ERROR
                run.decision_reason = f"the work dir cannot be written: {exc.render().splitlines()[0]}"
            for label in (PID_LABEL, HOST_LABEL, STAGE_LABEL):
                run.labels.pop(label, None)
            try:
                self.ws.store.save(run)
            except LlmgateError:
                pass  # the store itself is what failed: the original error says so
            raise

    def finish(self, run: RunRecord, *, unchanged_since: str | None = None) -> Path | None:
        """Drop the liveness labels, store the record if anything changed (a refused promotion leaves the
        stored record byte for byte as it was) and write the reports (a report failure never hides the
        verdict)."""
        for label in (PID_LABEL, HOST_LABEL, STAGE_LABEL):
            run.labels.pop(label, None)
        try:
            if unchanged_since is None or run.model_dump_json() != unchanged_since:
                self._checkpoint(run)
        finally:
            if self._trace is not None:
                self._trace.end(decision=run.decision.value)
                self._trace = None
                self.telemetry.shutdown()
        html = write_reports(run, self.ws)
        publish_github(run, self.ws)  # job summary and gate annotations when running in GitHub Actions
        return html


def check_server_url(url: str) -> str:
    """`--server-url` must be an http(s) URL with a host: checked before anything runs."""
    from urllib.parse import urlsplit

    from pipeline.errors import BadInput

    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number or out of range
    except ValueError as exc:
        raise BadInput(f"not a URL: {url!r} ({exc})", where="--server-url") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise BadInput(f"not an http(s) URL with a host: {url!r}", where="--server-url",
                       hint="e.g. http://127.0.0.1:8000")
    del port
    return url


def _describe(res: StageResult, spec: StageSpec) -> str:
    took = f" in {res.duration_s:.1f}s" if res.duration_s is not None and not res.reused_from else ""
    why = f": {res.reason.splitlines()[0]}" if res.reason else ""
    return f"{res.stage.value}: {spec.outcome(res)}{took}{why}"


def write_reports(run: RunRecord, ws: Workspace) -> Path | None:
    """report.json, report.html and summary.md next to the run, whatever its decision."""
    try:
        from pipeline.report.markdown import render_summary
        from pipeline.report.run_page import write_run_report

        baseline = ws.store.get(run.baseline_run_id) if run.baseline_run_id else None
        out = ws.run_dir(run.run_id)
        (out / "summary.md").write_text(render_summary(run, baseline))
        return write_run_report(run, out, baseline=baseline).html
    except Exception as exc:  # noqa: BLE001 - reporting is best effort, the record is already stored
        try:
            ws.run_dir(run.run_id).joinpath("report-error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
        except OSError:
            pass  # the work dir cannot be written (full): the record in the store says what happened
        return None


def exit_code_for(run: RunRecord) -> ExitCode:
    if run.decision is Decision.PASS:
        return ExitCode.PASS
    if run.decision in (Decision.BLOCKED, Decision.INCONCLUSIVE):
        return ExitCode.GATE_FAILED
    return ExitCode.INFRA

