#!/usr/bin/env bash
# The main job on the embedded local default: the demo model passes, its degraded twin is blocked.
set -uo pipefail
cd "$(dirname "$0")/.."
LLMGATE=.venv/bin/llmgate
models=.llmgate/models
[ -f "$models/demo/config.json" ] || $LLMGATE demo-model "$models/demo" || exit $?
[ -f "$models/demo-degraded/config.json" ] || $LLMGATE demo-model "$models/demo-degraded" --degraded || exit $?

$LLMGATE run --model-dir "$models/demo" --tag demo-good
good=$?
$LLMGATE run --model-dir "$models/demo-degraded" --tag demo-degraded
degraded=$?
$LLMGATE report --out .llmgate/site >/dev/null 2>&1 || true
echo "demo: good model exit $good (expect 0), degraded model exit $degraded (expect 1); dashboard: .llmgate/site/index.html"
[ "$good" = 0 ] && [ "$degraded" = 1 ]
