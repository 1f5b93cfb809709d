"""One kustomize Component per serving profile, derived from the profile so the manifests and the
bench can never name different metrics.

`manifests/components/profiles/<name>/kustomization.yaml` is this module's output (a test fails when the
checked-in file and the profile disagree; `write_components` regenerates them). The component:

- replaces the AnalysisTemplate's args and metrics with the profile's canary queries,
- replaces the KEDA trigger query with the profile's queue-depth gauge (`namespace="NAMESPACE"`: each
  overlay fills in its namespace with a `replacements` entry),
- points the server's startup and liveness probes at the profile's health endpoint and its scrape
  annotation at its metrics path, and marks the pod template with the profile name,
- for a CPU server (llama.cpp), drops the GPU request, node selector and toleration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.serving.profiles import PROFILES, ServingProfile
from pipeline.serving.queries import AnalysisQuery, analysis_queries, queue_query

COMPONENTS_DIR = Path("components") / "profiles"
ANALYSIS_TEMPLATE = "llmgate-canary-slo"
SERVER = "llmgate-server"
PROFILE_ANNOTATION = "llmgate.dev/serving-profile"
PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring.svc:9090"
CPU_ONLY = {"llamacpp"}
CPU_RESOURCES = {"requests": {"cpu": "4", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
HEADER = ("# Generated from pipeline/serving/profiles.py by pipeline.serving.kustomize.write_components;\n"
          "# change the profile, not this file (tests/test_serving_profiles.py checks they agree).\n")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def analysis_metric(q: AnalysisQuery) -> dict[str, Any]:
    bound = "{{args." + q.max_arg + "}}"
    return {
        "name": q.name,
        "interval": "1m",
        "count": 5,
        "failureLimit": 1,
        "successCondition": f"result[0] <= {bound}",
        # No data is not a pass: NaN fails.
        "failureCondition": f"result[0] > {bound} || isNaN(result[0])",
        "provider": {"prometheus": {"address": "{{args.prometheus-address}}", "timeout": 30, "query": q.query}},
    }


def analysis_patch(profile: ServingProfile) -> list[dict[str, Any]]:
    queries = analysis_queries(profile)
    args: list[dict[str, Any]] = [{"name": "namespace"}, {"name": "canary-hash"},
                                  {"name": "prometheus-address", "value": PROMETHEUS_ADDRESS}]
    args += [{"name": q.max_arg, "value": q.default_max} for q in queries]
    return [{"op": "replace", "path": "/spec/args", "value": args},
            {"op": "replace", "path": "/spec/metrics", "value": [analysis_metric(q) for q in queries]}]


def workload_patch(profile: ServingProfile) -> list[dict[str, Any]]:
    c = "/spec/template/spec/containers/0"
    ops: list[dict[str, Any]] = [
        # Index 0 must be the server container; kustomize fails the render otherwise.
        {"op": "test", "path": f"{c}/name", "value": "server"},
        {"op": "replace", "path": f"{c}/startupProbe/httpGet/path", "value": profile.health_path},
        {"op": "replace", "path": f"{c}/livenessProbe/httpGet/path", "value": profile.health_path},
        {"op": "add", "path": f"/spec/template/metadata/annotations/{_escape(PROFILE_ANNOTATION)}",
         "value": profile.name},
    ]
    if profile.metrics_path:
        ops.append({"op": "replace", "path": f"/spec/template/metadata/annotations/{_escape('prometheus.io/path')}",
                    "value": profile.metrics_path})
    if profile.name in CPU_ONLY:
        ops += [{"op": "replace", "path": f"{c}/resources", "value": CPU_RESOURCES},
                {"op": "remove", "path": "/spec/template/spec/nodeSelector"},
                {"op": "remove", "path": "/spec/template/spec/tolerations"}]
    return ops


def _patch(kind: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"target": {"kind": kind, "name": name},
            "patch": yaml.safe_dump(ops, sort_keys=False, default_flow_style=False, width=1000)}


def component(profile: ServingProfile) -> dict[str, Any]:
    workload = workload_patch(profile)
    return {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "patches": [
            _patch("AnalysisTemplate", ANALYSIS_TEMPLATE, analysis_patch(profile)),
            _patch("ScaledObject", SERVER, [{"op": "replace", "path": "/spec/triggers/0/metadata/query",
                                             "value": queue_query(profile)}]),
            _patch("Rollout", SERVER, workload),
            _patch("Deployment", SERVER, workload),
        ],
    }


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the inline patches) as literal blocks, so the file reads like a hand-written one."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def component_text(profile: ServingProfile) -> str:
    return HEADER + f"# Serving profile: {profile.title}.\n" + yaml.dump(
        component(profile), Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=1000)


def write_components(manifests_dir: Path) -> list[Path]:
    written = []
    for profile in PROFILES.values():
        path = Path(manifests_dir) / COMPONENTS_DIR / profile.name / "kustomization.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(component_text(profile))
        written.append(path)
    return written


# -- Prometheus Adapter (HPA on queue depth, the alternative to KEDA) ------------------------------
ADAPTER_DIR = Path("monitoring") / "prometheus-adapter"
QUEUE_METRIC = "llmgate_requests_waiting"


def queue_series_regex() -> str:
    return "|".join(n for p in PROFILES.values() for n in p.metrics.waiting)


def adapter_rules() -> dict[str, Any]:
    """prometheus-adapter `rules`: every profile's queue gauge exposed as one per-pod custom metric, so
    one HPA works whichever server the pods run."""
    names = queue_series_regex()
    return {"rules": [{
        "seriesQuery": f'{{__name__=~"{names}",namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "^.*$", "as": QUEUE_METRIC},
        # Every spelling under one name: a namespace runs one kind of server, so one series matches.
        "metricsQuery": f'sum({{__name__=~"{names}",<<.LabelMatchers>>}}) by (<<.GroupBy>>)',
    }]}


def adapter_configmap() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "prometheus-adapter-llmgate", "namespace": "monitoring",
                     "labels": {"app.kubernetes.io/part-of": "llmgate"}},
        "data": {"config.yaml": yaml.dump(adapter_rules(), Dumper=_BlockDumper, sort_keys=False, width=1000)},
    }


def write_adapter(manifests_dir: Path) -> Path:
    path = Path(manifests_dir) / ADAPTER_DIR / "configmap.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "# prometheus-adapter rules (its `--config` file): queue depth per pod for the HPA in\n"
                    "# components/autoscaling-hpa. Mount it as the adapter's config.yaml.\n"
                    + yaml.dump(adapter_configmap(), Dumper=_BlockDumper, sort_keys=False, width=1000))
    return path


def write_assets(manifests_dir: Path) -> list[Path]:
    """Every manifest derived from the profiles: the components, the adapter rules, the dashboards."""
    from pipeline.serving.grafana import write_dashboards

    return [*write_components(manifests_dir), write_adapter(manifests_dir), *write_dashboards(manifests_dir)]
