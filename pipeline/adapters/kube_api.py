"""The Kubernetes API, behind a Protocol: get, patch and replace one custom object and its status.

Promotion backends (Argo Rollouts, KServe, Argo CD) only ever touch one named custom object at a time,
so that is the whole surface. The real implementation is the official `kubernetes` client's
CustomObjectsApi; errors come back as this project's errors, named by the object's API path:

- 404 -> `ObjectNotFound` (bad input: the object or its CRD is not there),
- 409 -> `ObjectConflict` (someone changed it since we read it: `replace` sends our resourceVersion),
- 422 -> `PatchRefused` (invalid, or a JSON-patch `test` op failed),
- 401/403 -> InfraError (credentials), anything else or no answer -> InfraError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pipeline.errors import BadInput, InfraError

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT_S = 30

PatchType = Literal["json", "merge"]


@dataclass(frozen=True)
class ObjectRef:
    """One namespaced custom object."""

    group: str
    version: str
    plural: str
    kind: str
    namespace: str
    name: str

    @property
    def path(self) -> str:
        return f"/apis/{self.group}/{self.version}/namespaces/{self.namespace}/{self.plural}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class ObjectNotFound(BadInput):
    """404: no such object (or no such resource type in the cluster)."""


class PatchRefused(BadInput):
    """422: the API server refused the change (schema, or a failed JSON-patch `test`)."""


class ObjectConflict(InfraError):
    """409: the object changed since it was read."""


class KubeApi(Protocol):
    @property
    def host(self) -> str: ...

    def get(self, ref: ObjectRef) -> dict[str, Any]: ...

    def patch(self, ref: ObjectRef, body: Any, *, patch_type: PatchType = "merge") -> dict[str, Any]:
        """PATCH the object (the main resource: a status in the body is ignored by the server)."""
        ...

    def patch_status(self, ref: ObjectRef, body: dict[str, Any]) -> dict[str, Any]:
        """Merge-PATCH the status subresource (only `status` changes)."""
        ...

    def replace(self, ref: ObjectRef, body: dict[str, Any]) -> dict[str, Any]:
        """PUT the whole object; its metadata.resourceVersion makes a stale write a 409."""
        ...


def api_error(exc_status: int | None, body: str | None, reason: str | None, where: str) -> Exception:
    """The project's error for an API server answer (shared by the real client and its tests)."""
    message = _status_message(body) or reason or "no message"
    if exc_status == 404:
        return ObjectNotFound(f"not found ({message})", where=where)
    if exc_status == 409:
        return ObjectConflict(f"conflict: {message}", where=where)
    if exc_status == 422:
        return PatchRefused(f"refused: {message}", where=where)
    if exc_status in (401, 403):
        return InfraError(f"not allowed: {message}", where=where)
    return InfraError(f"API error {exc_status}: {message}", where=where)


def _status_message(body: str | None) -> str | None:
    try:
        data = json.loads(body or "")
    except ValueError:
        return None
    return str(data.get("message")) if isinstance(data, dict) and data.get("message") else None


class KubernetesApi:
    """`KubeApi` through the official `kubernetes` client."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | str | None = None, context: str | None = None) -> KubernetesApi:
        """From a kubeconfig file, or the in-cluster service account when none is given."""
        from kubernetes import client, config

        if kubeconfig is not None and not Path(kubeconfig).is_file():
            raise BadInput("kubeconfig not found", where=str(kubeconfig))
        try:
            if kubeconfig is not None:
                api = config.new_client_from_config(config_file=str(kubeconfig), context=context,
                                                    persist_config=False)
            else:
                config.load_incluster_config()
                api = client.ApiClient()
        except config.ConfigException as exc:
            raise BadInput(f"cannot load Kubernetes configuration: {exc}",
                           where=str(kubeconfig or "in-cluster")) from exc
        except FileNotFoundError as exc:
            raise BadInput("kubeconfig not found", where=str(kubeconfig)) from exc
        return cls(api)

    @property
    def host(self) -> str:
        return str(self._api_client.configuration.host)

    @property
    def api_client(self) -> Any:
        return self._api_client

    def _call(self, ref: ObjectRef, fn: Any, **kw: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        where = self.host + ref.path
        try:
            return fn(group=ref.group, version=ref.version, namespace=ref.namespace, plural=ref.plural,
                      name=ref.name, _request_timeout=REQUEST_TIMEOUT_S, **kw)
        except ApiException as exc:
            raise api_error(exc.status, exc.body, exc.reason, where) from exc
        except Urllib3Error as exc:
            raise InfraError(f"Kubernetes API unreachable: {exc}", where=where) from exc

    def get(self, ref: ObjectRef) -> dict[str, Any]:
        return self._call(ref, self._custom.get_namespaced_custom_object)

    def patch(self, ref: ObjectRef, body: Any, *, patch_type: PatchType = "merge") -> dict[str, Any]:
        return self._call(ref, self._custom.patch_namespaced_custom_object, body=body,
                          _content_type=JSON_PATCH if patch_type == "json" else MERGE_PATCH)

    def patch_status(self, ref: ObjectRef, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(ref, self._custom.patch_namespaced_custom_object_status, body=body,
                          _content_type=MERGE_PATCH)

    def replace(self, ref: ObjectRef, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(ref, self._custom.replace_namespaced_custom_object, body=body)
