"""Policy rules for rendered manifests: what a schema cannot say about an LLM server.

Each rule returns `Finding`s that name the object (`Kind/name`) and the field path, so a failing
check points at the line to change. Rules read pod templates of workloads (Rollout, Deployment,
StatefulSet, and a KServe InferenceService's predictor merged with the ServingRuntime it runs) and,
where they relate, other objects in the same render (AnalysisTemplates).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.manifests.findings import Finding
from pipeline.manifests.render import object_name

# The serving images ship this helper: it sends one real completion (max_tokens=1) and exits 0 only
# when a token came back. Keep in step with dockerfiles/.
READINESS_HELPER = "/usr/local/bin/llmgate-ready"
STARTUP_BUDGET_FACTOR = 1.5
WORKLOAD_KINDS = {"Rollout", "Deployment", "StatefulSet"}
DIGEST_REF = re.compile(r"@sha256:[0-9a-f]{64}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# The release's weights, on the pod template and in the server's environment (the readiness helper
# compares the mounted weights against the env var).
MODEL_DIGEST_ANNOTATION = "llmgate.dev/model-digest"
MODEL_DIGEST_ENV = "LLMGATE_MODEL_DIGEST"
# The fields of a KServe predictor's `model` that are KServe's own, not the Container it embeds.
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "storageUri", "storage", "protocolVersion",
                       "confidential"}
INFERENCE_PATHS = re.compile(r"/(v1/)?(chat/)?completions|/generate|/v1/embeddings", re.IGNORECASE)

# Kubernetes probe defaults, used when a field is omitted.
PROBE_PERIOD_DEFAULT = 10
PROBE_FAILURE_DEFAULT = 3


@dataclass
class Context:
    objects: list[dict[str, Any]]
    load_time_s: float | None  # measured p95 load time of the digest being checked
    readiness_helper: str = READINESS_HELPER


@dataclass
class Pod:
    """A workload's pod template, with the path prefix that leads to it."""

    obj: dict[str, Any]
    name: str  # Kind/name
    spec: dict[str, Any]  # the pod spec
    path: str  # spec.template.spec
    annotations: dict[str, Any] = field(default_factory=dict)  # the pod template's
    annotations_path: str = "spec.template.metadata.annotations"
    # KServe: the server container is the predictor's model merged over the runtime's container.
    container_paths: list[str] | None = None

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    def containers(self, *, init: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
        keys = ["containers", "initContainers"] if init else ["containers"]
        for key in keys:
            for i, c in enumerate(self.spec.get(key) or []):
                if key == "containers" and self.container_paths is not None:
                    yield self.container_paths[i], c
                else:
                    yield f"{self.path}.{key}[{i}]", c


def _merge_container(runtime: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """What KServe runs: the runtime's container with the predictor model's Container fields over it
    (lists of named entries, env and volumeMounts, are merged by name)."""
    merged = copy.deepcopy(runtime)
    for key, value in model.items():
        if key in KSERVE_MODEL_FIELDS:
            continue
        if key in ("env", "volumeMounts") and isinstance(value, list):
            named = {e.get("name"): e for e in merged.get(key) or []}
            named.update({e.get("name"): e for e in value})
            merged[key] = list(named.values())
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _kserve_pod(isvc: dict[str, Any], objs: list[dict[str, Any]]) -> Pod:
    predictor = dict((isvc.get("spec") or {}).get("predictor") or {})
    model = predictor.pop("model", None) or {}
    runtime_name = model.get("runtime")
    runtime = next((o for o in objs if o.get("kind") in ("ServingRuntime", "ClusterServingRuntime")
                    and (o.get("metadata") or {}).get("name") == runtime_name), None)
    rspec = (runtime or {}).get("spec") or {}
    server = _merge_container(next(iter(rspec.get("containers") or []), {}), model)
    spec = {**predictor, "containers": [server, *(predictor.get("containers") or [])],
            "volumes": [*(rspec.get("volumes") or []), *(predictor.get("volumes") or [])]}
    paths = ["spec.predictor.model"] + [f"spec.predictor.containers[{i}]" for i in range(len(spec["containers"]) - 1)]
    return Pod(isvc, object_name(isvc), spec, "spec.predictor", annotations=predictor.get("annotations") or {},
               annotations_path="spec.predictor.annotations", container_paths=paths)


def pods(objs: list[dict[str, Any]]) -> Iterator[Pod]:
    for obj in objs:
        if obj.get("kind") in WORKLOAD_KINDS:
            template = (obj.get("spec") or {}).get("template") or {}
            yield Pod(obj, object_name(obj), template.get("spec") or {}, "spec.template.spec",
                      annotations=(template.get("metadata") or {}).get("annotations") or {})
        elif obj.get("kind") == "InferenceService":
            yield _kserve_pod(obj, objs)


def _f(rule: str, pod_or_obj: Pod | dict[str, Any], path: str, message: str) -> Finding:
    name = pod_or_obj.name if isinstance(pod_or_obj, Pod) else object_name(pod_or_obj)
    return Finding(rule=rule, object=name, path=path, message=message)


# -- rules ----------------------------------------------------------------------------------------
def rule_image_digest(ctx: Context) -> Iterator[Finding]:
    for pod in pods(ctx.objects):
        for path, c in pod.containers(init=True):
            image = str(c.get("image", ""))
            if not DIGEST_REF.search(image):
                yield _f("image-digest", pod, f"{path}.image", f"image {image!r} is not pinned by digest (@sha256:…)")


def startup_budget_s(probe: dict[str, Any]) -> float:
    period = probe.get("periodSeconds", PROBE_PERIOD_DEFAULT)
    failures = probe.get("failureThreshold", PROBE_FAILURE_DEFAULT)
    return float(probe.get("initialDelaySeconds", 0) + period * failures)


def _probes(ctx: Context, kind: str) -> Iterator[tuple[Pod, str, dict[str, Any] | None]]:
    """Each serving container's probe of `kind` (None when it has none), with the path that names it."""
    for pod in pods(ctx.objects):
        for path, c in pod.containers():
            yield pod, f"{path}.{kind}", c.get(kind) or None


def rule_startup_probe(ctx: Context) -> Iterator[Finding]:
    for pod, where, probe in _probes(ctx, "startupProbe"):
        if not probe:
            yield _f("startup-probe", pod, where, "missing: weights load for minutes, "
                     "without a startup probe liveness kills the server before it is up")
            continue
        budget = startup_budget_s(probe)
        need = None if ctx.load_time_s is None else STARTUP_BUDGET_FACTOR * ctx.load_time_s
        if need is None:
            yield _f("startup-budget", pod, where, "no measured load time for this digest "
                     "(boot.load_time_p95_s): the startup budget cannot be checked")
        elif budget < need:
            yield _f("startup-budget", pod, f"{where}.failureThreshold",
                     f"startup budget {budget:g} s (initialDelaySeconds + periodSeconds × failureThreshold) is "
                     f"below {STARTUP_BUDGET_FACTOR} × measured p95 load time {ctx.load_time_s:.1f} s = {need:.1f} s")


def _is_helper(probe: dict[str, Any], helper: str) -> bool:
    cmd = (probe.get("exec") or {}).get("command") or []
    return bool(cmd) and (cmd[0] == helper or (len(cmd) > 2 and helper in " ".join(cmd[2:])))


def rule_readiness_probe(ctx: Context) -> Iterator[Finding]:
    for pod, where, probe in _probes(ctx, "readinessProbe"):
        if not probe:
            yield _f("readiness-probe", pod, where, "missing")
        elif not _is_helper(probe, ctx.readiness_helper):
            yield _f("readiness-probe", pod, where,
                     f"must exec {ctx.readiness_helper} (a real one-token completion); a health or "
                     "model-list endpoint answers while the engine cannot generate")


def rule_liveness_probe(ctx: Context) -> Iterator[Finding]:
    for pod, where, probe in _probes(ctx, "livenessProbe"):
        if not probe:
            yield _f("liveness-probe", pod, where, "missing")
            continue
        http_path = str((probe.get("httpGet") or {}).get("path", ""))
        if _is_helper(probe, ctx.readiness_helper) or INFERENCE_PATHS.search(http_path):
            yield _f("liveness-probe", pod, where,
                     "depends on inference: a saturated server would be restarted instead of taken out of "
                     "rotation; probe the process (/health), not a completion")


def rule_termination_grace(ctx: Context) -> Iterator[Finding]:
    for pod in pods(ctx.objects):
        value = pod.spec.get("terminationGracePeriodSeconds")
        if not isinstance(value, int) or value <= 0:
            yield _f("termination-grace", pod, f"{pod.path}.terminationGracePeriodSeconds",
                     "must be set (> 0) so in-flight generations can finish before the kill")


def rule_min_ready_seconds(ctx: Context) -> Iterator[Finding]:
    for pod in pods(ctx.objects):
        if pod.kind == "InferenceService":
            continue  # Knative revisions have no minReadySeconds; KServe gates traffic on readiness
        value = (pod.obj.get("spec") or {}).get("minReadySeconds")
        if not isinstance(value, int) or value <= 0:
            yield _f("min-ready-seconds", pod, "spec.minReadySeconds",
                     "must be set (> 0): a replica that crashes right after its first ready probe must not count")


def rule_gpu_requests_limits(ctx: Context) -> Iterator[Finding]:
    for pod in pods(ctx.objects):
        wants_gpu = False
        for path, c in pod.containers(init=True):
            res = c.get("resources") or {}
            req, lim = res.get("requests") or {}, res.get("limits") or {}
            for key in sorted({k for k in {**req, **lim} if k.endswith("/gpu")}):
                wants_gpu = True
                if str(req.get(key)) != str(lim.get(key)):
                    yield _f("gpu-requests-limits", pod, f"{path}.resources.requests[{key}]",
                             f"GPU requests ({req.get(key)}) must equal limits ({lim.get(key)})")
        if wants_gpu:
            if not pod.spec.get("nodeSelector") and not (pod.spec.get("affinity") or {}).get("nodeAffinity"):
                yield _f("gpu-scheduling", pod, f"{pod.path}.nodeSelector", "GPU pod without a GPU node selector")
            if not any("gpu" in str(t.get("key", "")) for t in pod.spec.get("tolerations") or []):
                yield _f("gpu-scheduling", pod, f"{pod.path}.tolerations", "GPU pod without a toleration for "
                         "the GPU nodes' taint")


def rule_security_context(ctx: Context) -> Iterator[Finding]:
    for pod in pods(ctx.objects):
        psc = pod.spec.get("securityContext") or {}
        for path, c in pod.containers(init=True):
            sc = c.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            user = sc.get("runAsUser", psc.get("runAsUser"))
            if non_root is not True:
                yield _f("security-context", pod, f"{path}.securityContext.runAsNonRoot", "must be true")
            if user == 0:
                yield _f("security-context", pod, f"{path}.securityContext.runAsUser", "must not be 0 (root)")
            if sc.get("readOnlyRootFilesystem") is not True:
                yield _f("security-context", pod, f"{path}.securityContext.readOnlyRootFilesystem", "must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                yield _f("security-context", pod, f"{path}.securityContext.allowPrivilegeEscalation",
                         "must be false")
            if sc.get("privileged") is True:
                yield _f("security-context", pod, f"{path}.securityContext.privileged", "must not be true")
            drop = [str(x) for x in ((sc.get("capabilities") or {}).get("drop") or [])]
            if "ALL" not in drop:
                yield _f("security-context", pod, f"{path}.securityContext.capabilities.drop", "must contain ALL")


def rule_surge(ctx: Context) -> Iterator[Finding]:
    """Without a traffic router, one extra GPU replica at a time and never fewer ready than desired."""
    for pod in pods(ctx.objects):
        spec = pod.obj.get("spec") or {}
        if pod.obj["kind"] == "Deployment":
            strategy = spec.get("strategy") or {}
            if strategy.get("type", "RollingUpdate") != "RollingUpdate":
                yield _f("surge", pod, "spec.strategy.type", "must be RollingUpdate (Recreate drops all capacity)")
                continue
            ru, base = strategy.get("rollingUpdate") or {}, "spec.strategy.rollingUpdate"
        elif pod.obj["kind"] == "Rollout":
            canary = (spec.get("strategy") or {}).get("canary")
            if canary is None or canary.get("trafficRouting"):
                continue
            ru, base = canary, "spec.strategy.canary"
        else:
            continue
        if ru.get("maxSurge") != 1:
            yield _f("surge", pod, f"{base}.maxSurge", f"must be 1 (is {ru.get('maxSurge', 'unset: 25%')})")
        if ru.get("maxUnavailable") != 0:
            yield _f("surge", pod, f"{base}.maxUnavailable",
                     f"must be 0 (is {ru.get('maxUnavailable', 'unset: 25%')})")


def rule_canary_steps(ctx: Context) -> Iterator[Finding]:
    templates = {
        (o.get("metadata") or {}).get("name") for o in ctx.objects if o.get("kind") == "AnalysisTemplate"
    }
    for obj in ctx.objects:
        if obj.get("kind") != "Rollout":
            continue
        canary = ((obj.get("spec") or {}).get("strategy") or {}).get("canary")
        if canary is None:
            yield _f("canary-steps", obj, "spec.strategy.canary", "a Rollout here must use the canary strategy")
            continue
        steps = canary.get("steps") or []
        kinds = {k for s in steps for k in s}
        for needed in ("setWeight", "pause", "analysis"):
            if needed not in kinds:
                yield _f("canary-steps", obj, "spec.strategy.canary.steps", f"no {needed} step")
        for i, s in enumerate(steps):
            for j, t in enumerate((s.get("analysis") or {}).get("templates") or []):
                if not t.get("clusterScope") and t.get("templateName") not in templates:
                    yield _f("canary-steps", obj, f"spec.strategy.canary.steps[{i}].analysis.templates[{j}]"
                             ".templateName", f"AnalysisTemplate {t.get('templateName')!r} is not in this render")
        for key in ("canaryService", "stableService"):
            if not canary.get(key):
                yield _f("canary-steps", obj, f"spec.strategy.canary.{key}", "must name a Service")


def rule_shm(ctx: Context) -> Iterator[Finding]:
    for pod in pods(ctx.objects):
        volumes = {v.get("name"): v for v in pod.spec.get("volumes") or []}
        for path, c in pod.containers():
            mounts = [(i, m) for i, m in enumerate(c.get("volumeMounts") or []) if m.get("mountPath") == "/dev/shm"]
            if not mounts:
                yield _f("shm", pod, f"{path}.volumeMounts", "no /dev/shm mount (the runtime default is 64 MiB)")
                continue
            i, m = mounts[0]
            vol = volumes.get(m.get("name")) or {}
            if (vol.get("emptyDir") or {}).get("medium") != "Memory":
                yield _f("shm", pod, f"{path}.volumeMounts[{i}]", f"/dev/shm volume {m.get('name')!r} must be an "
                         "emptyDir with medium: Memory")


def rule_weights_read_only(ctx: Context) -> Iterator[Finding]:
    for pod in pods(ctx.objects):
        pvcs = {}
        for i, v in enumerate(pod.spec.get("volumes") or []):
            if "persistentVolumeClaim" in v:
                pvcs[v.get("name")] = i
                if v["persistentVolumeClaim"].get("readOnly") is not True:
                    yield _f("weights-read-only", pod, f"{pod.path}.volumes[{i}].persistentVolumeClaim.readOnly",
                             "model weights must be mounted read-only")
        for path, c in pod.containers(init=True):
            for i, m in enumerate(c.get("volumeMounts") or []):
                if m.get("name") in pvcs and m.get("readOnly") is not True:
                    yield _f("weights-read-only", pod, f"{path}.volumeMounts[{i}].readOnly",
                             "model weights must be mounted read-only")


def rule_model_digest(ctx: Context) -> Iterator[Finding]:
    """Both digests of the release: the pod names the weights it must serve (annotation) and hands the
    digest to the server container (env), and the two agree."""
    for pod in pods(ctx.objects):
        annotated = pod.annotations.get(MODEL_DIGEST_ANNOTATION)
        where = f"{pod.annotations_path}[{MODEL_DIGEST_ANNOTATION}]"
        if not DIGEST.match(str(annotated or "")):
            yield _f("model-digest", pod, where, f"model digest {annotated!r} is not pinned (sha256:…): the "
                     "pod does not say which weights it serves")
            annotated = None
        server = next(pod.containers(), None)
        if server is None:
            continue
        path, c = server
        env = {e.get("name"): e.get("value") for e in c.get("env") or [] if isinstance(e, dict)}
        value = env.get(MODEL_DIGEST_ENV)
        if not DIGEST.match(str(value or "")):
            yield _f("model-digest", pod, f"{path}.env[{MODEL_DIGEST_ENV}]", f"{MODEL_DIGEST_ENV} is {value!r}, not a "
                     "sha256 digest: the readiness check cannot compare the mounted weights")
        elif annotated is not None and value != annotated:
            yield _f("model-digest", pod, f"{path}.env[{MODEL_DIGEST_ENV}]",
                     f"{MODEL_DIGEST_ENV} {value} differs from the annotation's {annotated}")


RULES: dict[str, Callable[[Context], Iterator[Finding]]] = {
    "image-digest": rule_image_digest,
    "model-digest": rule_model_digest,
    "startup-probe": rule_startup_probe,  # also yields startup-budget
    "readiness-probe": rule_readiness_probe,
    "liveness-probe": rule_liveness_probe,
    "termination-grace": rule_termination_grace,
    "min-ready-seconds": rule_min_ready_seconds,
    "gpu-requests-limits": rule_gpu_requests_limits,  # also yields gpu-scheduling
    "security-context": rule_security_context,
    "surge": rule_surge,
    "canary-steps": rule_canary_steps,
    "shm": rule_shm,
    "weights-read-only": rule_weights_read_only,
}


def check(objs: list[dict[str, Any]], *, load_time_s: float | None,
          readiness_helper: str = READINESS_HELPER) -> list[Finding]:
    ctx = Context(objs, load_time_s, readiness_helper)
    return [f for rule in RULES.values() for f in rule(ctx)]


# -- expected rollout duration --------------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(value: Any) -> float | None:
    """Argo/Go durations ("5m", "1h30m", 30) in seconds; None when unset."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    parts = _DURATION.findall(str(value))
    if not parts or "".join(n + u for n, u in parts) != str(value):
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


@dataclass
class RolloutEstimate:
    object: str
    replicas: int
    per_replica_s: float  # startup probe granularity + first readiness + minReadySeconds
    replicas_s: float
    pauses_s: float
    analysis_s: float
    manual_pauses: int
    total_s: float

    def describe(self) -> str:
        text = (f"{self.object}: ~{self.total_s / 60:.1f} min for {self.replicas} replica(s) "
                f"({self.replicas} × {self.per_replica_s:.0f} s per replica, one at a time"
                f" + {self.pauses_s:.0f} s pauses + {self.analysis_s:.0f} s analysis)")
        if self.manual_pauses:
            text += f", plus {self.manual_pauses} indefinite pause(s) waiting for a manual promote"
        return text


def _analysis_s(step: dict[str, Any], objs: list[dict[str, Any]]) -> float:
    """Metrics of one analysis run in parallel: the slowest (initialDelay + (count-1) × interval)."""
    names = {t.get("templateName") for t in step.get("templates") or []}
    longest = 0.0
    for o in objs:
        if o.get("kind") == "AnalysisTemplate" and (o.get("metadata") or {}).get("name") in names:
            for m in (o.get("spec") or {}).get("metrics") or []:
                count = m.get("count")
                count = int(count) if str(count).isdigit() else 1
                t = (duration_s(m.get("initialDelay")) or 0) + max(0, count - 1) * (duration_s(m.get("interval")) or 0)
                longest = max(longest, t)
    return longest


def estimate(objs: list[dict[str, Any]], load_time_s: float) -> list[RolloutEstimate]:
    out = []
    for pod in pods(objs):
        spec = pod.obj.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        server = next((c for _, c in pod.containers()), {})
        sp = server.get("startupProbe") or {}
        rp = server.get("readinessProbe") or {}
        period = sp.get("periodSeconds", PROBE_PERIOD_DEFAULT)
        # The kubelet notices a finished load at the next startup probe, then readiness must pass once.
        started = sp.get("initialDelaySeconds", 0) + math.ceil(load_time_s / period) * period
        per = started + rp.get("periodSeconds", PROBE_PERIOD_DEFAULT) + spec.get("minReadySeconds", 0)
        pauses = analysis = 0.0
        manual = 0
        steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
        for s in steps:
            if "pause" in s:
                d = duration_s((s["pause"] or {}).get("duration"))
                if d is None:
                    manual += 1
                else:
                    pauses += d
            if "analysis" in s:
                analysis += _analysis_s(s["analysis"], objs)
        # maxSurge 1 / maxUnavailable 0: replicas are replaced one after the other
        total = replicas * per + pauses + analysis
        out.append(RolloutEstimate(pod.name, replicas, per, replicas * per, pauses, analysis, manual, total))
    return out
