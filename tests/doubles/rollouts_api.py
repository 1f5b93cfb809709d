"""TEST DOUBLE "Kubernetes API": a fake API server for Argo Rollouts Rollouts, KServe InferenceServices
and Argo CD Applications, with scripted controllers.

It is not Kubernetes, Argo Rollouts, KServe, Knative or Argo CD. None of them can run on this machine,
so the promotion backends are tested against this in-process HTTP server (127.0.0.1, port 0) while the
code under test uses the official `kubernetes` client configured from a kubeconfig that points here.

What it serves, and the documents its behaviour follows:

- `GET`, `PUT`, `PATCH` on `/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}` and, where the CRD
  enables the status subresource, on `.../{name}/status` (Kubernetes API concepts, "Resource
  operations"; "Subresources" in the CustomResourceDefinition docs):
  - with the status subresource enabled (Rollout, InferenceService), a write to the main resource
    ignores `status`, and a write to `/status` changes only `status`; `metadata.generation` counts spec
    changes only. Argo CD's Application CRD enables no status subresource: `.../status` is a 404 and the
    controller writes status through the main resource, where a status change also bumps generation
    (the CRD docs: without the subresource, generation changes on any change but metadata);
  - every write bumps `metadata.resourceVersion`; a `PUT` carrying a stale resourceVersion is `409
    Conflict` ("the object has been modified; please apply your changes to the latest version and
    try again"), as optimistic concurrency in the API conventions describes;
  - `PATCH` takes `application/json-patch+json` (RFC 6902; a failed `test` op or a missing path is `422`,
    what the API server's patch handler returns for a JSON patch that does not apply) and
    `application/merge-patch+json` (RFC 7386); any other content type is `415`;
  - the result is checked against the vendored CRD schema (pipeline/data): unknown fields are pruned,
    as the API server does for structural schemas, and a type error is `422 Invalid`;
  - a missing object is `404 NotFound` with the `Status` body the API server sends
    (`{"kind":"Status","reason":"NotFound","message":"<plural>.<group> \\"name\\" not found",...}`).
- Controllers advance one status frame per GET after a change, so time advances with the caller's
  polls (deterministic, no sleeps):
  - Rollout (Argo Rollouts docs, "Canary" and "Analysis"): scenarios `healthy`, `failing-analysis`,
    `stuck`; `status.abort: true` makes it Degraded/RolloutAborted; a later spec change back to the
    stable release plays a quick return to Healthy.
  - InferenceService (KServe docs, "Canary rollout"; Knative Serving revisions): a predictor change
    creates revision `<name>-predictor-<n>`; until it is ready, all traffic stays on the previously
    rolled-out revision; once ready, it gets `canaryTrafficPercent` percent (tag `latest`) and the
    previous rolled-out revision the rest (tag `prev`); without canaryTrafficPercent (or at 100) the
    latest ready revision takes all traffic and becomes the rolled-out one; `canaryTrafficPercent: 0`
    sends everything back to the previous one. Conditions: `PredictorReady`, `IngressReady`,
    `LatestDeploymentReady`, `Ready`. Scenarios `healthy`, `failing-revision` (the new revision never
    becomes ready: Ready False, reason RevisionFailed), `stuck` (Unknown forever).
  - Application (Argo CD docs, "Automated sync policy", "Application health", refresh annotation
    `argocd.argoproj.io/refresh`): the controller reads the tracked branch head from a callable (tests
    pass the real bare repository); on a refresh request (the annotation, removed once handled) or
    after `poll_every` reads it notices a new head: OutOfSync, then a sync operation Running, then
    Synced at that revision with health Progressing, then Healthy. Scenarios `healthy`, `degraded`
    (synced, health Degraded), `sync-failed` (operationState Failed), `manual` (no automated sync:
    OutOfSync forever); a list plays one scenario per new head.

Every request is recorded in `requests` as (method, path, content type, body).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import jsonschema
import yaml

PATH = re.compile(r"^/apis/([^/]+)/([^/]+)/namespaces/([^/]+)/([^/]+)/([^/?]+)(/status)?(?:\?.*)?$")

# plural -> (group, kind, vendored CRD, status subresource enabled)
RESOURCES = {
    "rollouts": ("argoproj.io", "Rollout", "crd-rollouts.argoproj.io.yaml", True),
    "inferenceservices": ("serving.kserve.io", "InferenceService", "crd-inferenceservices.serving.kserve.io.yaml",
                          True),
    "applications": ("argoproj.io", "Application", "crd-applications.argoproj.io.yaml", False),
}
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"


@lru_cache(maxsize=8)
def _crd_schema(filename: str) -> dict[str, Any]:
    crd = yaml.safe_load(resources.files("pipeline.data").joinpath(filename).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _prune(schema: Any, data: Any) -> None:
    """Drop fields the structural schema does not know, as the API server does for custom resources
    (fields under x-kubernetes-preserve-unknown-fields are kept)."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(data, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in list(data):
            if props is not None and key in props:
                _prune(props[key], data[key])
            elif isinstance(extra, dict):
                _prune(extra, data[key])
            elif props is not None and key not in ("apiVersion", "kind", "metadata"):
                del data[key]
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for item in data:
            _prune(schema["items"], item)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


# -- JSON patch / merge patch --------------------------------------------------------------------------
def apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 (test/replace/add/remove); ValueError when a `test` fails or a path is missing."""
    doc = copy.deepcopy(doc)
    for op in copy.deepcopy(ops):
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent: Any = doc
        try:
            for p in parts[:-1]:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"doc is missing path: {op['path']}") from exc
        last = parts[-1]
        key: Any = int(last) if isinstance(parent, list) and last != "-" else last
        if op["op"] == "test":
            try:
                current = parent[key]
            except (KeyError, IndexError) as exc:
                raise ValueError(f"test failed: {op['path']} does not exist") from exc
            if current != op["value"]:
                raise ValueError(f"testing value {op['path']} failed: test failed")
        elif op["op"] == "replace":
            try:
                parent[key]
            except (KeyError, IndexError) as exc:
                raise ValueError(f"replace operation does not apply: doc is missing key: {op['path']}") from exc
            parent[key] = op["value"]
        elif op["op"] == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else key, op["value"])
            else:
                parent[key] = op["value"]
        elif op["op"] == "remove":
            try:
                del parent[key]
            except (KeyError, IndexError) as exc:
                raise ValueError(f"remove operation does not apply: doc is missing path: {op['path']}") from exc
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# -- objects --------------------------------------------------------------------------------------
def make_rollout(namespace: str, name: str, image: str, container: str = "server",
                 model_digest: str | None = None) -> dict[str, Any]:
    h = _hash(image)
    server: dict[str, Any] = {"name": container, "image": image}
    if model_digest:
        server["env"] = [{"name": "LLMGATE_MODEL_DIGEST", "value": model_digest}]
    template: dict[str, Any] = {"spec": {"containers": [
        {"name": "sidecar", "image": "busybox@sha256:" + "1" * 64}, server]}}
    if model_digest:
        template["metadata"] = {"annotations": {"llmgate.dev/model-digest": model_digest}}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": namespace, "generation": 1, "resourceVersion": "1"},
        "spec": {
            "replicas": 2,
            "strategy": {"canary": {"steps": [
                {"setWeight": 25}, {"pause": {"duration": "5m"}}, {"analysis": {"templates": [{"templateName": "slo"}]}},
                {"setWeight": 50}, {"analysis": {"templates": [{"templateName": "slo"}]}},
            ]}},
            "template": template,
        },
        "status": {"observedGeneration": "1", "phase": "Healthy", "currentStepIndex": 5, "stableRS": h,
                   "currentPodHash": h, "canary": {"weights": {"canary": {"weight": 0}, "stable": {"weight": 100}}}},
    }


def make_inferenceservice(namespace: str, name: str, image: str, model_digest: str) -> dict[str, Any]:
    rev = f"{name}-predictor-00001"
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "generation": 1, "resourceVersion": "1",
                     "annotations": {"serving.kserve.io/deploymentMode": "Serverless"}},
        "spec": {"predictor": {
            "minReplicas": 1,
            "annotations": {"llmgate.dev/model-digest": model_digest},
            "model": {"modelFormat": {"name": "llmgate"}, "runtime": "llmgate-server",
                      "storageUri": "pvc://llmgate-model-weights/", "image": image,
                      "env": [{"name": "LLMGATE_MODEL_DIGEST", "value": model_digest}]},
        }},
        "status": _isvc_status(1, rev, rev, None, [{"revisionName": rev, "percent": 100, "latestRevision": True}],
                               "True", name, namespace),
    }


def _condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    c = {"type": kind, "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def _isvc_status(observed: int, latest_created: str, latest_ready: str | None, previous: str | None,
                 traffic: list[dict[str, Any]], ready: str, name: str, namespace: str, *, reason: str = "",
                 message: str = "", rolled_out: str | None = None) -> dict[str, Any]:
    url = f"http://{name}.{namespace}.example.com"
    predictor: dict[str, Any] = {"latestCreatedRevision": latest_created, "traffic": traffic, "url": url}
    if latest_ready:
        predictor["latestReadyRevision"] = latest_ready
    if rolled_out:
        predictor["latestRolledoutRevision"] = rolled_out
    if previous:
        predictor["previousRolledoutRevision"] = previous
    deploy_ready = "True" if latest_ready == latest_created else ready
    return {
        "observedGeneration": observed,
        "url": url,
        "components": {"predictor": predictor},
        "conditions": [_condition("IngressReady", "True"),
                       _condition("LatestDeploymentReady", deploy_ready, reason, message),
                       _condition("PredictorReady", ready, reason, message),
                       _condition("Ready", ready, reason, message)],
    }


def make_application(namespace: str, name: str, path: str, revision: str, repo_url: str = "file:///gitops.git",
                     target_revision: str = "main") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": namespace, "generation": 1, "resourceVersion": "1"},
        "spec": {"project": "default",
                 "source": {"repoURL": repo_url, "targetRevision": target_revision, "path": path},
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": "llmgate-canary"},
                 "syncPolicy": {"automated": {"prune": True, "selfHeal": True}}},
        "status": _app_status(revision, "Synced", "Healthy", "Succeeded", "successfully synced"),
    }


def _app_status(revision: str, sync: str, health: str, phase: str | None, message: str = "",
                *, synced_revision: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"sync": {"status": sync, "revision": revision},
                              "health": {"status": health},
                              "reconciledAt": "2026-01-01T00:00:00Z"}
    if health == "Degraded":
        status["health"]["message"] = message
    if phase:
        status["operationState"] = {"phase": phase, "message": message,
                                    "syncResult": {"revision": synced_revision or revision},
                                    "startedAt": "2026-01-01T00:00:00Z"}
    return status


# -- controllers ----------------------------------------------------------------------------------
def _rollout_frames(scenario: str, old: str, new: str, gen: str, stale_gen: str) -> list[dict[str, Any]]:
    def st(phase: str, step: int, weight: int, *, observed: str = gen, pause: bool = False, analysis: str = "",
           stable: str = old, message: str = "") -> dict[str, Any]:
        s: dict[str, Any] = {"observedGeneration": observed, "phase": phase, "currentStepIndex": step,
                             "stableRS": stable, "currentPodHash": new,
                             "canary": {"weights": {"canary": {"weight": weight}, "stable": {"weight": 100 - weight}}}}
        if pause:
            s["pauseConditions"] = [{"reason": "CanaryPauseStep", "startTime": "2025-01-01T00:00:00Z"}]
        if analysis:
            s["canary"]["currentStepAnalysisRunStatus"] = {"name": f"llmgate-{new}-{step}", "status": analysis}
        if message:
            s["message"] = message
        return s

    # The previous spec's status, still Healthy: a watcher that ignores observedGeneration stops here.
    stale = st("Healthy", 5, 0, observed=stale_gen, stable=old)
    stale["currentPodHash"] = old
    if scenario == "restore":
        return [st("Progressing", 5, 0, stable=old), {**st("Healthy", 5, 0, stable=new)}]
    head = [stale, stale, st("Progressing", 0, 0), st("Progressing", 1, 25), st("Paused", 1, 25, pause=True),
            st("Progressing", 2, 25, analysis="Running")]
    if scenario == "stuck":
        return [stale, st("Progressing", 0, 0)]  # the last frame repeats forever
    if scenario == "failing-analysis":
        return [*head, st("Progressing", 2, 25, analysis="Running"),
                st("Degraded", 2, 25, analysis="Failed", message="Metric \"ttft-p99\" assessed Failed")]
    if scenario == "healthy":
        return [*head, st("Progressing", 3, 25, analysis="Successful"), st("Progressing", 3, 50),
                st("Progressing", 4, 50, analysis="Running"), st("Progressing", 5, 50, analysis="Successful"),
                st("Progressing", 5, 100), st("Healthy", 5, 100, stable=new)]
    raise ValueError(f"unknown scenario {scenario!r}")


class FakeKubeAPI:
    """The double. `scenario` per resource plural: {"rollouts": "healthy", "inferenceservices": ...}."""

    def __init__(self, scenario: str | dict[str, Any] = "healthy", *,
                 branch_head: Callable[[], str] | None = None, poll_every: int = 3) -> None:
        scenarios = scenario if isinstance(scenario, dict) else {"rollouts": scenario}
        self.scenarios = {"rollouts": "healthy", "inferenceservices": "healthy", "applications": "healthy",
                          **scenarios}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, ns, name)
        self.frames: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, str, Any]] = []
        self.branch_head = branch_head
        self.poll_every = poll_every
        self._app_reads: dict[tuple[str, str, str], int] = {}
        # KServe: each revision's predictor template, and the revisions that failed to become ready
        self.revision_templates: dict[str, Any] = {}
        self.failed_revisions: set[str] = set()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, obj: dict[str, Any]) -> None:
        plural = next(p for p, (_, kind, _, _) in RESOURCES.items() if kind == obj["kind"])
        m = obj["metadata"]
        self.objects[(plural, m["namespace"], m["name"])] = obj

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return self.objects[(plural, namespace, name)]

    def image(self, namespace: str, name: str, container: str = "server") -> str:
        cs = self.objects[("rollouts", namespace, name)]["spec"]["template"]["spec"]["containers"]
        return next(c["image"] for c in cs if c["name"] == container)

    @property
    def rollouts(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(ns, n): o for (p, ns, n), o in self.objects.items() if p == "rollouts"}

    def __enter__(self) -> FakeKubeAPI:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "users": [{"name": "fake", "user": {"token": "fake-token-for-the-test-double"}}]}

    # -- controller hooks ----------------------------------------------------------------------
    def _changed(self, key: tuple[str, str, str], before: dict[str, Any], after: dict[str, Any]) -> None:
        plural = key[0]
        if plural == "rollouts":
            self._rollout_changed(key, before, after)
        elif plural == "inferenceservices":
            self._isvc_changed(key, before, after)

    def _rollout_changed(self, key: tuple[str, str, str], before: dict[str, Any], after: dict[str, Any]) -> None:
        def template_hash(o: dict[str, Any]) -> str:
            return _hash(json.dumps(o["spec"]["template"], sort_keys=True))

        old_hash, new_hash = template_hash(before), template_hash(after)
        stable_hash = before["status"].get("stableRS", old_hash)
        aborted = bool(before["status"].get("abort"))  # a spec change after an abort is a restore
        scenario = "restore" if aborted else self.scenarios["rollouts"]
        frames = _rollout_frames(scenario, stable_hash, new_hash if not aborted else stable_hash,
                                 str(after["metadata"]["generation"]), str(before["status"].get("observedGeneration")))
        if scenario == "restore":
            for f in frames:
                f["currentPodHash"] = stable_hash
                f["stableRS"] = stable_hash
        self.frames[key] = frames

    def _rollout_aborted(self, key: tuple[str, str, str]) -> None:
        """What the controller does on status.abort: canary scaled to 0, phase Degraded, abort kept."""
        status = copy.deepcopy(self.objects[key]["status"])
        status.update(phase="Degraded", message="RolloutAborted: Rollout aborted update to revision", abort=True)
        status.pop("pauseConditions", None)
        status["canary"] = {"weights": {"canary": {"weight": 0}, "stable": {"weight": 100}}}
        self.frames[key] = [status]

    def _isvc_changed(self, key: tuple[str, str, str], before: dict[str, Any], after: dict[str, Any]) -> None:
        _, ns, name = key
        gen = after["metadata"]["generation"]
        pb, pa = before["spec"]["predictor"], after["spec"]["predictor"]
        route_only = {"canaryTrafficPercent", "minReplicas", "maxReplicas"}
        old_tmpl = {k: v for k, v in pb.items() if k not in route_only}
        new_tmpl = {k: v for k, v in pa.items() if k not in route_only}
        comp = before["status"]["components"]["predictor"]
        rolled = comp.get("latestRolledoutRevision") or comp.get("latestReadyRevision")
        prev_rolled = comp.get("previousRolledoutRevision")
        latest = comp["latestCreatedRevision"]
        latest_ready = comp.get("latestReadyRevision")
        stale = copy.deepcopy(before["status"])  # the controller has not seen the new generation yet
        self.revision_templates.setdefault(latest, old_tmpl)
        new_rev = latest
        if old_tmpl != new_tmpl:
            n = int(latest.rsplit("-", 1)[1]) + 1
            new_rev = f"{name}-predictor-{n:05d}"
            self.revision_templates[new_rev] = new_tmpl
        pct = pa.get("canaryTrafficPercent")
        # Going back to what the rolled-out revision runs always works (its pods ran before).
        scenario = self.scenarios["inferenceservices"]
        if new_tmpl == self.revision_templates.get(rolled or ""):
            scenario = "healthy"
        if new_rev == latest and new_rev in self.failed_revisions:
            # a route change while the latest revision is failed: traffic stays on the rolled-out one
            self.frames[key] = [stale, _isvc_status(gen, latest, latest_ready, prev_rolled,
                                                    [{"revisionName": rolled, "percent": 100,
                                                      "latestRevision": False}], "False", name, ns,
                                                    reason="RevisionFailed", message=f"Revision \"{latest}\" "
                                                    "failed with message: container exited with code 1.",
                                                    rolled_out=rolled)]
            return
        if new_rev != latest and scenario == "stuck":
            pending = _isvc_status(gen, new_rev, latest_ready, prev_rolled,
                                   [{"revisionName": rolled, "percent": 100, "latestRevision": False}], "Unknown",
                                   name, ns, reason="RevisionMissing", message="Configuration is waiting for a "
                                   "Revision to become ready.", rolled_out=rolled)
            self.frames[key] = [stale, pending]
            return
        if new_rev != latest and scenario == "failing-revision":
            pending = _isvc_status(gen, new_rev, latest_ready, prev_rolled,
                                   [{"revisionName": rolled, "percent": 100, "latestRevision": False}], "Unknown",
                                   name, ns, reason="RevisionMissing", rolled_out=rolled)
            failed = _isvc_status(gen, new_rev, latest_ready, prev_rolled,
                                  [{"revisionName": rolled, "percent": 100, "latestRevision": False}], "False",
                                  name, ns, reason="RevisionFailed",
                                  message=f"Revision \"{new_rev}\" failed with message: container exited with "
                                  "code 1.", rolled_out=rolled)
            self.failed_revisions.add(new_rev)
            self.frames[key] = [stale, pending, failed]
            return
        # healthy: the new revision (if any) becomes ready, then traffic follows canaryTrafficPercent
        frames = [stale]
        if new_rev != latest:
            frames.append(_isvc_status(gen, new_rev, latest_ready, prev_rolled,
                                       [{"revisionName": rolled, "percent": 100, "latestRevision": False}],
                                       "Unknown", name, ns, reason="RevisionMissing", rolled_out=rolled))
        if pct is None or pct >= 100:
            previous = rolled if rolled != new_rev else prev_rolled
            traffic = [{"revisionName": new_rev, "percent": 100, "latestRevision": True}]
            frames.append(_isvc_status(gen, new_rev, new_rev, previous, traffic, "True", name, ns, rolled_out=new_rev))
        else:
            traffic = [{"revisionName": new_rev, "percent": pct, "latestRevision": True, "tag": "latest"}]
            if rolled != new_rev:
                traffic.append({"revisionName": rolled, "percent": 100 - pct, "latestRevision": False, "tag": "prev"})
            elif prev_rolled:
                traffic.append({"revisionName": prev_rolled, "percent": 100 - pct, "latestRevision": False,
                                "tag": "prev"})
            frames.append(_isvc_status(gen, new_rev, new_rev, prev_rolled if rolled == new_rev else rolled, traffic,
                                       "True", name, ns, rolled_out=rolled))
        self.frames[key] = frames

    def _app_tick(self, key: tuple[str, str, str]) -> None:
        app = self.objects[key]
        if self.branch_head is None:
            return
        annotations = (app["metadata"].get("annotations") or {})
        self._app_reads[key] = self._app_reads.get(key, 0) + 1
        refresh = REFRESH_ANNOTATION in annotations
        if not refresh and self._app_reads[key] % self.poll_every:
            return
        if refresh:
            annotations.pop(REFRESH_ANNOTATION)
            self._bump(app)
        head = self.branch_head()
        status = app["status"]
        if status["sync"]["revision"] == head and key not in self.frames:
            return
        if key not in self.frames:
            scenario = self._next_app_scenario()
            out = _app_status(head, "OutOfSync", status["health"]["status"], None)
            running = _app_status(head, "OutOfSync", "Progressing", "Running", "syncing")
            if scenario == "manual":
                self.frames[key] = [out]
            elif scenario == "sync-failed":
                self.frames[key] = [out, running, _app_status(head, "OutOfSync", "Degraded", "Failed",
                                                              "one or more objects failed to apply: admission "
                                                              "webhook denied the request")]
            elif scenario == "degraded":
                self.frames[key] = [out, running, _app_status(head, "Synced", "Progressing", "Succeeded"),
                                    _app_status(head, "Synced", "Degraded", "Succeeded",
                                                "Deployment \"llmgate-server\" exceeded its progress deadline")]
            else:
                self.frames[key] = [out, running, _app_status(head, "Synced", "Progressing", "Succeeded"),
                                    _app_status(head, "Synced", "Healthy", "Succeeded", "successfully synced")]

    def _next_app_scenario(self) -> str:
        """A list of scenarios plays one per new head (the last one repeats)."""
        scenario = self.scenarios["applications"]
        if isinstance(scenario, list):
            return scenario.pop(0) if len(scenario) > 1 else scenario[0]
        return scenario

    def _tick(self, key: tuple[str, str, str]) -> None:
        if key[0] == "applications":
            self._app_tick(key)
        frames = self.frames.get(key)
        if frames:
            frame = frames.pop(0) if len(frames) > 1 else frames[0]
            obj = self.objects[key]
            if obj["status"] != frame:
                obj["status"] = copy.deepcopy(frame)
                if key[0] == "applications":
                    self._bump(obj, generation=True)  # no status subresource: the controller writes the object
            settled = frame.get("sync", {}).get("status") == "Synced" or frame.get("operationState", {}).get(
                "phase") == "Failed"
            if key[0] == "applications" and len(frames) == 1 and frames[0] == frame and settled:
                del self.frames[key]  # the last frame is where the controller stays

    @staticmethod
    def _bump(obj: dict[str, Any], *, generation: bool = False) -> None:
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        if generation:
            obj["metadata"]["generation"] += 1

    # -- HTTP --------------------------------------------------------------------------------------
    def _route(self, path: str) -> tuple[tuple[str, str, str], bool]:
        m = PATH.match(path)
        if not m or m.group(4) not in RESOURCES:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, _, ns, plural, name, status = m.groups()
        rgroup, _kind, _crd, has_status = RESOURCES[plural]
        if group != rgroup:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if status and not has_status:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        key = (plural, ns, name)
        if key not in self.objects:
            raise ApiError(404, "NotFound", f'{plural}.{group} "{name}" not found')
        return key, bool(status)

    def _validate(self, plural: str, obj: dict[str, Any]) -> None:
        schema = _crd_schema(RESOURCES[plural][2])
        _prune(schema, obj)
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            field = ".".join(str(p) for p in e.absolute_path)
            raise ApiError(422, "Invalid", f'{RESOURCES[plural][1]}.{RESOURCES[plural][0]} '
                           f'"{obj["metadata"]["name"]}" is invalid: {field}: Invalid value: {e.message}')

    def _write(self, key: tuple[str, str, str], status_sub: bool, after: dict[str, Any]) -> dict[str, Any]:
        plural = key[0]
        before = self.objects[key]
        has_status = RESOURCES[plural][3]
        if status_sub:
            # the status subresource ignores everything but status
            after = {**copy.deepcopy(before), "status": after.get("status", before.get("status"))}
        elif has_status:
            after["status"] = copy.deepcopy(before.get("status", {}))
        after["metadata"] = {**after.get("metadata", {}),
                             "generation": before["metadata"]["generation"],
                             "resourceVersion": before["metadata"]["resourceVersion"]}
        self._validate(plural, after)
        spec_changed = after.get("spec") != before.get("spec")
        status_changed = after.get("status") != before.get("status")
        if spec_changed or (not has_status and status_changed):
            after["metadata"]["generation"] = before["metadata"]["generation"] + 1
        after["metadata"]["resourceVersion"] = str(int(before["metadata"]["resourceVersion"]) + 1)
        self.objects[key] = after
        if spec_changed and not status_sub:
            self._changed(key, before, after)
        if plural == "rollouts" and status_sub and after["status"].get("abort"):
            self._rollout_aborted(key)
        return after

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _fail(self, err: ApiError, key_name: str | None = None) -> None:
                self._send(err.code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": err.message, "reason": err.reason, "code": err.code})

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length) or b"null"
                try:
                    return json.loads(raw)
                except ValueError as exc:
                    raise ApiError(400, "BadRequest", f"error decoding request body: {exc}") from exc

            def do_GET(self) -> None:
                with api.lock:
                    api.requests.append(("GET", self.path, "", None))
                    try:
                        key, _ = api._route(self.path)
                    except ApiError as err:
                        return self._fail(err)
                    api._tick(key)
                    self._send(200, api.objects[key])

            def do_PUT(self) -> None:
                with api.lock:
                    try:
                        body = self._body()
                        api.requests.append(("PUT", self.path, self.headers.get("Content-Type", ""), body))
                        key, status_sub = api._route(self.path)
                        current = api.objects[key]["metadata"]["resourceVersion"]
                        sent = (body.get("metadata") or {}).get("resourceVersion")
                        if sent is not None and sent != current:
                            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {key[0]}.'
                                           f'{RESOURCES[key[0]][0]} "{key[2]}": the object has been modified; '
                                           "please apply your changes to the latest version and try again")
                        self._send(200, api._write(key, status_sub, copy.deepcopy(body)))
                    except ApiError as err:
                        self._fail(err)

            def do_PATCH(self) -> None:
                with api.lock:
                    ctype = self.headers.get("Content-Type", "")
                    try:
                        body = self._body()
                        api.requests.append(("PATCH", self.path, ctype, copy.deepcopy(body)))
                        key, status_sub = api._route(self.path)
                        before = api.objects[key]
                        if ctype.startswith("application/json-patch+json"):
                            try:
                                after = apply_json_patch(before, body)
                            except (ValueError, KeyError, IndexError, TypeError) as exc:
                                raise ApiError(422, "Invalid", str(exc)) from exc
                        elif ctype.startswith("application/merge-patch+json"):
                            after = merge_patch(before, body)
                        else:
                            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                                           f"format - accepted media types include: application/json-patch+json, "
                                           f"application/merge-patch+json ({ctype})")
                        self._send(200, api._write(key, status_sub, after))
                    except ApiError as err:
                        self._fail(err)

        return Handler


# The earlier name of this double, when it served Rollouts only.
FakeRolloutsAPI = FakeKubeAPI
