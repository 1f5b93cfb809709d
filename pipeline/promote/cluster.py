"""In-cluster promotion of an Argo Rollouts canary with the official `kubernetes` client.

The image change is one JSON patch guarded by a `test` op on the container name, so a Rollout whose
containers were reordered or renamed since we read it is refused by the API server instead of
getting the wrong container patched. The watch trusts `status.phase` only once the controller has
observed our generation (`status.observedGeneration == metadata.generation`): before that the phase
describes the previous spec, and a stale "Healthy" would pass a canary nobody looked at. A failed
analysis, a degraded or aborted rollout, or no verdict before the deadline aborts the rollout through
the status subresource (`status.abort: true`, what `kubectl argo rollouts abort` does) and restores the
stable image in the spec, so the controller does not retry the rejected digest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from pipeline.errors import BadInput, InfraError
from pipeline.progress import NullReporter, Reporter

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"
JSON_PATCH = "application/json-patch+json"
FAILED_ANALYSIS = {"Failed", "Error"}


@dataclass
class RolloutRef:
    namespace: str
    name: str = "llmgate-server"
    container: str = "server"

    def __str__(self) -> str:
        return f"Rollout {self.namespace}/{self.name} container {self.container}"


@dataclass
class ClusterResult:
    outcome: str  # "promoted" | "aborted" | "noop" | "dry-run"
    previous_image: str
    image: str
    patch: list[dict[str, Any]]
    reason: str = ""
    events: list[str] = field(default_factory=list)
    restored: bool = False


def api_client(kubeconfig: Path | str | None = None, context: str | None = None) -> client.ApiClient:
    """A client from a kubeconfig file, or the in-cluster service account when none is given."""
    try:
        if kubeconfig is not None:
            return config.new_client_from_config(config_file=str(kubeconfig), context=context,
                                                 persist_config=False)
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException as exc:
        raise BadInput(f"cannot load Kubernetes configuration: {exc}", where=str(kubeconfig or "in-cluster")) from exc
    except FileNotFoundError as exc:
        raise BadInput("kubeconfig not found", where=str(kubeconfig)) from exc


class RolloutClient:
    """The few Rollout operations promotion needs, with errors named by endpoint."""

    def __init__(self, api: client.ApiClient, ref: RolloutRef) -> None:
        self.api = client.CustomObjectsApi(api)
        self.ref = ref
        self.where = f"{api.configuration.host}/apis/{GROUP}/{VERSION}/namespaces/{ref.namespace}/{PLURAL}/{ref.name}"

    def _call(self, fn: Callable[..., Any], **kw: Any) -> dict[str, Any]:
        try:
            return fn(group=GROUP, version=VERSION, namespace=self.ref.namespace, plural=PLURAL, name=self.ref.name,
                      _request_timeout=30, **kw)
        except ApiException as exc:
            if exc.status == 404:
                raise BadInput(f"no such Rollout ({exc.reason})", where=self.where) from exc
            if exc.status == 422:
                raise BadInput(f"patch refused: {_api_message(exc)}", where=self.where) from exc
            if exc.status in (401, 403):
                raise InfraError(f"not allowed: {_api_message(exc)}", where=self.where) from exc
            raise InfraError(f"API error {exc.status}: {_api_message(exc)}", where=self.where) from exc
        except Urllib3Error as exc:
            raise InfraError(f"Kubernetes API unreachable: {exc}", where=self.where) from exc

    def get(self) -> dict[str, Any]:
        return self._call(self.api.get_namespaced_custom_object)

    def json_patch(self, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call(self.api.patch_namespaced_custom_object, body=ops, _content_type=JSON_PATCH)

    def abort(self) -> dict[str, Any]:
        return self._call(self.api.patch_namespaced_custom_object_status, body={"status": {"abort": True}})


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


def promote_cluster(
    api: client.ApiClient,
    ref: RolloutRef,
    image: str,
    *,
    timeout_s: float = 3600,
    poll_s: float = 5,
    restore_timeout_s: float = 300,
    dry_run: bool = False,
    reporter: Reporter = NullReporter(),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ClusterResult:
    rc = RolloutClient(api, ref)
    rollout = rc.get()
    index, previous = container_index(rollout, ref.container, rc.where)
    patch = image_patch(index, ref.container, image)
    obs = observe(rollout)
    if previous == image and obs.current and obs.phase == "Healthy":
        return ClusterResult("noop", previous, image, [], reason=f"{ref} already runs {image} (Healthy)")
    if dry_run:
        return ClusterResult("dry-run", previous, image, patch)
    if previous == image:
        reason = f"{ref} already has {image} but is {obs.phase or 'not observed'}; watching it"
        reporter.step(reason)
        generation = (rollout.get("metadata") or {}).get("generation")
    else:
        reporter.step(f"cluster: patching {ref}: {previous} -> {image}")
        patched = rc.json_patch(patch)
        generation = (patched.get("metadata") or {}).get("generation")
    result = ClusterResult("promoted", previous, image, patch)
    verdict = _watch(rc, generation, timeout_s, poll_s, reporter, result, clock, sleep)
    if verdict is None:
        return result
    # Failed analysis, degraded, or timed out: abort, then put the stable image back in the spec.
    result.outcome, result.reason = "aborted", verdict
    reporter.step(f"cluster: aborting {ref}: {verdict}")
    rc.abort()
    result.events.append("abort requested (status.abort=true)")
    if previous != image:
        current = rc.get()
        idx, _ = container_index(current, ref.container, rc.where)
        restored = rc.json_patch(image_patch(idx, ref.container, previous))
        result.events.append(f"spec image restored to stable {previous}")
        result.restored = _watch(rc, (restored.get("metadata") or {}).get("generation"), restore_timeout_s, poll_s,
                                 reporter, ClusterResult("restore", image, previous, []), clock, sleep) is None
    return result


def _watch(
    rc: RolloutClient,
    generation: Any,
    timeout_s: float,
    poll_s: float,
    reporter: Reporter,
    result: ClusterResult,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str | None:
    """None once the rollout is fully promoted and healthy; else why it failed."""
    deadline = clock() + timeout_s
    last = ""
    while True:
        rollout = rc.get()
        if (rollout.get("metadata") or {}).get("generation") != generation:
            # Someone else changed the spec meanwhile: what we watch is no longer our promotion.
            return f"spec changed under us (generation {generation} -> {rollout['metadata'].get('generation')})"
        obs = observe(rollout)
        line = obs.line() if obs.current else f"waiting for the controller to observe generation {generation}"
        if line != last:
            result.events.append(line)
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
        if clock() >= deadline:
            return f"timed out after {timeout_s:g} s ({line})"
        sleep(poll_s)


def _api_message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)
