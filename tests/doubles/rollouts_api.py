"""TEST DOUBLE "rollouts API": a fake Kubernetes API server for argoproj.io/v1alpha1 Rollouts.

It is not Kubernetes and not Argo Rollouts. There is no API server or Argo controller on this
machine, so cluster promotion is tested against this in-process HTTP server while the code under
test uses the official `kubernetes` client configured to its URL (a kubeconfig pointing here).

It serves, for each Rollout it holds:
- GET    /apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}
- PATCH  same path, `application/json-patch+json` (ops test/replace/add/remove; a failing `test` op is
         a 422 like the API server's) or `application/merge-patch+json`;
         a spec change bumps metadata.generation and starts the scenario over
- GET/PATCH .../rollouts/{name}/status (merge patch): only `status` changes, generation does not.

A scripted "controller" advances the status one frame per GET after a spec change, so time advances
with the caller's polls (deterministic, no sleeps). Scenarios:
- `healthy`:  lagging observedGeneration (stale Healthy from the previous spec), then setWeight 25,
  timed pause, analysis Running -> Successful, weight 50, analysis Successful, Healthy and promoted;
- `failing-analysis`: like healthy until the first analysis, which ends `Failed` (phase Degraded);
- `stuck`: the controller observes the spec and then stays at step 0 Progressing forever.
After `status.abort: true` it reports Degraded/RolloutAborted; a later spec change back to the stable
image plays a quick return to Healthy (`restore`). Every request is recorded in `requests`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = re.compile(r"^/apis/argoproj\.io/v1alpha1/namespaces/([^/]+)/rollouts/([^/?]+)(/status)?(?:\?.*)?$")


def _hash(image: str) -> str:
    import hashlib

    return hashlib.sha256(image.encode()).hexdigest()[:10]


def make_rollout(namespace: str, name: str, image: str, container: str = "server") -> dict[str, Any]:
    h = _hash(image)
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
            "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "busybox@sha256:" + "1" * 64},
                {"name": container, "image": image},
            ]}},
        },
        "status": {"observedGeneration": "1", "phase": "Healthy", "currentStepIndex": 5, "stableRS": h,
                   "currentPodHash": h, "canary": {"weights": {"canary": {"weight": 0}, "stable": {"weight": 100}}}},
    }


def _frames(scenario: str, old: str, new: str, gen: str, stale_gen: str) -> list[dict[str, Any]]:
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


def apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 subset; raises ValueError (-> 422) when a `test` fails or a path is missing."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        key: Any = int(last) if isinstance(parent, list) and last != "-" else last
        if op["op"] == "test":
            try:
                current = parent[key]
            except (KeyError, IndexError) as exc:
                raise ValueError(f"test failed: {op['path']} does not exist") from exc
            if current != op["value"]:
                raise ValueError(f"test failed: {op['path']} is {current!r}, not {op['value']!r}")
        elif op["op"] == "replace":
            parent[key]
            parent[key] = op["value"]
        elif op["op"] == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else key, op["value"])
            else:
                parent[key] = op["value"]
        elif op["op"] == "remove":
            del parent[key]
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeRolloutsAPI:
    def __init__(self, scenario: str = "healthy") -> None:
        self.scenario = scenario
        self.rollouts: dict[tuple[str, str], dict[str, Any]] = {}
        self.frames: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, str, Any]] = []  # method, path, content-type, body
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, rollout: dict[str, Any]) -> None:
        m = rollout["metadata"]
        self.rollouts[(m["namespace"], m["name"])] = rollout

    def image(self, namespace: str, name: str, container: str = "server") -> str:
        cs = self.rollouts[(namespace, name)]["spec"]["template"]["spec"]["containers"]
        return next(c["image"] for c in cs if c["name"] == container)

    def __enter__(self) -> FakeRolloutsAPI:  # noqa: PYI034
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

    # -- the controller ----------------------------------------------------------------------------
    def _spec_changed(self, key: tuple[str, str], before: dict[str, Any], after: dict[str, Any]) -> None:
        after["metadata"]["generation"] = before["metadata"]["generation"] + 1
        old_img = [c["image"] for c in before["spec"]["template"]["spec"]["containers"]]
        new_img = [c["image"] for c in after["spec"]["template"]["spec"]["containers"]]
        old_hash, new_hash = _hash("|".join(old_img)), _hash("|".join(new_img))
        stable_hash = before["status"].get("stableRS", old_hash)
        aborted = bool(before["status"].get("abort"))  # a spec change after an abort is a retry/restore
        scenario = "restore" if aborted else self.scenario
        # restore: the previous stable pods are still there; going back is quick
        frames = _frames(scenario, stable_hash, new_hash if not aborted else stable_hash,
                         str(after["metadata"]["generation"]), str(before["status"].get("observedGeneration")))
        if scenario == "restore":
            for f in frames:
                f["currentPodHash"] = stable_hash
                f["stableRS"] = stable_hash
        self.frames[key] = frames

    def _tick(self, key: tuple[str, str]) -> None:
        frames = self.frames.get(key)
        if frames:
            self.rollouts[key]["status"] = copy.deepcopy(frames.pop(0) if len(frames) > 1 else frames[0])

    def _aborted(self, key: tuple[str, str]) -> None:
        """What the controller does on status.abort: canary scaled to 0, phase Degraded, abort kept."""
        status = copy.deepcopy(self.rollouts[key]["status"])
        status.update(phase="Degraded", message="RolloutAborted: Rollout aborted update to revision",
                      abort=True, pauseConditions=None)
        status.pop("pauseConditions", None)
        status["canary"] = {"weights": {"canary": {"weight": 0}, "stable": {"weight": 100}}}
        self.frames[key] = [status]

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

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                                  "message": message, "code": code})

            def _route(self) -> tuple[tuple[str, str], bool] | None:
                m = PATH.match(self.path)
                if not m:
                    self._status(404, "NotFound", f"the server could not find the requested resource {self.path}")
                    return None
                key = (m.group(1), m.group(2))
                if key not in api.rollouts:
                    self._status(404, "NotFound", f'rollouts.argoproj.io "{key[1]}" not found')
                    return None
                return key, bool(m.group(3))

            def do_GET(self) -> None:
                with api.lock:
                    api.requests.append(("GET", self.path, "", None))
                    routed = self._route()
                    if routed is None:
                        return
                    key, _ = routed
                    api._tick(key)
                    self._send(200, api.rollouts[key])

            def do_PATCH(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                ctype = self.headers.get("Content-Type", "")
                body = json.loads(self.rfile.read(length) or b"null")
                with api.lock:
                    api.requests.append(("PATCH", self.path, ctype, body))
                    routed = self._route()
                    if routed is None:
                        return
                    key, status_sub = routed
                    before = api.rollouts[key]
                    try:
                        if ctype.startswith("application/json-patch+json"):
                            after = apply_json_patch(before, body)
                        elif ctype.startswith("application/merge-patch+json"):
                            after = merge_patch(before, body)
                        else:
                            self._status(415, "UnsupportedMediaType", f"unsupported patch type {ctype}")
                            return
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        self._status(422, "Invalid", str(exc))
                        return
                    if status_sub:
                        # the status subresource ignores everything but status
                        after = {**before, "status": after.get("status", before.get("status"))}
                        if after["status"].get("abort"):
                            api.rollouts[key] = after
                            api._aborted(key)
                    else:
                        after["status"] = before.get("status", {})
                        if after.get("spec") != before.get("spec"):
                            api._spec_changed(key, before, after)
                    after["metadata"]["resourceVersion"] = str(int(before["metadata"]["resourceVersion"]) + 1)
                    api.rollouts[key] = after
                    self._send(200, after)

        return Handler
