#!/usr/bin/env bash
# `make sglang-check`: on a GPU host with SGLang installed, launch SGLang with the flags Hark needs
# (DESIGN.md) and run the speculation benchmark, the tool-call check (bench/tool_check.py: both
# engines, Qwen's tools template, calls parsed) and the LLM's P(end of turn) on finished and cut
# sentences (bench/llm_turn_check.py, issue 11) against the real thing.
# Usage: scripts/sglang_check.sh [MODEL_PATH] (default Qwen/Qwen3-4B-Instruct-2507)
set -euo pipefail
MODEL="${1:-${SGLANG_MODEL:-Qwen/Qwen3-4B-Instruct-2507}}"
PORT="${SGLANG_PORT:-30000}"
PYTHON="${SGLANG_PYTHON:-python3}"
# the OpenAI route's tool-call parser for Qwen2.5/Qwen3 (`qwen25`; newer SGLang docs call it `qwen`)
TOOL_PARSER="${SGLANG_TOOL_PARSER:-qwen25}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "sglang-check: no GPU here. SGLang needs a GPU host; this check cannot run on this machine." >&2
    echo "sglang-check: the same benchmark runs against the simulator with: make bench-speculation" >&2
    exit 2
fi
if ! "$PYTHON" -c "import sglang" >/dev/null 2>&1; then
    echo "sglang-check: SGLang is not installed for $PYTHON (pip install 'sglang[all]' on the GPU host)." >&2
    exit 2
fi

LOG="$(mktemp -t sglang-check.XXXX.log)"
"$PYTHON" -m sglang.launch_server --model-path "$MODEL" --host 127.0.0.1 --port "$PORT" \
    --enable-metrics --enable-cache-report --enable-priority-scheduling --radix-eviction-policy priority \
    --tool-call-parser "$TOOL_PARSER" >"$LOG" 2>&1 &
SGLANG_PID=$!
trap 'kill $SGLANG_PID 2>/dev/null || true' EXIT
echo "sglang-check: launched SGLang ($MODEL) on 127.0.0.1:$PORT, log $LOG; waiting for /health"
for _ in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 $SGLANG_PID 2>/dev/null; then echo "sglang-check: SGLang exited:"; tail -40 "$LOG"; exit 1; fi
    sleep 1
done
cd "$HERE"
# every check runs even when one before it failed; the exit status says whether any did
FAILED=0
.venv/bin/python -m bench.speculation --url "http://127.0.0.1:$PORT" || FAILED=1
# SGLang serves the model under its path unless --served-model-name says otherwise
.venv/bin/python -m bench.tool_check --url "http://127.0.0.1:$PORT" --model "$MODEL" || FAILED=1
# the end-of-turn signal of semantic turn detection: P(<|im_end|>) after the user's words so far
.venv/bin/python -m bench.llm_turn_check --url "http://127.0.0.1:$PORT" \
    --json "${SGLANG_TURN_JSON:-/tmp/llm-turn-check.json}" || FAILED=1
exit $FAILED
