"""Serving targets a run can be for: which image to build and how to ask its server.

`transformers` is the embedded default (dockerfiles/cpu.Dockerfile, `transformers serve`, the demo
model). `llamacpp` is llama.cpp's OpenAI-compatible server (dockerfiles/llamacpp.Dockerfile) serving a
GGUF base model: asked through /v1/completions (its chat endpoint answers nothing for a model without a
chat template), ready when /v1/models answers, no Prometheus metrics, one generation at a time (so
bench and eval ask one request at a time). Its quality is judged against its
own promoted baseline (target `canary-llamacpp`, policy gates.llamacpp.yaml), never against the demo
model's thresholds.
"""

from __future__ import annotations

from typing import Literal

from pipeline.config import PipelineConfig
from pipeline.errors import BadInput
from pipeline.serving.profiles import get_profile

ServerName = Literal["transformers", "llamacpp"]
SERVERS: tuple[str, ...] = ("transformers", "llamacpp")


def apply_server(cfg: PipelineConfig, server: str) -> PipelineConfig:
    """`cfg` for `server`'s image and API; the embedded default is left as it is."""
    if server not in SERVERS:
        raise BadInput(f"unknown server {server!r}; known: {', '.join(SERVERS)}", where="--server")
    if server == "transformers":
        return cfg
    profile = get_profile(server)
    registry = cfg.build.repository.split("/", 1)[0]
    cfg.build.dockerfile = "dockerfiles/llamacpp.Dockerfile"
    cfg.build.repository = f"{registry}/llmgate/server-llamacpp"
    cfg.build.wheels = []  # no torch in this image
    cfg.boot.readiness_path = profile.ready_path
    cfg.boot.api = profile.api_for_base_model()
    cfg.bench.metrics_path = profile.metrics_path or ""
    # llama-cpp-python's server generates one answer at a time (others wait in its queue), so a client at
    # concurrency N measures N - 1 answers of queueing in every TTFT; one at a time measures the server.
    cfg.bench.concurrency = cfg.eval.concurrency = 1
    cfg.bench.slo_ttft_s = 1.0  # a CPU, two cores: the demo default's 0.5 s is a GPU server's SLO
    cfg.target = "canary-llamacpp"
    cfg.gates_file = "gates.llamacpp.yaml"
    return cfg
