#!/usr/bin/env bash
# Set-up on a fresh Debian machine: system packages, the Python environment and the local stack
# (Docker Engine, OCI registry on 127.0.0.1:5000, pinned base image). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  # postgresql: the store tests also run against a throwaway cluster (scripts/throwaway-postgres.sh)
  # shellcheck: actionlint checks the workflow's run: scripts with it (tests/test_dagger_module.py)
  for pkg in docker.io docker-registry debootstrap chromium git prometheus-pushgateway postgresql shellcheck; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  command -v kubectl >/dev/null || need+=(kubectl)
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The lock file pins the whole transitive set that is known to import together.
.venv/bin/pip install -q --disable-pip-version-check -c requirements.lock -e ".[all,dev]"

# Starts dockerd and the registry if they are not running and seeds the base image (idempotent).
.venv/bin/llmgate stack up --install

# The embedded default signs releases with a local key pair in cosign's format (password: COSIGN_PASSWORD,
# empty when unset). CI and production name their own key in llmgate.yaml (sign.key).
[ -f .llmgate/keys/cosign.key ] || .venv/bin/llmgate keys generate --out .llmgate/keys
