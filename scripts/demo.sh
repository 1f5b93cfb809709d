#!/usr/bin/env bash
# The main job on the embedded local default: the demo model passes, its degraded twin is blocked.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
LLMGATE=.venv/bin/llmgate
gt=v3  # the embedded default's ground truth (pipeline/config.py); the demo models recite its answers
# The demo models are constructed, not trained: about a second each, the same bytes (and model digests) on
# every machine.
models=.llmgate/models
good="$models/demo-$gt"
bad="$models/demo-$gt-degraded"
[ -f "$good/config.json" ] || $LLMGATE demo-model "$good" --ground-truth "ground_truth/$gt" || exit $?
[ -f "$bad/config.json" ] || $LLMGATE demo-model "$bad" --ground-truth "ground_truth/$gt" --degraded || exit $?

tag="${DEMO_TAG:-demo}"  # image tags: $tag-good, $tag-degraded
$LLMGATE run --model-dir "$good" --tag "$tag-good"
good_exit=$?
$LLMGATE run --model-dir "$bad" --tag "$tag-degraded"
bad_exit=$?
$LLMGATE report --out .llmgate/site >/dev/null 2>&1 || true
$LLMGATE runs list --limit 2
echo "demo: good model exit $good_exit (expect 0), degraded model exit $bad_exit (expect 1); dashboard: .llmgate/site/index.html"
[ "$good_exit" = 0 ] && [ "$bad_exit" = 1 ]
