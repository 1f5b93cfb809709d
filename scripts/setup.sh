#!/usr/bin/env bash
# Set-up on a fresh Debian machine: system packages, the Python environment and the local stack
# (Docker Engine, OCI registry on 127.0.0.1:5000, pinned base image). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  for pkg in docker.io docker-registry debootstrap chromium git prometheus-pushgateway; do
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
