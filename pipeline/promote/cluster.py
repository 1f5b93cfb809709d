"""Promotion backend "argo-rollouts": an Argo Rollouts canary in the cluster, through the Kubernetes API.

The release change is one JSON patch guarded by `test` ops on the container's name (and on the env
entry it rewrites), so a Rollout whose containers were reordered or renamed since we read it is refused
by the API server (422) instead of getting the wrong container patched. It sets the image by digest and
the model digest (pod-template annotation `llmgate.dev/model-digest` and env `LLMGATE_MODEL_DIGEST` on
the server container), and records what served before in the Rollout's own annotations, so `abort`
can restore it later from any machine. Each spec patch also carries the promotion fence
(`llmgate.dev/promotion-fence`): a `test` op on the value read before makes the API server refuse the
patch when a later promoter wrote the object meanwhile, and a fence newer than ours stops us before any
write.

The watch trusts `status.phase` only once the controller has observed our generation
(`status.observedGeneration == metadata.generation`): before that the phase describes the previous
spec, and a stale "Healthy" would pass a canary nobody looked at. A failed analysis, a degraded or
aborted rollout, or no verdict before the deadline aborts the rollout through the status subresource
(`status.abort: true`, what `kubectl argo rollouts abort` does) and restores the previous release in the
spec, so the controller does not retry the rejected one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.adapters.kube_api import KubeApi, ObjectRef
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

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"
FAILED_ANALYSIS = {"Failed", "Error"}


@dataclass
class RolloutRef:
    namespace: str
    name: str = "llmgate-server"
    container: str = "server"

    def obj(self) -> ObjectRef:
        return ObjectRef(GROUP, VERSION, PLURAL, "Rollout", self.namespace, self.name)

    def __str__(self) -> str:
        return f"Rollout {self.namespace}/{self.name} container {self.container}"


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def container_index(rollout: dict[str, Any], container: str, where: str) -> tuple[int, str]:
    containers = (((rollout.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    for i, c in enumerate(containers):
        if c.get("name") == container:
            return i, str(c.get("image", ""))
    names = ", ".join(str(c.get("name")) for c in containers) or "none"
    raise BadInput(f"no container {container!r} in spec.template.spec.containers (has: {names})", where=where)


def image_patch(index: int, container: str, image: str) -> list[dict[str, Any]]:
    base = f"/spec/template/spec/containers/{index}"
    return [{"op": "test", "path": f"{base}/name", "value": container},
            {"op": "replace", "path": f"{base}/image", "value": image}]


def model_digest_of(rollout: dict[str, Any], container: str) -> str | None:
    template = (rollout.get("spec") or {}).get("template") or {}
    annotated = ((template.get("metadata") or {}).get("annotations") or {}).get(MODEL_DIGEST_ANNOTATION)
    if annotated:
        return str(annotated)
    for c in (template.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            for e in c.get("env") or []:
                if e.get("name") == MODEL_DIGEST_ENV:
                    return str(e.get("value")) if e.get("value") else None
    return None


def release_patch(rollout: dict[str, Any], ref: RolloutRef, image: str, model_digest: str | None, *,
                  previous: tuple[str, str | None] | None) -> list[dict[str, Any]]:
    """The JSON patch that makes `rollout` run (image, model_digest); `previous` is recorded for abort."""
    index, _ = container_index(rollout, ref.container, str(ref))
    ops = image_patch(index, ref.container, image)
    template = (rollout.get("spec") or {}).get("template") or {}
    if model_digest is not None:
        base = f"/spec/template/spec/containers/{index}"
        env = next(c for c in template["spec"]["containers"] if c.get("name") == ref.container).get("env")
        at = next((i for i, e in enumerate(env or []) if e.get("name") == MODEL_DIGEST_ENV), None)
        if at is not None:
            ops += [{"op": "test", "path": f"{base}/env/{at}/name", "value": MODEL_DIGEST_ENV},
                    {"op": "replace", "path": f"{base}/env/{at}/value", "value": model_digest}]
        elif env is not None:
            ops.append({"op": "add", "path": f"{base}/env/-", "value": {"name": MODEL_DIGEST_ENV, "value": model_digest}})
        else:
            ops.append({"op": "add", "path": f"{base}/env", "value": [{"name": MODEL_DIGEST_ENV, "value": model_digest}]})
        if (template.get("metadata") or {}).get("annotations") is None:
            if template.get("metadata") is None:
                ops.append({"op": "add", "path": "/spec/template/metadata", "value": {}})
            ops.append({"op": "add", "path": "/spec/template/metadata/annotations", "value": {}})
        ops.append({"op": "add", "path": f"/spec/template/metadata/annotations/{_escape(MODEL_DIGEST_ANNOTATION)}",
                    "value": model_digest})
    if previous is not None:
        if (rollout.get("metadata") or {}).get("annotations") is None:
            ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
        ops.append({"op": "add", "path": f"/metadata/annotations/{_escape(PREVIOUS_IMAGE_ANNOTATION)}",
                    "value": previous[0]})
        ops.append({"op": "add", "path": f"/metadata/annotations/{_escape(PREVIOUS_MODEL_ANNOTATION)}",
                    "value": previous[1] or ""})
    return ops


def fenced(obj: dict[str, Any], ops: list[dict[str, Any]], fence: Fence) -> list[dict[str, Any]]:
    """`ops` plus the fence: the value read before is tested (compare-and-set), then ours written."""
    if fence.fence <= 0:
        return ops
    path = f"/metadata/annotations/{_escape(FENCE_ANNOTATION)}"
    value = str(fence.fence)
    if any(op.get("path") == "/metadata/annotations" for op in ops):
        return [*ops, {"op": "add", "path": path, "value": value}]
    annotations = (obj.get("metadata") or {}).get("annotations")
    if annotations is None:
        return [*ops, {"op": "add", "path": "/metadata/annotations", "value": {FENCE_ANNOTATION: value}}]
    current = annotations.get(FENCE_ANNOTATION)
    if current is None:
        return [*ops, {"op": "add", "path": path, "value": value}]
    return [{"op": "test", "path": path, "value": current}, *ops, {"op": "replace", "path": path, "value": value}]


@dataclass
class Observation:
    """What one read of the Rollout tells, once the controller has caught up with our generation."""

    current: bool  # status.observedGeneration == metadata.generation
    phase: str
    step: Any
    steps: int
    weight: Any
    pauses: list[str]
    analysis: str
    aborted: bool
    message: str
    promoted: bool  # the new ReplicaSet became the stable one

    def line(self) -> str:
        text = f"phase={self.phase} step={self.step}/{self.steps} canary weight={self.weight}"
        if self.pauses:
            text += f" paused({', '.join(self.pauses)})"
        if self.analysis:
            text += f" analysis={self.analysis}"
        if self.message:
            text += f" message={self.message!r}"
        return text


def observe(rollout: dict[str, Any]) -> Observation:
    meta, spec, status = rollout.get("metadata") or {}, rollout.get("spec") or {}, rollout.get("status") or {}
    canary = status.get("canary") or {}
    run = canary.get("currentStepAnalysisRunStatus") or {}
    weights = canary.get("weights") or {}
    steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
    observed = status.get("observedGeneration")
    # Argo Rollouts writes observedGeneration as a string; compare as text.
    current = observed is not None and str(observed) == str(meta.get("generation"))
    return Observation(
        current=current,
        phase=str(status.get("phase", "")),
        step=status.get("currentStepIndex"),
        steps=len(steps),
        weight=(weights.get("canary") or {}).get("weight"),
        pauses=[str(p.get("reason")) for p in status.get("pauseConditions") or []],
        analysis=f"{run.get('name', '')}:{run.get('status', '')}" if run else "",
        aborted=bool(status.get("abort")),
        message=str(status.get("message", "")),
        promoted=bool(status.get("stableRS")) and status.get("stableRS") == status.get("currentPodHash"),
    )


@dataclass
class ArgoRolloutsBackend:
    """`Backend` for Argo Rollouts. `namespaces` maps targets to their configured namespaces."""

    api: KubeApi
    rollout: str = "llmgate-server"
    container: str = "server"
    namespaces: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 3600
    poll_s: float = 5
    restore_timeout_s: float = 300
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    name: str = "argo-rollouts"

    def ref(self, target: str) -> RolloutRef:
        return RolloutRef(namespace_for(target, self.namespaces), self.rollout, self.container)

    # -- promote ---------------------------------------------------------------------------------
    def promote(self, target: str, image: str, model_digest: str | None, evidence: Evidence, *,
                dry_run: bool = False, reporter: Reporter = NULL_REPORTER, fence: Fence = UNFENCED) -> PromotionResult:
        ref = self.ref(target)
        obj = ref.obj()
        rollout = self.api.get(obj)
        _, previous = container_index(rollout, ref.container, str(ref))
        previous_model = model_digest_of(rollout, ref.container)
        result = PromotionResult(backend="argo-rollouts", target=target, outcome="promoted", image=image,
                                 model_digest=model_digest, previous_image=previous,
                                 previous_model_digest=previous_model)
        obs = observe(rollout)
        same = previous == image and (model_digest is None or previous_model == model_digest)
        if same and obs.current and obs.phase == "Healthy":
            result.outcome, result.reason = "noop", f"{ref} already runs {image} (Healthy)"
            return result
        patch = fenced(rollout, release_patch(rollout, ref, image, model_digest, previous=(previous, previous_model)),
                       fence)
        result.patches = [patch]
        if dry_run:
            result.outcome = "dry-run"
            return result
        if same:
            reporter.step(f"cluster: {ref} already has {image} but is {obs.phase or 'not observed'}; watching it")
            generation = (rollout.get("metadata") or {}).get("generation")
            result.patches = []
        else:
            check_object_fence(rollout, fence, str(ref))
            reporter.step(f"cluster: patching {ref}: {previous} -> {image}")
            patched = self.api.patch(obj, patch, patch_type="json")
            generation = (patched.get("metadata") or {}).get("generation")
        verdict = self._watch(obj, generation, self.timeout_s, reporter, result.events)
        if verdict is None:
            return result
        # Failed analysis, degraded, or timed out: abort, then put the previous release back in the spec.
        result.outcome, result.reason = "aborted", verdict
        reporter.step(f"cluster: aborting {ref}: {verdict}")
        result.restored = self._abort_and_restore(ref, previous, previous_model, reporter, result.events,
                                                  result.patches, fence)
        if not result.restored:
            result.reason += "; the previous release was written back but the rollout was not Healthy in time"
        return result

    def _abort_and_restore(self, ref: RolloutRef, image: str, model_digest: str | None, reporter: Reporter,
                           events: list[str], patches: list[Any], fence: Fence) -> bool:
        obj = ref.obj()
        if fence.fence > 0:
            check_object_fence(self.api.get(obj), fence, str(ref))
        self.api.patch_status(obj, {"status": {"abort": True}})
        patches.append({"status": {"abort": True}})
        events.append("abort requested (status.abort=true)")
        current = self.api.get(obj)
        _, running = container_index(current, ref.container, str(ref))
        if running == image and (model_digest is None or model_digest_of(current, ref.container) == model_digest):
            return self._watch(obj, (current.get("metadata") or {}).get("generation"), self.restore_timeout_s,
                               reporter, events) is None
        ops = fenced(current, release_patch(current, ref, image, model_digest, previous=None), fence)
        check_object_fence(current, fence, str(ref))
        restored = self.api.patch(obj, ops, patch_type="json")
        patches.append(ops)
        events.append(f"spec restored to the previous release {image}"
                      + (f" (model {model_digest})" if model_digest else ""))
        return self._watch(obj, (restored.get("metadata") or {}).get("generation"), self.restore_timeout_s,
                           reporter, events) is None

    def _watch(self, obj: ObjectRef, generation: Any, timeout_s: float, reporter: Reporter,
               events: list[str]) -> str | None:
        """None once the rollout is fully promoted and healthy; else why it failed."""
        deadline = self.clock() + timeout_s
        last = ""
        while True:
            rollout = self.api.get(obj)
            if (rollout.get("metadata") or {}).get("generation") != generation:
                # Someone else changed the spec meanwhile: what we watch is no longer our promotion.
                return f"spec changed under us (generation {generation} -> {rollout['metadata'].get('generation')})"
            obs = observe(rollout)
            line = obs.line() if obs.current else f"waiting for the controller to observe generation {generation}"
            if line != last:
                events.append(line)
                reporter.step(f"cluster: {line}")
                last = line
            if obs.current:
                if obs.aborted:
                    return f"rollout aborted: {obs.message or 'status.abort is set'}"
                if obs.analysis.rpartition(":")[2] in FAILED_ANALYSIS:
                    return f"analysis {obs.analysis} ({obs.message or 'canary metrics out of bounds'})"
                if obs.phase == "Degraded":
                    return f"rollout degraded: {obs.message or 'no message'}"
                if obs.phase == "Healthy" and obs.promoted:
                    return None
            if self.clock() >= deadline:
                return f"timed out after {timeout_s:g} s ({line})"
            self.sleep(self.poll_s)

    # -- abort / status --------------------------------------------------------------------------
    def restore_plan(self, target: str) -> RestorePlan:
        ref = self.ref(target)
        rollout = self.api.get(ref.obj())
        obs = observe(rollout)
        annotations = (rollout.get("metadata") or {}).get("annotations") or {}
        in_flight = not (obs.current and obs.phase == "Healthy" and obs.promoted)
        return RestorePlan(target=target, in_flight=in_flight, image=annotations.get(PREVIOUS_IMAGE_ANNOTATION) or None,
                           model_digest=annotations.get(PREVIOUS_MODEL_ANNOTATION) or None,
                           reason="" if in_flight else f"{ref} has no canary in flight (Healthy, fully promoted)")

    def abort(self, target: str, *, reporter: Reporter = NULL_REPORTER, fence: Fence = UNFENCED) -> AbortResult:
        ref = self.ref(target)
        plan = self.restore_plan(target)
        previous, previous_model = plan.image, plan.model_digest
        result = AbortResult(backend="argo-rollouts", target=target, outcome="aborted",
                             restored_image=previous, restored_model_digest=previous_model)
        if not plan.in_flight:
            result.outcome, result.reason = "noop", plan.reason
            return result
        if not previous:
            # Not promoted by llmgate: abort only; the controller keeps the stable ReplicaSet serving.
            if fence.fence > 0:
                check_object_fence(self.api.get(ref.obj()), fence, str(ref))
            self.api.patch_status(ref.obj(), {"status": {"abort": True}})
            result.events.append("abort requested (status.abort=true); no previous release recorded to restore")
            result.reason = "aborted; the stable ReplicaSet keeps serving, the spec still names the canary"
            return result
        reporter.step(f"cluster: aborting {ref}, restoring {previous}")
        result.restored = self._abort_and_restore(ref, previous, previous_model, reporter, result.events, [], fence)
        result.reason = "restored" if result.restored else "the previous release was written back but is not Healthy yet"
        return result

    def status(self, target: str) -> TargetStatus:
        ref = self.ref(target)
        rollout = self.api.get(ref.obj())
        _, image = container_index(rollout, ref.container, str(ref))
        obs = observe(rollout)
        status = rollout.get("status") or {}
        return TargetStatus(
            backend="argo-rollouts", target=target, image=image, model_digest=model_digest_of(rollout, ref.container),
            phase=obs.phase if obs.current else f"{obs.phase} (generation not yet observed)",
            in_flight=not (obs.current and obs.phase == "Healthy" and obs.promoted),
            message=obs.line(), revision=str(status.get("currentPodHash") or "") or None,
            observed={"stableRS": status.get("stableRS"), "currentPodHash": status.get("currentPodHash"),
                     "step": obs.step, "steps": obs.steps, "canaryWeight": obs.weight, "aborted": obs.aborted},
        )


__all__ = ["ArgoRolloutsBackend", "Observation", "RolloutRef", "container_index", "image_patch", "model_digest_of",
           "observe", "release_patch"]
