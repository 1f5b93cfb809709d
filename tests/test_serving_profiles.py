"""Serving profiles against each server's real /metrics text and SSE shapes, and the manifests and
dashboards derived from them (tests/data/server_metrics/README.md says where the fixtures come from)."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipeline.bench import server_metrics
from pipeline.bench.client import stream_request
from pipeline.errors import BadInput
from pipeline.manifests.render import render
from pipeline.serving import grafana, kustomize
from pipeline.serving.profiles import PROFILE_NAMES, PROFILES, get_profile
from pipeline.serving.queries import analysis_queries, queue_query, with_matchers

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data" / "server_metrics"
MANIFESTS = REPO / "manifests"


def snapshot(name: str) -> dict[str, float]:
    return server_metrics.parse((FIXTURES / f"{name}.prom").read_text())


# -- profiles -------------------------------------------------------------------------------------
def test_every_profile_is_complete_and_typed() -> None:
    assert set(PROFILES) == set(PROFILE_NAMES) == {"vllm", "tgi", "sglang", "llamacpp"}
    for p in PROFILES.values():
        assert p.metrics.waiting and p.metrics.running, p.name  # the autoscaling signal and load
        assert p.metrics.ttft or p.metrics.itl or p.metrics.itl_counters, p.name  # a latency for the canary
        assert p.health_path.startswith("/") and p.ready_path.startswith("/")
        argv = p.start_argv(model="/models", port=9000, served_model_name="m")
        assert "/models" in argv and "9000" in argv and not any("{" in a for a in argv)
    with pytest.raises(BadInput, match="unknown serving profile 'ollama'"):
        get_profile("ollama")


def test_llamacpp_quirks_pick_completions_and_no_stream_usage() -> None:
    llama, vllm = get_profile("llamacpp"), get_profile("vllm")
    assert llama.api_for_base_model() == "completions" and llama.stream.base_model_chat == "empty"
    body = llama.completion_payload("Hi", model="gemma", max_tokens=4)
    assert body == {"prompt": "Hi", "max_tokens": 4, "stream": True, "temperature": 0.0, "model": "gemma"}
    assert vllm.completion_payload("Hi", model=None, max_tokens=4)["stream_options"] == {"include_usage": True}
    assert llama.health_path == "/v1/models"  # llama-cpp-python has no /health


# -- /metrics --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_each_servers_metrics_are_recognised_and_read(name: str) -> None:
    snap = snapshot(name)
    engine, names = server_metrics.detect(snap)
    assert engine == name
    p = PROFILES[name]
    # the same quantities in every fixture: 3 running, 2 waiting
    assert snap[names["running"]] == 3 and snap[names["waiting"]] == 2
    assert set(names) >= {"waiting", "running", "itl"}
    assert ("ttft" in names) == bool(p.metrics.ttft)
    # restricted to its own profile, the same names; another profile's names are not taken
    assert server_metrics.detect(snap, p) == (name, names)
    other = next(q for q in PROFILES.values() if q.name != name)
    assert server_metrics.detect(snap, other) == (other.name, {})


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_cross_check_over_the_measured_window(name: str) -> None:
    after = snapshot(name)
    _, names = server_metrics.detect(after)
    before = {k: 0.0 for k in after}
    xc = server_metrics.cross_check(before, after, {"ttft": 0.15, "itl": 0.03}, {"waiting": [0, 2, 1]},
                                    get_profile(name))
    assert xc["engine"] == name
    # 6400 tokens in 128 s (llama.cpp's counters), or the histograms' means
    assert xc["server_itl_mean_s"] == pytest.approx(0.02, rel=0.02)
    if "ttft" in names:
        assert xc["server_ttft_mean_s"] == pytest.approx(0.12)
        assert xc["client_minus_server_ttft_s"] == pytest.approx(0.03)
    else:
        assert "server_ttft_mean_s" not in xc
    assert xc["waiting_max"] == 2


def test_parse_keeps_label_values_with_braces_and_quotes() -> None:
    text = ('m{path="/a}b",q="x\\"y"} 2\nm{path="/c"} 3 1767225600000\n# EOF\n')
    assert server_metrics.parse(text) == {"m": 5.0}


# -- queries, components, dashboards -------------------------------------------------------------------
def test_queries_name_each_profiles_metrics() -> None:
    assert queue_query(get_profile("tgi"), "ns") == 'sum(tgi_queue_size{namespace="ns"})'
    assert with_matchers('http_requests_total{status=~"5.."}', 'a="b"') == 'http_requests_total{status=~"5..", a="b"}'
    names = {p: [q.name for q in analysis_queries(get_profile(p))] for p in PROFILE_NAMES}
    assert names == {"vllm": ["ttft-p99", "error-rate"], "tgi": ["tpot-p99", "error-rate"],
                     "sglang": ["ttft-p99", "error-rate"], "llamacpp": ["tpot-mean"]}


def test_checked_in_assets_match_the_profiles(tmp_path: Path) -> None:
    """components/profiles/*, the Prometheus Adapter rules and the dashboards are generated; a hand edit
    (or a profile change without regenerating) fails here."""
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    for path in kustomize.write_assets(copy):
        rel = path.relative_to(copy)
        assert path.read_text() == (MANIFESTS / rel).read_text(), f"{rel} is stale: run write_assets"


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_dashboard_panels_use_the_profiles_metrics(name: str) -> None:
    dash = json.loads((MANIFESTS / grafana.dashboard_path(get_profile(name))).read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    p = get_profile(name)
    for fig in ("waiting", "running", "kv_cache"):
        for metric in p.metrics.figure(fig):
            assert metric in exprs
    others = [m for q in PROFILES.values() if q.name != name for f in server_metrics.FIGURES
              for m in q.metrics.figure(f)]
    assert not [m for m in others if m in exprs]
    assert "llmgate_gate_value" in exprs


@pytest.mark.parametrize("name", ["tgi", "sglang", "llamacpp"])
def test_profile_overlay_renders_with_the_profiles_queries(name: str) -> None:
    objs = render(MANIFESTS / "overlays" / f"canary-{name}")
    p = get_profile(name)
    so = next(o for o in objs if o["kind"] == "ScaledObject")
    assert so["spec"]["triggers"][0]["metadata"]["query"] == queue_query(p, f"llmgate-canary-{name}")
    at = next(o for o in objs if o["kind"] == "AnalysisTemplate")
    assert [m["provider"]["prometheus"]["query"] for m in at["spec"]["metrics"]] == [
        q.query for q in analysis_queries(p)]
    rollout = next(o for o in objs if o["kind"] == "Rollout")
    server = rollout["spec"]["template"]["spec"]["containers"][0]
    assert server["startupProbe"]["httpGet"]["path"] == p.health_path
    assert rollout["spec"]["template"]["metadata"]["annotations"]["llmgate.dev/serving-profile"] == name
    if name == "llamacpp":  # a CPU server: no GPU request, no GPU scheduling
        assert "nvidia.com/gpu" not in server["resources"]["requests"]
        assert "nodeSelector" not in rollout["spec"]["template"]["spec"]


def test_prometheus_adapter_rule_covers_every_profile() -> None:
    doc = yaml.safe_load((MANIFESTS / "monitoring" / "prometheus-adapter" / "configmap.yaml").read_text())
    rules = yaml.safe_load(doc["data"]["config.yaml"])["rules"]
    (rule,) = rules
    assert rule["name"]["as"] == kustomize.QUEUE_METRIC
    for p in PROFILES.values():
        assert p.metrics.waiting[0] in rule["seriesQuery"] and p.metrics.waiting[0] in rule["metricsQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


# -- SSE shapes ------------------------------------------------------------------------------------
class _Replay:
    """Serves one recorded SSE body for any POST (a loopback server; the bytes are the fixture's)."""

    def __init__(self, body: bytes) -> None:
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(replay.body)))
                self.end_headers()
                self.wfile.write(replay.body)

        self.body = body
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


SSE = {"vllm": "vllm-chat.txt", "tgi": "tgi-chat.txt", "sglang": "sglang-chat.txt",
       "llamacpp": "llamacpp-completions.txt"}


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_stream_shapes_match_the_profile_quirks(name: str) -> None:
    p = get_profile(name)
    body = (FIXTURES / "sse" / SSE[name]).read_bytes()
    events = [e[len("data: "):] for e in body.decode().split("\n\n") if e.startswith("data: ")]
    assert (events[-1] == "[DONE]") == p.stream.done_sentinel
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    assert any(isinstance(c.get("usage"), dict) for c in chunks) == p.stream.usage_in_stream
    # the bench client reads every one of them: TTFT from the first content, tokens from usage or counted
    replay = _Replay(body)
    try:
        async def go() -> Any:
            async with httpx.AsyncClient(trust_env=False) as client:
                return await stream_request(client, replay.url + "/v1/x", {"max_tokens": 5, "stream": True})

        sample = asyncio.run(go())
    finally:
        replay.close()
    assert sample.ok, sample.error
    assert sample.ttft_s is not None and sample.text
    assert sample.tokens_source == ("usage" if p.stream.usage_in_stream else "chunks")
    assert sample.finish_reason == "length"


def test_llamacpp_base_model_chat_streams_no_text() -> None:
    """Recorded from the llama.cpp image: the chat endpoint on a base model answers 200 with a role chunk
    and finish_reason stop, and no text: why the profile sends base models to /v1/completions."""
    body = (FIXTURES / "sse" / "llamacpp-chat-base-model.txt").read_bytes()
    replay = _Replay(body)
    try:
        async def go() -> Any:
            async with httpx.AsyncClient(trust_env=False) as client:
                return await stream_request(client, replay.url + "/v1/chat/completions", {"max_tokens": 8})

        sample = asyncio.run(go())
    finally:
        replay.close()
    assert sample.error == "no content in stream" and sample.finish_reason == "stop"
    assert get_profile("llamacpp").stream.base_model_chat == "empty"
    recorded = (FIXTURES / "sse" / "llamacpp-completions.txt").read_text()
    assert (": ping" in recorded) == get_profile("llamacpp").stream.keepalive_comments
