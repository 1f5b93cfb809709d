"""Regenerate pipeline/data/crd-{inferenceservices,servingruntimes}.serving.kserve.io.yaml.

KServe's CRDs inline every pod and container schema (the InferenceService CRD is ~1 MB). This builds the
same structural schema from the OpenAPI models of KServe's Python SDK (openapi_types, attribute_map and
the generated "must not be None" checks for required fields), with two trims: core Kubernetes types are
left open and marked `x-llmgate-core-type` (pipeline/manifests/validate.py checks them against the core
schemas of the target Kubernetes version), and sub-trees llmgate does not use are left open.

Usage: pip download --no-deps kserve==0.21.0 -d /tmp/k && unzip -q /tmp/k/kserve-*.whl -d /tmp/k/sdk
       python scripts/vendor_kserve_crds.py /tmp/k/sdk pipeline/data
"""
import importlib
import re
import sys

import yaml

SDK = sys.argv[1]
import types

pkg = types.ModuleType("kserve"); pkg.__path__ = [f"{SDK}/kserve"]; sys.modules["kserve"] = pkg
mpkg = types.ModuleType("kserve.models"); mpkg.__path__ = [f"{SDK}/kserve/models"]; sys.modules["kserve.models"] = mpkg
six = types.ModuleType("six")  # the generated models import six only for iteritems
six.iteritems = lambda d: iter(d.items())
six.PY3, six.string_types = True, (str,)
sys.modules.setdefault("six", six)
cfg = types.ModuleType("kserve.configuration")
class Configuration:
    client_side_validation = True
    @classmethod
    def get_default_copy(cls): return cls()
cfg.Configuration = Configuration; sys.modules["kserve.configuration"] = cfg

CORE = re.compile(r"^V1[A-Z]")  # kubernetes core types: validated against the core schemas instead

import glob
import os
from pathlib import Path

_MODS = {}
for _p in glob.glob(f"{SDK}/kserve/models/*.py"):
    for _c in re.findall(r"^class (\w+)\(object\)", Path(_p).read_text(), re.MULTILINE):
        _MODS[_c] = os.path.basename(_p)[:-3]

# The SDK's ServingRuntimeSpec names its worker spec V1alpha1WorkerSpec; the class is V1beta1WorkerSpec.
_MODS["V1alpha1WorkerSpec"] = _MODS["V1beta1WorkerSpec"]
TRIM = {"explainer", "transformer", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "pmml",
        "lightgbm", "paddle", "huggingface", "workerSpec", "storage", "confidential", "batcher", "logger"}

def cls_for(name):
    if name == "V1alpha1WorkerSpec":
        return importlib.import_module(f"kserve.models.{_MODS[name]}").V1beta1WorkerSpec
    return getattr(importlib.import_module(f"kserve.models.{_MODS[name]}"), name)

def required(cls):
    import inspect
    src = inspect.getsource(cls)
    return sorted(set(re.findall(r"Invalid value for `(\w+)`, must not be `None`", src)))

def schema(t, seen):
    if t == "str": return {"type": "string"}
    if t == "int": return {"type": "integer", "format": "int64"}
    if t == "float": return {"type": "number"}
    if t == "bool": return {"type": "boolean"}
    if t == "object": return {"x-kubernetes-preserve-unknown-fields": True}
    m = re.match(r"^list\[(.+)\]$", t)
    if m: return {"type": "array", "items": schema(m.group(1), seen)}
    m = re.match(r"^dict\(str, (.+)\)$", t)
    if m: return {"type": "object", "additionalProperties": schema(m.group(1), seen)}
    if t in ("ResourceQuantity", "V1ResourceQuantity", "V1beta1MetricQuantity"):
        return {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    if t.startswith(("V1alpha1", "V1beta1")):
        return obj(t, seen)
    if CORE.match(t) or t.startswith(("Knative", "V1")):
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "x-llmgate-core-type": "core.v1." + t[2:]}
    if t.startswith("K8sIoApi"):
        m = re.match(r"K8sIoApi([A-Z][a-z]+)(V\d\w*?)([A-Z]\w+)$", t)
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                "x-llmgate-core-type": f"{m.group(1).lower()}.{m.group(2).lower()}.{m.group(3)}"}
    raise ValueError(t)

def obj(t, seen):
    if t in seen:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    seen = seen | {t}
    cls = cls_for(t)
    props = {}
    for attr, typ in cls.openapi_types.items():
        key = cls.attribute_map[attr]
        props[key] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True} if key in TRIM else schema(typ, seen)
    out = {"type": "object", "properties": dict(sorted(props.items()))}
    req = [cls.attribute_map[a] for a in required(cls)]
    if req: out["required"] = req
    return out

def crd(plural, kind, version, spec_type, shorts):
    spec = obj(spec_type, frozenset())
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.serving.kserve.io"},
            "spec": {"group": "serving.kserve.io", "names": {"kind": kind, "plural": plural, "shortNames": shorts},
                     "scope": "Namespaced",
                     "versions": [{"name": version, "served": True, "storage": True, "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                       "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                       "metadata": {"type": "object"}, "spec": spec,
                                       "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}}

out = sys.argv[2]
hdr = ("# Trimmed from KServe {v} (kserve/kserve, Apache-2.0): generated from the OpenAPI models of its Python SDK;\n"
       "# see pipeline/data/CRD_SCHEMAS.md.\n")
v = "0.21.0"
for fname, args in {
    "crd-inferenceservices.serving.kserve.io.yaml": ("inferenceservices", "InferenceService", "v1beta1", "V1beta1InferenceServiceSpec", ["isvc"]),
    "crd-servingruntimes.serving.kserve.io.yaml": ("servingruntimes", "ServingRuntime", "v1alpha1", "V1alpha1ServingRuntimeSpec", []),
}.items():
    doc = crd(*args)
    with open(f"{out}/{fname}", "w") as f:
        f.write(hdr.format(v=v))
        yaml.safe_dump(doc, f, sort_keys=False, width=120)
    print(fname)
