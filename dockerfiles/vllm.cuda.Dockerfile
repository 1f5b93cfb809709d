# llmgate production serving image: vLLM on the NVIDIA CUDA runtime, same structure as
# cpu.Dockerfile (builder venv → runtime, non-root, no weights, readiness helper).
#
# Every FROM is pinned by digest. CUDA_IMAGE is the multi-arch index digest of
# nvidia/cuda:12.9.1-runtime-ubuntu24.04; refresh it deliberately with
# `docker buildx imagetools inspect nvidia/cuda:12.9.1-runtime-ubuntu24.04` and review the change.
# Secrets, only ever through BuildKit secret mounts (never ARG/ENV, never COPY):
#   ca_bundle  - CA bundle for a TLS-intercepting proxy or private index (optional)
#   pip_conf   - a pip.conf carrying a private index URL with credentials (optional)
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-runtime-ubuntu24.04@sha256:1287141d283b8f06f45681b56a48a85791398c615888b1f96bfb9fc981392d98

FROM ${CUDA_IMAGE} AS builder
ARG VLLM_SPEC="vllm==0.33.0"
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=120
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
# The secret files exist only while this RUN runs; pip reads them through env vars that point at
# /run/secrets, so neither the values nor a config file holding them reach a layer.
RUN --mount=type=secret,id=ca_bundle \
    --mount=type=secret,id=pip_conf \
    --mount=type=cache,target=/root/.cache/pip,id=llmgate-pip-cuda \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    /opt/venv/bin/pip install "${VLLM_SPEC}"

FROM ${CUDA_IMAGE} AS runtime
ARG APP_UID=10001
ENV DEBIAN_FRONTEND=noninteractive
# Python itself (the venv links to it) and nothing else; no compilers in the runtime image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid "${APP_UID}" llm \
 && useradd --system --uid "${APP_UID}" --gid llm --create-home --home-dir /home/llm --shell /usr/sbin/nologin llm \
 && mkdir -p /models && chown llm:llm /models
COPY --from=builder /opt/venv /opt/venv
COPY dockerfiles/runtime/llmgate-ready /usr/local/bin/llmgate-ready
# The weights manifest the pipeline computed the release's model digest with, unchanged.
COPY pipeline/supplychain/weights_manifest.py /usr/local/lib/llmgate/weights_manifest.py
COPY dockerfiles/runtime/llmgate-serve-vllm /usr/local/bin/llmgate-serve
ENV PATH=/opt/venv/bin:/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    MODEL_PATH=/models PORT=8000 PYTHONUNBUFFERED=1 \
    HF_HOME=/home/llm/.cache/huggingface HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
# Weights come from a volume mounted read-only at $MODEL_PATH; none are in the image.
VOLUME ["/models"]
USER llm:llm
WORKDIR /home/llm
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=30s --start-period=600s --retries=3 CMD ["llmgate-ready"]
ENTRYPOINT ["llmgate-serve"]
