"""Regenerate pipeline/data/crd-clusterpolicies.kyverno.io.yaml from Kyverno's upstream CRD.

The upstream file (kyverno/kyverno `config/crds/kyverno/kyverno.io_clusterpolicies.yaml`, ~1.4 MB) carries
two versions and long descriptions. The vendored copy keeps the served storage version (v1) with its
`spec` schema exactly as upstream writes it, descriptions removed: every property, type, enum, `required`
list and `x-kubernetes-*` marker is upstream's. `status` (written by Kyverno, never by a manifest) is left
open (`x-kubernetes-preserve-unknown-fields`), as in the other vendored CRDs. The Kubernetes API double and `llmgate manifests check` validate the
admission policy against it.

Usage: python scripts/vendor_kyverno_crd.py UPSTREAM.yaml pipeline/data/crd-clusterpolicies.kyverno.io.yaml
"""

from __future__ import annotations

import sys
from typing import Any

import yaml


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(src: str, dst: str) -> None:
    with open(src) as fh:
        crd = yaml.safe_load(fh)
    v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1" and v.get("storage"))
    schema = strip(v1["schema"]["openAPIV3Schema"])
    schema["properties"]["status"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    out = {
        "apiVersion": crd["apiVersion"],
        "kind": crd["kind"],
        "metadata": {"name": crd["metadata"]["name"]},
        "spec": {"group": crd["spec"]["group"], "names": crd["spec"]["names"], "scope": crd["spec"]["scope"],
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema},
                               "subresources": v1.get("subresources", {})}]},
    }
    with open(dst, "w") as fh:
        fh.write("# Vendored from kyverno/kyverno config/crds/kyverno/kyverno.io_clusterpolicies.yaml (v1 only,\n"
                 "# descriptions removed) by scripts/vendor_kyverno_crd.py. Apache-2.0, The Kyverno Authors.\n")
        yaml.safe_dump(out, fh, sort_keys=False, width=120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
