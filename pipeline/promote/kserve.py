"""Promotion backend "kserve": a KServe InferenceService canary, stepped by this backend.

KServe (Serverless mode) splits traffic between the latest ready revision and the previously rolled-out
one by `spec.predictor.canaryTrafficPercent`; nothing runs an analysis for it. So this backend:

1. sets the predictor's image (by digest) and model digest (annotation `llmgate.dev/model-digest` on
   the predictor's pods, env `LLMGATE_MODEL_DIGEST` on the model container) with the first step's
   percentage, recording what served before in the InferenceService's own annotations;
2. for each step of the plan: sets canaryTrafficPercent, waits until the controller has observed that
   generation, the new revision is the latest ready one and carries exactly that share of traffic, then
   evaluates the profile's canary queries (pipeline.serving.queries: the same SLOs an AnalysisTemplate
   checks) against Prometheus for the new revision's pods, `analysis_checks` times;
3. promotes by removing canaryTrafficPercent (KServe then rolls the latest revision out to 100 %) and
   waits until it is the rolled-out revision.

Any failure (revision failed, not ready in time, an SLO breached, no data) aborts: canaryTrafficPercent
goes to 0 (all traffic back on the previous revision at once), the spec is restored to the previous
image and model digest while traffic stays there, and once that revision is ready it is rolled out.

Every write is preceded by the promotion lock's fence check and refused when the InferenceService
carries a newer fence (`llmgate.dev/promotion-fence`, written with each release change); merge patches
have no compare-and-set, so that check is made on the object as read just before the write.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.adapters.kube_api import KubeApi, ObjectRef
from pipeline.adapters.prometheus import PromQL
from pipeline.errors import BadInput
from pipeline.progress import NULL_REPORTER, Reporter
from pipeline.promote.backend import (
    FENCE_ANNOTATION,
    MODEL_DIGEST_ANNOTATION,
    MODEL_DIGEST_ENV,
    PREVIOUS_IMAGE_ANNOTATION,
    PREVIOUS_MODEL_ANNOTATION,
    UNFENCED,
    AbortResult,
    Evidence,
    Fence,
    PromotionResult,
    RestorePlan,
    TargetStatus,
    check_object_fence,
    namespace_for,
)
from pipeline.serving.profiles import VLLM, ServingProfile
from pipeline.serving.queries import AnalysisQuery, analysis_queries

GROUP, VERSION, PLURAL, KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
# Prometheus' kubernetes_sd + labelmap turn the pod label serving.knative.dev/revision into this label.
REVISION_LABEL = "serving_knative_dev_revision"


class StepFailed(Exception):
    """A canary step did not pass; the message says why."""


def conditions(isvc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in (isvc.get("status") or {}).get("conditions") or []}


def predictor_status(isvc: dict[str, Any]) -> dict[str, Any]:
    return (((isvc.get("status") or {}).get("components") or {}).get("predictor")) or {}


def release_of(isvc: dict[str, Any]) -> tuple[str | None, str | None]:
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    model = predictor.get("model") or {}
    digest = (predictor.get("annotations") or {}).get(MODEL_DIGEST_ANNOTATION)
    if not digest:
        digest = next((e.get("value") for e in model.get("env") or [] if e.get("name") == MODEL_DIGEST_ENV), None)
    return model.get("image"), digest


def traffic_line(isvc: dict[str, Any]) -> str:
    parts = []
    for t in predictor_status(isvc).get("traffic") or []:
        tag = f" ({t['tag']})" if t.get("tag") else ""
        parts.append(f"{t.get('revisionName')}={t.get('percent', 0)}%{tag}")
    return ", ".join(parts) or "no traffic"


@dataclass
class KServeBackend:
    """`Backend` for KServe. `steps` are the canary percentages before the full rollout."""

    api: KubeApi
    service: str = "llmgate-server"
    namespaces: dict[str, str] = field(default_factory=dict)
    steps: tuple[int, ...] = (10, 25, 50)
    prometheus: PromQL | None = None
    profile: ServingProfile = VLLM
    thresholds: dict[str, float] = field(default_factory=dict)  # max_arg -> bound (default: the profile's)
    analysis_checks: int = 3
    analysis_interval_s: float = 60
    timeout_s: float = 1800  # per step: the revision becoming ready and taking its share
    poll_s: float = 5
    restore_timeout_s: float = 900
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    name: str = "kserve"
    _started: float = field(default=0.0, init=False, repr=False)
    _fence: Fence = field(default=UNFENCED, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < s < 100 for s in self.steps) or list(self.steps) != sorted(set(self.steps)):
            raise BadInput(f"canary steps must be increasing percentages between 1 and 99, got {self.steps}",
                           where="kserve steps")

    def ref(self, target: str) -> ObjectRef:
        return ObjectRef(GROUP, VERSION, PLURAL, KIND, namespace_for(target, self.namespaces), self.service)

    # -- promote ---------------------------------------------------------------------------------
    def _write(self, ref: ObjectRef, patch: dict[str, Any]) -> dict[str, Any]:
        """Every write: the fence checked against the lock and the object just read, then the patch."""
        if self._fence.fence > 0:
            check_object_fence(self.api.get(ref), self._fence, str(ref))
        return self.api.patch(ref, patch)

    def promote(self, target: str, image: str, model_digest: str | None, evidence: Evidence, *,
                dry_run: bool = False, reporter: Reporter = NULL_REPORTER, fence: Fence = UNFENCED) -> PromotionResult:
        self._fence = fence
        ref = self.ref(target)
        isvc = self.api.get(ref)
        previous, previous_model = release_of(isvc)
        result = PromotionResult(backend="kserve", target=target, outcome="promoted", image=image,
                                 model_digest=model_digest, previous_image=previous,
                                 previous_model_digest=previous_model)
        in_flight = (isvc["spec"]["predictor"].get("canaryTrafficPercent") is not None)
        ready = conditions(isvc).get("Ready", {}).get("status") == "True"
        if previous == image and (model_digest is None or previous_model == model_digest) and ready and not in_flight:
            result.outcome, result.reason = "noop", f"{ref} already serves {image} (Ready)"
            return result
        first = self.release_patch(isvc, image, model_digest, percent=self.steps[0],
                                   previous=(previous or "", previous_model or ""))
        result.patches = [first]
        if dry_run:
            result.outcome = "dry-run"
            return result
        reporter.step(f"kserve: {ref}: {previous} -> {image} at {self.steps[0]}%")
        patched = self._write(ref, first)
        try:
            revision = None
            for i, pct in enumerate(self.steps):
                if i:
                    patched = self._set_percent(ref, pct, result)
                revision = self._wait_step(ref, patched, pct, self.timeout_s, reporter, result.events)
                result.revision = revision
                self._analyse(ref, revision, pct, reporter, result.events)
            patched = self._set_percent(ref, None, result)
            self._wait_rolled_out(ref, patched, revision, self.timeout_s, reporter, result.events)
            return result
        except StepFailed as exc:
            result.outcome, result.reason = "aborted", str(exc)
            reporter.step(f"kserve: aborting {ref}: {exc}")
            result.restored = self._restore(ref, previous, previous_model, reporter, result.events, result.patches)
            if not result.restored:
                result.reason += "; traffic is back on the previous revision, but the restored spec was not " \
                                 "rolled out in time"
            return result

    def release_patch(self, isvc: dict[str, Any], image: str | None, model_digest: str | None, *,
                      percent: int | None, previous: tuple[str, str] | None) -> dict[str, Any]:
        """Merge patch: the predictor's image, model digest and canaryTrafficPercent (lists are replaced
        whole by a merge patch, so the env list is sent complete)."""
        predictor: dict[str, Any] = {"canaryTrafficPercent": percent}
        model: dict[str, Any] = {}
        if image is not None:
            model["image"] = image
        if model_digest is not None:
            env = [dict(e) for e in (isvc["spec"]["predictor"].get("model") or {}).get("env") or []]
            entry = next((e for e in env if e.get("name") == MODEL_DIGEST_ENV), None)
            if entry is None:
                env.append({"name": MODEL_DIGEST_ENV, "value": model_digest})
            else:
                entry.pop("valueFrom", None)
                entry["value"] = model_digest
            model["env"] = env
            predictor["annotations"] = {MODEL_DIGEST_ANNOTATION: model_digest}
        if model:
            predictor["model"] = model
        patch: dict[str, Any] = {"spec": {"predictor": predictor}}
        annotations: dict[str, str] = {}
        if previous is not None:
            annotations = {PREVIOUS_IMAGE_ANNOTATION: previous[0], PREVIOUS_MODEL_ANNOTATION: previous[1]}
        if self._fence.fence > 0:
            annotations[FENCE_ANNOTATION] = str(self._fence.fence)
        if annotations:
            patch["metadata"] = {"annotations": annotations}
        return patch

    def _set_percent(self, ref: ObjectRef, pct: int | None, result: PromotionResult) -> dict[str, Any]:
        patch = {"spec": {"predictor": {"canaryTrafficPercent": pct}}}
        result.patches.append(patch)
        return self._write(ref, patch)

    # -- watching --------------------------------------------------------------------------------
    def _observe(self, ref: ObjectRef, generation: Any, deadline: float, what: str, reporter: Reporter,
                 events: list[str], done: Callable[[dict[str, Any]], str | None]) -> dict[str, Any]:
        """Poll until `done(isvc)` says "ok" (returns None); raise StepFailed on a failed revision or the
        deadline. `done` returns a reason string while not there yet."""
        last = ""
        while True:
            isvc = self.api.get(ref)
            if (isvc.get("metadata") or {}).get("generation") != generation:
                raise StepFailed(f"spec changed under us (generation {generation} -> "
                                 f"{isvc['metadata'].get('generation')})")
            status = isvc.get("status") or {}
            current = str(status.get("observedGeneration")) == str(generation)
            ready = conditions(isvc).get("Ready") or {}
            line = (f"{what}: Ready={ready.get('status', '?')} traffic: {traffic_line(isvc)}"
                    + (f" ({ready.get('reason')}: {ready.get('message', '')})" if ready.get("reason") else "")
                    if current else f"{what}: waiting for the controller to observe generation {generation}")
            if line != last:
                events.append(line)
                reporter.step(f"kserve: {line}")
                last = line
            if current:
                if ready.get("status") == "False":
                    raise StepFailed(f"{ready.get('reason', 'not ready')}: {ready.get('message', '')}".rstrip(": "))
                if done(isvc) is None:
                    return isvc
            if self.clock() >= deadline:
                raise StepFailed(f"timed out after {deadline - self._started:g} s waiting for {what} ({line})")
            self.sleep(self.poll_s)

    def _wait_step(self, ref: ObjectRef, patched: dict[str, Any], pct: int, timeout_s: float,
                   reporter: Reporter, events: list[str]) -> str:
        generation = patched["metadata"]["generation"]

        def done(isvc: dict[str, Any]) -> str | None:
            p = predictor_status(isvc)
            latest = p.get("latestCreatedRevision")
            if not latest or p.get("latestReadyRevision") != latest:
                return "revision not ready"
            share = next((t.get("percent", 0) for t in p.get("traffic") or []
                          if t.get("revisionName") == latest and t.get("latestRevision")), None)
            return None if share == pct else f"latest revision has {share}%"

        self._started = self.clock()
        isvc = self._observe(ref, generation, self._started + timeout_s, f"canary at {pct}%", reporter, events, done)
        return str(predictor_status(isvc)["latestCreatedRevision"])

    def _wait_rolled_out(self, ref: ObjectRef, patched: dict[str, Any], revision: str | None, timeout_s: float,
                         reporter: Reporter, events: list[str]) -> None:
        generation = patched["metadata"]["generation"]

        def done(isvc: dict[str, Any]) -> str | None:
            p = predictor_status(isvc)
            want = revision or p.get("latestCreatedRevision")
            full = [t for t in p.get("traffic") or [] if t.get("percent", 0) == 100]
            ok = (p.get("latestRolledoutRevision") == want and full and full[0].get("revisionName") == want
                  and conditions(isvc).get("Ready", {}).get("status") == "True")
            return None if ok else "not rolled out"

        self._started = self.clock()
        self._observe(ref, generation, self._started + timeout_s, "rollout to 100%", reporter, events, done)

    def _analyse(self, ref: ObjectRef, revision: str, pct: int, reporter: Reporter, events: list[str]) -> None:
        if self.prometheus is None:
            events.append(f"analysis at {pct}%: no Prometheus configured, readiness only")
            return
        matchers = f'namespace="{ref.namespace}", {REVISION_LABEL}="{revision}"'
        queries = analysis_queries(self.profile, matchers)
        for n in range(self.analysis_checks):
            if n:
                self.sleep(self.analysis_interval_s)
            for q in queries:
                self._check(q, pct, n, reporter, events)

    def _check(self, q: AnalysisQuery, pct: int, n: int, reporter: Reporter, events: list[str]) -> None:
        assert self.prometheus is not None
        bound = self.thresholds.get(q.max_arg, float(q.default_max))
        value = self.prometheus.query(q.query)
        line = f"analysis at {pct}% #{n + 1}: {q.name} = {value} (max {bound:g})"
        events.append(line)
        reporter.step(f"kserve: {line}")
        # No data is not a pass, as in the AnalysisTemplate's failureCondition.
        if value is None or math.isnan(value):
            raise StepFailed(f"analysis {q.name}: no data for the canary revision")
        if value > bound:
            raise StepFailed(f"analysis {q.name} = {value:g} above {bound:g}")

    # -- abort / restore -------------------------------------------------------------------------
    def _restore(self, ref: ObjectRef, image: str | None, model_digest: str | None, reporter: Reporter,
                 events: list[str], patches: list[Any]) -> bool:
        """Traffic to the previous revision now; the spec back to the previous release; roll it out."""
        try:
            zero = {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
            patched = self._write(ref, zero)
            patches.append(zero)
            events.append("abort: canaryTrafficPercent=0 (all traffic to the previously rolled-out revision)")
            isvc = self.api.get(ref)
            if image is None:
                return False
            if release_of(isvc) != (image, model_digest):
                back = self.release_patch(isvc, image, model_digest, percent=0, previous=None)
                patched = self._write(ref, back)
                patches.append(back)
                events.append(f"abort: spec restored to {image}" + (f" (model {model_digest})" if model_digest else ""))

                def ready(isvc: dict[str, Any]) -> str | None:
                    p = predictor_status(isvc)
                    return None if p.get("latestReadyRevision") == p.get("latestCreatedRevision") else "not ready"

                self._started = self.clock()
                self._observe(ref, patched["metadata"]["generation"], self._started + self.restore_timeout_s,
                              "restored revision", reporter, events, ready)
            final = {"spec": {"predictor": {"canaryTrafficPercent": None}}}
            patched = self._write(ref, final)
            patches.append(final)
            self._wait_rolled_out(ref, patched, None, self.restore_timeout_s, reporter, events)
            return True
        except StepFailed as exc:
            events.append(f"restore: {exc}")
            return False

    def restore_plan(self, target: str) -> RestorePlan:
        ref = self.ref(target)
        isvc = self.api.get(ref)
        annotations = (isvc.get("metadata") or {}).get("annotations") or {}
        p = predictor_status(isvc)
        in_flight = (isvc["spec"]["predictor"].get("canaryTrafficPercent") is not None
                     or p.get("latestRolledoutRevision") not in (None, p.get("latestCreatedRevision")))
        return RestorePlan(target=target, in_flight=in_flight, image=annotations.get(PREVIOUS_IMAGE_ANNOTATION) or None,
                           model_digest=annotations.get(PREVIOUS_MODEL_ANNOTATION) or None,
                           reason="" if in_flight else f"{ref} has no canary in flight")

    def abort(self, target: str, *, reporter: Reporter = NULL_REPORTER, fence: Fence = UNFENCED) -> AbortResult:
        self._fence = fence
        ref = self.ref(target)
        plan = self.restore_plan(target)
        previous, previous_model = plan.image, plan.model_digest
        result = AbortResult(backend="kserve", target=target, outcome="aborted", restored_image=previous,
                             restored_model_digest=previous_model)
        if not plan.in_flight:
            result.outcome, result.reason = "noop", plan.reason
            return result
        reporter.step(f"kserve: aborting {ref}" + (f", restoring {previous}" if previous else ""))
        result.restored = self._restore(ref, previous, previous_model, reporter, result.events, [])
        result.reason = ("restored" if result.restored else
                         "traffic is on the previous revision; no previous release recorded to restore the spec"
                         if previous is None else "traffic is on the previous revision; the restore did not finish")
        return result

    def status(self, target: str) -> TargetStatus:
        ref = self.ref(target)
        isvc = self.api.get(ref)
        image, model_digest = release_of(isvc)
        p = predictor_status(isvc)
        ready = conditions(isvc).get("Ready") or {}
        pct = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        return TargetStatus(
            backend="kserve", target=target, image=image, model_digest=model_digest,
            phase=f"Ready={ready.get('status', 'Unknown')}",
            in_flight=pct is not None or p.get("latestRolledoutRevision") not in (None, p.get("latestCreatedRevision")),
            message=f"traffic: {traffic_line(isvc)}" + (f"; {ready.get('message')}" if ready.get("message") else ""),
            revision=p.get("latestRolledoutRevision") or p.get("latestReadyRevision"),
            observed={"canaryTrafficPercent": pct, "latestCreatedRevision": p.get("latestCreatedRevision"),
                     "latestReadyRevision": p.get("latestReadyRevision"),
                     "previousRolledoutRevision": p.get("previousRolledoutRevision"),
                     "traffic": p.get("traffic") or []},
        )
