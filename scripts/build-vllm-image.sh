#!/usr/bin/env bash
# Build the production vLLM image (dockerfiles/vllm.cuda.Dockerfile) once, on the pinned local base.
# Not part of CI: it downloads several GB of wheels (vLLM, torch and the nvidia-* CUDA runtime wheels).
#
# The nvidia/cuda base cannot be pulled where no image registry is reachable; vLLM's PyPI wheels bring
# the CUDA runtime libraries with them (torch's nvidia-* wheels) and the driver comes from the host at
# run time (the NVIDIA container runtime mounts libcuda.so.1), so CUDA_IMAGE is set to the digest-pinned
# Debian base from dockerfiles/base.lock.json.
#
# Usage: scripts/build-vllm-image.sh [IMAGE_TAG]   (default 127.0.0.1:5000/llmgate/server-vllm:dev)
# Env:   MIN_FREE_GB (40): refuse to start with less free disk; PUSH=1 pushes the result.
# Prints the build time, the image size and, with PUSH=1, the pushed digest.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-127.0.0.1:5000/llmgate/server-vllm:dev}"
MIN_FREE_GB="${MIN_FREE_GB:-40}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

BASE=$(python3 -c 'import json; d = json.load(open("dockerfiles/base.lock.json")); print(d["repository"] + "@" + d["digest"])')
free_gb=$(df -Pk / | awk 'NR == 2 { print int($4 / 1024 / 1024) }')
if [ "$free_gb" -lt "$MIN_FREE_GB" ]; then
  echo "build-vllm-image: only ${free_gb} GB free on /, need ${MIN_FREE_GB} GB (the image and its build cache are large)" >&2
  exit 3
fi
# A BuildKit-capable client: buildx where installed, else a classic (< 23) docker with DOCKER_BUILDKIT=1.
if docker buildx version >/dev/null 2>&1; then
  build=(docker buildx build --load)
else
  build=(env DOCKER_BUILDKIT=1 docker build)
  for d in /usr/bin/docker /usr/local/bin/docker; do
    if [ -x "$d" ] && ! "$d" buildx version >/dev/null 2>&1; then build=(env DOCKER_BUILDKIT=1 "$d" build); break; fi
  done
fi
secrets=()
[ -s "$CA_BUNDLE" ] && secrets+=(--secret "id=ca_bundle,src=$CA_BUNDLE")

start=$(date +%s)
"${build[@]}" --progress=plain --network host -f dockerfiles/vllm.cuda.Dockerfile \
  --build-arg "CUDA_IMAGE=$BASE" "${secrets[@]}" -t "$TAG" .
end=$(date +%s)
size=$(docker image inspect "$TAG" --format '{{.Size}}')
echo "build-vllm-image: built $TAG in $((end - start)) s, image size $((size / 1000000)) MB (base $BASE)"
if [ "${PUSH:-0}" = "1" ]; then
  docker push "$TAG" | tail -1
fi
