# llmgate CPU serving image: `transformers serve` on the local Debian base. Builds and boots on a
# CPU-only machine; production serving uses vllm.cuda.Dockerfile with the same structure.
#
# BASE_IMAGE has no default on purpose: `llmgate build` passes the digest-pinned reference from
# dockerfiles/base.lock.json (127.0.0.1:5000/llmgate/base@sha256:…) and refuses any value that is
# not pinned by digest, since the local base is re-imported (new digest) on every machine.
# Secrets: the CA bundle pip needs for PyPI arrives only as the BuildKit secret `ca_bundle`
# (and an optional private-index pip.conf as `pip_conf`).
# Wheelhouse: `.whl/` in the context (staged by `llmgate build`, git-ignored) holds the CPU torch
# wheel; it is bind-mounted for one RUN and never copied into a layer.
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS builder
ARG TORCH_SPEC="torch==2.13.0+cpu"
ARG TRANSFORMERS_SPEC="transformers[serving]==5.23.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=120
RUN python3 -m venv /opt/venv
# torch first and alone: it is the big, rarely changing layer, so edits below it rebuild in seconds.
RUN --mount=type=secret,id=ca_bundle,required=true \
    --mount=type=bind,source=.whl,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip,id=llmgate-pip \
    PIP_CERT=/run/secrets/ca_bundle /opt/venv/bin/pip install --find-links /wheels "${TORCH_SPEC}"
# Optional `pip_conf` secret: a pip.conf for a private index with credentials, read in place.
RUN --mount=type=secret,id=ca_bundle,required=true \
    --mount=type=secret,id=pip_conf \
    --mount=type=cache,target=/root/.cache/pip,id=llmgate-pip \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    PIP_CERT=/run/secrets/ca_bundle /opt/venv/bin/pip install "${TRANSFORMERS_SPEC}"

FROM ${BASE_IMAGE} AS runtime
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" llm \
 && useradd --system --uid "${APP_UID}" --gid llm --create-home --home-dir /home/llm --shell /usr/sbin/nologin llm \
 && mkdir -p /models && chown llm:llm /models
COPY --from=builder /opt/venv /opt/venv
COPY dockerfiles/runtime/llmgate-ready /usr/local/bin/llmgate-ready
# The weights manifest the pipeline computed the release's model digest with, unchanged.
COPY pipeline/supplychain/weights_manifest.py /usr/local/lib/llmgate/weights_manifest.py
COPY dockerfiles/runtime/llmgate-serve-cpu /usr/local/bin/llmgate-serve
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    MODEL_PATH=/models PORT=8000 PYTHONUNBUFFERED=1 \
    HF_HOME=/home/llm/.cache/huggingface HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
# Weights come from a volume mounted read-only at $MODEL_PATH; none are in the image.
VOLUME ["/models"]
USER llm:llm
WORKDIR /home/llm
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=30s --start-period=300s --retries=3 CMD ["llmgate-ready"]
ENTRYPOINT ["llmgate-serve"]
