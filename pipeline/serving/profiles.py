"""Serving-system profiles: what differs between vLLM, TGI, SGLang and llama.cpp behind the same
OpenAI-compatible API.

One typed profile per server says how it starts, which endpoints tell "alive" and "ready", which
Prometheus names carry queue depth, running requests, KV-cache use and the latency histograms, and
what its SSE stream does differently. Everything server-specific elsewhere is derived from here:
the bench's server-metrics parsing (`pipeline.bench.server_metrics`), the KEDA trigger query and the
AnalysisTemplate queries (`pipeline.serving.kustomize`, one kustomize component per profile under
`manifests/components/profiles/`), the Grafana panels (`pipeline.serving.grafana`).

Sources, per server (documented formats; the test fixtures in tests/data/server_metrics/ follow them):
- vLLM: docs/design/metrics.md (v0/v1 metric names), the OpenAI-compatible server docs (`/health`,
  `stream_options.include_usage`);
- TGI: the "Metrics" reference page (tgi_* names; no TTFT histogram) and its Messages API docs;
- SGLang: the "Production Metrics" reference (`--enable-metrics`, sglang:* names) and `/health_generate`;
- llama.cpp: tools/server/README.md (`llamacpp:*` names, `/health`, `/metrics` with `--metrics`) for the
  C++ `llama-server`; llama-cpp-python's server (the image shipped here) serves the OpenAI routes and
  `/v1/models` but neither `/health` nor `/metrics`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import BadInput

ProfileName = Literal["vllm", "tgi", "sglang", "llamacpp"]
PROFILE_NAMES: tuple[ProfileName, ...] = ("vllm", "tgi", "sglang", "llamacpp")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricNames(_Frozen):
    """Prometheus names per figure, newest spelling first (servers renamed some across versions).

    Histograms are given by their base name (`_bucket`/`_sum`/`_count` are appended)."""

    ttft: tuple[str, ...] = ()  # histogram: time to first token
    itl: tuple[str, ...] = ()  # histogram: time per output token / inter-token latency
    e2e: tuple[str, ...] = ()  # histogram: whole request
    waiting: tuple[str, ...] = ()  # gauge: requests queued, not yet scheduled (the autoscaling signal)
    running: tuple[str, ...] = ()  # gauge: requests being generated
    kv_cache: tuple[str, ...] = ()  # gauge: KV-cache use, 0..1
    # A server without a per-token histogram: (seconds counter, tokens counter); their rates' ratio is
    # the mean time per output token.
    itl_counters: tuple[str, str] | None = None
    # Error rate: (failed-requests selector, all-requests selector), PromQL counter selectors without
    # the namespace/pod matchers (added where used). None where the server counts no failures.
    errors: tuple[str, str] | None = None

    def figure(self, name: str) -> tuple[str, ...]:
        return tuple(getattr(self, name))


class StreamQuirks(_Frozen):
    """How the server's SSE stream differs from OpenAI's."""

    done_sentinel: bool = True  # the stream ends with `data: [DONE]`
    role_chunk_first: bool = True  # the first chat chunk carries delta.role and no content
    # `stream_options: {"include_usage": true}` yields a final chunk with `usage` (and empty choices).
    usage_in_stream: bool = True
    # A base model (no chat template) on the chat endpoint: "ok", "http-error" (4xx naming the missing
    # template), or "empty" (200 and a stream with no generated text). Anything but "ok" means
    # bench/eval must use the completions endpoint for base models.
    base_model_chat: Literal["ok", "http-error", "empty"] = "http-error"
    # SSE comment lines (`: ping - <time>`) between events while a slow generation runs; a client that
    # treats every line as data breaks on them.
    keepalive_comments: bool = False
    notes: str = ""


class ServingProfile(_Frozen):
    name: ProfileName
    title: str
    # argv with {model}, {host}, {port} and {served_model_name} placeholders
    command: tuple[str, ...]
    default_port: int
    health_path: str  # alive: the process serves HTTP (liveness and startup probes)
    ready_path: str  # the model is loaded (a cheap check; the readiness helper still sends a completion)
    models_path: str = "/v1/models"
    metrics_path: str | None = "/metrics"  # None: the server exposes no Prometheus metrics
    metrics_flag: str | None = None  # what turns metrics on, where they are off by default
    completions_path: str = "/v1/completions"
    chat_path: str = "/v1/chat/completions"
    metrics: MetricNames
    stream: StreamQuirks = Field(default_factory=StreamQuirks)

    def start_argv(self, *, model: str, port: int | None = None, host: str = "0.0.0.0",
                   served_model_name: str | None = None) -> list[str]:
        values = {"model": model, "host": host, "port": str(port or self.default_port),
                  "served_model_name": served_model_name or model}
        return [part.format(**values) for part in self.command]

    def api_for_base_model(self) -> Literal["chat", "completions"]:
        """The endpoint bench and eval should use for a model without a chat template."""
        return "chat" if self.stream.base_model_chat == "ok" else "completions"

    def completion_payload(self, prompt: str, *, model: str | None, max_tokens: int, stream: bool = True,
                           temperature: float = 0.0) -> dict[str, object]:
        """A /v1/completions body this server accepts and answers with usage where it can."""
        body: dict[str, object] = {"prompt": prompt, "max_tokens": max_tokens, "stream": stream,
                                   "temperature": temperature}
        if model:
            body["model"] = model
        if stream and self.stream.usage_in_stream:
            body["stream_options"] = {"include_usage": True}
        return body


VLLM = ServingProfile(
    name="vllm",
    title="vLLM",
    command=("vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}",
             "--served-model-name", "{served_model_name}"),
    default_port=8000,
    health_path="/health",
    ready_path="/v1/models",
    metrics=MetricNames(
        ttft=("vllm:time_to_first_token_seconds",),
        itl=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        e2e=("vllm:e2e_request_latency_seconds",),
        waiting=("vllm:num_requests_waiting",),
        running=("vllm:num_requests_running",),
        kv_cache=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        # the API server's prometheus-fastapi-instrumentator counter (status grouped as 2xx/4xx/5xx)
        errors=('http_requests_total{status=~"5.."}', "http_requests_total"),
    ),
    stream=StreamQuirks(base_model_chat="http-error",
                        notes="a model without a chat template is a 400 on the chat endpoint"),
)

TGI = ServingProfile(
    name="tgi",
    title="Text Generation Inference",
    command=("text-generation-launcher", "--model-id", "{model}", "--hostname", "{host}", "--port", "{port}"),
    default_port=80,
    health_path="/health",
    ready_path="/health",  # 503 until the shard is warmed up
    metrics=MetricNames(
        # TGI exports no time-to-first-token histogram; its per-token mean and request duration remain.
        itl=("tgi_request_mean_time_per_token_duration",),
        e2e=("tgi_request_duration",),
        waiting=("tgi_queue_size",),
        running=("tgi_batch_current_size",),
        errors=("tgi_request_failure", "tgi_request_count"),
    ),
    stream=StreamQuirks(base_model_chat="http-error",
                        notes="`usage` only with stream_options.include_usage; no TTFT histogram"),
)

SGLANG = ServingProfile(
    name="sglang",
    title="SGLang",
    command=("python3", "-m", "sglang.launch_server", "--model-path", "{model}", "--host", "{host}",
             "--port", "{port}", "--served-model-name", "{served_model_name}", "--enable-metrics"),
    default_port=30000,
    health_path="/health",
    ready_path="/health_generate",  # runs a one-token generation
    metrics_flag="--enable-metrics",
    metrics=MetricNames(
        ttft=("sglang:time_to_first_token_seconds",),
        itl=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        e2e=("sglang:e2e_request_latency_seconds",),
        waiting=("sglang:num_queue_reqs",),
        running=("sglang:num_running_reqs",),
        kv_cache=("sglang:token_usage",),
        errors=("sglang:num_aborted_requests_total", "sglang:num_requests_total"),
    ),
    stream=StreamQuirks(base_model_chat="http-error"),
)

LLAMACPP = ServingProfile(
    name="llamacpp",
    title="llama.cpp (llama-cpp-python server)",
    # --interrupt_requests False: by default a new request cuts the stream being generated (one generation at
    # a time), so concurrent clients see their streams end mid-answer; queued, each is answered in full.
    command=("python3", "-m", "llama_cpp.server", "--model", "{model}", "--host", "{host}", "--port", "{port}",
             "--model_alias", "{served_model_name}", "--n_ctx", "2048", "--interrupt_requests", "False"),
    default_port=8000,
    # llama-cpp-python loads the model before it listens, so an answer on /v1/models means loaded; it
    # has no /health (the C++ llama-server has one, 503 while loading).
    health_path="/v1/models",
    ready_path="/v1/models",
    metrics_flag="--metrics (C++ llama-server only; llama-cpp-python's server has no /metrics)",
    metrics=MetricNames(
        # llama-server has counters, no latency histograms.
        itl_counters=("llamacpp:tokens_predicted_seconds_total", "llamacpp:tokens_predicted_total"),
        waiting=("llamacpp:requests_deferred",),
        running=("llamacpp:requests_processing",),
        kv_cache=("llamacpp:kv_cache_usage_ratio",),  # builds before the unified KV cache only
    ),
    stream=StreamQuirks(
        usage_in_stream=False,
        base_model_chat="empty",
        keepalive_comments=True,
        notes="streamed chunks never carry `usage` (stream_options is accepted and ignored: count tokens "
        "client-side); a base model on the chat endpoint streams a role chunk, then finish_reason stop and no "
        "text, so use /v1/completions; sse-starlette sends `: ping` comments every 15 s; without `model` in "
        "the request the stream names the GGUF path instead of the alias; a new request interrupts the running "
        "one unless the server runs with --interrupt_requests False (seen: 39 of 40 concurrent streams cut)",
    ),
)

PROFILES: dict[str, ServingProfile] = {p.name: p for p in (VLLM, TGI, SGLANG, LLAMACPP)}


def get_profile(name: str) -> ServingProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise BadInput(f"unknown serving profile {name!r} (known: {', '.join(PROFILES)})",
                       where="serving profile") from None
