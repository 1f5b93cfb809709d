"""Schema validation of rendered manifests, offline.

Core objects are checked against the Kubernetes JSON schemas that kubernetes-validate ships (strict
variant: unknown fields are errors). Custom resources (Argo Rollouts Rollout and AnalysisTemplate,
KEDA ScaledObject, KServe InferenceService and ServingRuntime, Argo CD Application) are checked against
the vendored CRD schemas in `pipeline/data/`, made strict the same way; the core types inside them (a
Rollout's pod template, a KServe predictor's containers, probes, env, volumes) against the core schemas
of the target Kubernetes version. Every error is collected (not only the first), named by object and
field path.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from packaging.version import Version
from referencing import Registry, Resource

from pipeline.errors import BadInput
from pipeline.manifests.findings import Finding, field_path
from pipeline.manifests.render import object_name

DEFAULT_K8S_VERSION = "1.33"

CRD_FILES = {
    ("argoproj.io", "Rollout"): "crd-rollouts.argoproj.io.yaml",
    ("argoproj.io", "AnalysisTemplate"): "crd-analysistemplates.argoproj.io.yaml",
    ("argoproj.io", "Application"): "crd-applications.argoproj.io.yaml",
    ("keda.sh", "ScaledObject"): "crd-scaledobjects.keda.sh.yaml",
    ("serving.kserve.io", "InferenceService"): "crd-inferenceservices.serving.kserve.io.yaml",
    ("serving.kserve.io", "ServingRuntime"): "crd-servingruntimes.serving.kserve.io.yaml",
    ("kyverno.io", "ClusterPolicy"): "crd-clusterpolicies.kyverno.io.yaml",
}
# A vendored CRD marks an open sub-tree that holds a core Kubernetes type with this key (value:
# `group.version.Kind`, e.g. `core.v1.Container`); it is validated against the core schema.
CORE_TYPE_KEY = "x-llmgate-core-type"


def supported_versions() -> list[str]:
    return sorted(set(kv.all_versions()), key=Version)


def resolve_version(desired: str) -> str:
    """The newest shipped schema version not newer than `desired` (as kubernetes-validate does)."""
    want = Version(kv.major_minor(desired.removeprefix("v")))
    candidates = [v for v in supported_versions() if Version(kv.major_minor(v)) <= want]
    if not candidates:
        raise BadInput(
            f"no Kubernetes schemas for {desired}; kubernetes-validate ships {', '.join(supported_versions())}",
            where="--k8s-version",
        )
    if want > Version(kv.major_minor(supported_versions()[-1])):
        raise BadInput(
            f"Kubernetes {desired} is newer than the newest schemas shipped ({supported_versions()[-1]})",
            where="--k8s-version",
        )
    return candidates[-1]


@lru_cache(maxsize=8)
def _core_definitions(version: str) -> Registry:
    defs = kv.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    return Resource.from_contents(defs) @ Registry()


@lru_cache(maxsize=64)
def _core_schema(version: str, kind: str, api_version: str) -> dict[str, Any] | None:
    # rbac.authorization.k8s.io/v1 -> rbac-v1, as kubernetes-validate names its files
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        return kv.schema_contents(
            f"kubernetes-json-schema/v{version}-local-strict/{kind.lower()}-{api}.json", version
        )
    except FileNotFoundError:
        return None


def _strict(schema: Any) -> Any:
    """Close every object schema that lists its properties (unknown fields become errors)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in out
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@lru_cache(maxsize=8)
def crd_schema(group: str, kind: str, version: str = "v1alpha1") -> dict[str, Any]:
    name = CRD_FILES[(group, kind)]
    crd = yaml.safe_load(resources.files("pipeline.data").joinpath(name).read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return _strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    raise BadInput(f"vendored CRD has no version {version}", where=f"pipeline/data/{name}")


def _errors(validator: jsonschema.protocols.Validator, data: Any, obj: str, prefix: list[Any]) -> list[Finding]:
    found = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        # anyOf/oneOf errors carry the useful detail in their best sub-error
        best = jsonschema.exceptions.best_match([err]) if err.context else err
        path = prefix + list(best.absolute_path)
        found.append(Finding(rule="schema", object=obj, path=field_path(path), message=best.message))
    return found


def validate_object(obj: dict[str, Any], k8s_version: str = DEFAULT_K8S_VERSION) -> list[Finding]:
    version = resolve_version(k8s_version)
    name = object_name(obj)
    api_version = str(obj.get("apiVersion", ""))
    group, _, crd_version = api_version.rpartition("/")
    kind = str(obj.get("kind", ""))
    if (group, kind) in CRD_FILES:
        schema = crd_schema(group, kind, crd_version)
        found = _errors(jsonschema.Draft202012Validator(schema), obj, name, [])
        template = (obj.get("spec") or {}).get("template")
        if kind == "Rollout" and isinstance(template, dict):
            found += _validate_pod_template(template, name, version)
        for core_type, data, path in core_subtrees(schema, obj, []):
            found += _validate_core(core_type, data, name, path, version)
        return found
    schema = _core_schema(version, kind, api_version)
    if schema is None:
        return [
            Finding(
                rule="schema",
                object=name,
                path="apiVersion",
                message=f"no schema for {api_version} {kind} (Kubernetes {version} or the vendored CRDs)",
            )
        ]
    validator = jsonschema.Draft202012Validator(schema, registry=_core_definitions(version))
    return _errors(validator, obj, name, [])


def _validate_pod_template(template: dict[str, Any], name: str, version: str) -> list[Finding]:
    schema = _core_schema(version, "PodTemplate", "v1")
    assert schema is not None  # shipped for every version
    validator = jsonschema.Draft202012Validator(schema, registry=_core_definitions(version))
    wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    found = []
    for f in _errors(validator, wrapper, name, []):
        # template.spec... in the wrapper is spec.template.spec... in the Rollout
        f.path = "spec." + f.path if f.path.startswith("template") else f.path
        found.append(f)
    return found


def core_subtrees(schema: Any, data: Any, path: list[Any]) -> list[tuple[str, Any, list[Any]]]:
    """(core type, value, path) for every value that sits where the CRD schema marks a core type."""
    if not isinstance(schema, dict):
        return []
    if CORE_TYPE_KEY in schema:
        return [(str(schema[CORE_TYPE_KEY]), data, path)]
    out: list[tuple[str, Any, list[Any]]] = []
    if isinstance(data, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in data:
                out += core_subtrees(sub, data[key], [*path, key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in data.items():
                if key not in (schema.get("properties") or {}):
                    out += core_subtrees(extra, value, [*path, key])
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(data):
            out += core_subtrees(schema["items"], item, [*path, i])
    return out


@lru_cache(maxsize=8)
def _definition_names(version: str) -> frozenset[str]:
    defs = kv.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    return frozenset((defs.get("$defs") or {}).keys())


def _validate_core(core_type: str, data: Any, name: str, path: list[Any], version: str) -> list[Finding]:
    definition = f"io.k8s.api.{core_type}"
    if definition not in _definition_names(version):
        # A core type newer than the target Kubernetes version's schemas: the CRD allows it, and no
        # schema here can say more about it.
        return []
    schema = {"$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/{definition}"}
    validator = jsonschema.Draft202012Validator(schema, registry=_core_definitions(version))
    return _errors(validator, data, name, path)


def validate_objects(objs: list[dict[str, Any]], k8s_version: str = DEFAULT_K8S_VERSION) -> list[Finding]:
    out: list[Finding] = []
    for obj in objs:
        out += validate_object(obj, k8s_version)
    return out
