"""Grafana dashboards per serving profile: the gate panels (llmgate's own exported metrics) as they are,
the live serving panels (TTFT, TPOT, E2E, running/waiting, KV cache) from the profile's metric names.

`manifests/monitoring/grafana-dashboard.json` is the vLLM one and the template of the others
(`grafana-dashboard-<profile>.json`); `write_dashboards` regenerates all of them from it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pipeline.serving.profiles import PROFILES, ServingProfile

MONITORING = Path("monitoring")
TEMPLATE = MONITORING / "grafana-dashboard.json"
# Profiles whose metrics carry the served model's name as `model_name`.
MODEL_LABEL = {"vllm", "sglang"}
SERVING_PANELS = {4, 5, 6, 7, 8}
WINDOW = "5m"


def dashboard_path(profile: ServingProfile) -> Path:
    return TEMPLATE if profile.name == "vllm" else MONITORING / f"grafana-dashboard-{profile.name}.json"


def _selector(profile: ServingProfile) -> str:
    return '{model_name=~"$model"}' if profile.name in MODEL_LABEL else ""


def _target(ref: str, expr: str, legend: str) -> dict[str, Any]:
    return {"refId": ref, "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr,
            "legendFormat": legend}


def _quantile(q: float, names: tuple[str, ...], sel: str) -> str:
    # `or` across spellings: whichever the running server version exports is plotted.
    inner = " or ".join(f"rate({n}_bucket{sel}[{WINDOW}])" for n in names)
    return f"histogram_quantile({q:g}, sum by (le) ({inner}))"


def _gauge(agg: str, names: tuple[str, ...], sel: str) -> str:
    return " or ".join(f"{agg}({n}{sel})" for n in names)


def serving_targets(profile: ServingProfile, panel_id: int) -> tuple[list[tuple[str, str]], str]:
    """(expr, legend) pairs of the live series for one serving panel, and a note when there are none."""
    m, sel, title = profile.metrics, _selector(profile), profile.title
    if panel_id == 4:
        if not m.ttft:
            return [], f"{title} exports no TTFT histogram"
        return [(_quantile(0.99, m.ttft, sel), "live p99"), (_quantile(0.5, m.ttft, sel), "live p50")], ""
    if panel_id == 5:
        if m.itl:
            return [(_quantile(0.99, m.itl, sel), "live p99"), (_quantile(0.5, m.itl, sel), "live p50")], ""
        if m.itl_counters:
            secs, toks = m.itl_counters
            return [(f"sum(rate({secs}{sel}[{WINDOW}])) / sum(rate({toks}{sel}[{WINDOW}]))", "live mean")], ""
        return [], f"{title} exports no per-token latency"
    if panel_id == 6:
        if not m.e2e:
            return [], f"{title} exports no request-latency histogram"
        return [(_quantile(0.99, m.e2e, sel), "live p99"), (_quantile(0.5, m.e2e, sel), "live p50")], ""
    if panel_id == 7:
        out = []
        if m.running:
            out.append((_gauge("sum", m.running, sel), "running"))
        if m.waiting:
            out.append((_gauge("sum", m.waiting, sel), "waiting"))
        return out, "" if out else f"{title} exports no queue gauges"
    if panel_id == 8:
        if not m.kv_cache:
            return [], f"{title} exports no KV-cache gauge"
        return [(_gauge("avg", m.kv_cache, sel), "KV-cache use")], ""
    raise ValueError(panel_id)


def dashboard(template: dict[str, Any], profile: ServingProfile) -> dict[str, Any]:
    d = copy.deepcopy(template)
    d["uid"] = "llmgate-gates" if profile.name == "vllm" else f"llmgate-gates-{profile.name}"
    d["title"] = f"llmgate: gate results per tag and {profile.title} serving metrics"
    d["tags"] = ["llmgate", profile.name]
    d["description"] = (f"Gate values exported by `llmgate export prometheus` (textfile or Pushgateway) next to "
                        f"{profile.title}'s serving metrics (serving profile `{profile.name}`).")
    variables = [v for v in d["templating"]["list"] if v.get("name") != "model"]
    if profile.name in MODEL_LABEL and profile.metrics.running:
        model_var = next(v for v in template["templating"]["list"] if v.get("name") == "model")
        model_var = copy.deepcopy(model_var)
        model_var["query"] = f"label_values({profile.metrics.running[0]}, model_name)"
        variables.append(model_var)
    d["templating"]["list"] = variables
    for panel in d["panels"]:
        if panel["id"] not in SERVING_PANELS:
            continue
        gates = [t for t in panel.get("targets", []) if "llmgate_" in t.get("expr", "")]
        live, note = serving_targets(profile, panel["id"])
        targets = [dict(t) for t in gates] + [_target("", e, legend) for e, legend in live]
        for i, t in enumerate(targets):
            t["refId"] = chr(ord("A") + i)
        panel["targets"] = targets
        panel.pop("description", None)
        if note:
            panel["description"] = note
    return d


def dashboard_text(template: dict[str, Any], profile: ServingProfile) -> str:
    return json.dumps(dashboard(template, profile), indent=2, ensure_ascii=False) + "\n"


def write_dashboards(manifests_dir: Path) -> list[Path]:
    template = json.loads((Path(manifests_dir) / TEMPLATE).read_text())
    written = []
    for profile in PROFILES.values():
        path = Path(manifests_dir) / dashboard_path(profile)
        path.write_text(dashboard_text(template, profile))
        written.append(path)
    return written
