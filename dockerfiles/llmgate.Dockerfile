# llmgate's own tool image: the `llmgate` CLI with its scorers, plus trivy and cosign, for running the
# stage clients (scan, sign, bench, eval, gate, promote) in CI next to the server under test.
# Every FROM is pinned by digest; trivy and cosign come out of their publishers' pinned images.
FROM aquasec/trivy:0.69.3@sha256:bcc376de8d77cfe086a917230e818dc9f8528e3c852f7b1aff648949b6258d1c AS trivy
FROM gcr.io/projectsigstore/cosign:v3.0.6@sha256:de9c65609e6bde17e6b48de485ee788407c9502fa08b8f4459f595b21f56cd00 AS cosign

FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b AS builder
RUN python -m venv /opt/llmgate
COPY pyproject.toml README.md /src/
COPY pipeline /src/pipeline
COPY evals /src/evals
# A private index or CPU-only torch mirror comes in as a pip.conf secret, never as a layer.
RUN --mount=type=secret,id=pip_conf,target=/etc/pip.conf \
    --mount=type=cache,target=/root/.cache/pip \
    /opt/llmgate/bin/pip install "/src[all]"

FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home llmgate
COPY --from=trivy /usr/local/bin/trivy /usr/local/bin/trivy
COPY --from=cosign /ko-app/cosign /usr/local/bin/cosign
COPY --from=builder /opt/llmgate /opt/llmgate
ENV PATH=/opt/llmgate/bin:$PATH RAGAS_DO_NOT_TRACK=true HF_HUB_OFFLINE=1
USER 10001
WORKDIR /work
ENTRYPOINT ["llmgate"]
