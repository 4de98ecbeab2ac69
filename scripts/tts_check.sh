#!/usr/bin/env bash
# `make sglang-check`'s sibling for speech: on a host running a real TTS server, run bench/tts.py
# against it (first token -> first audio, clause vs sentence chunking, underruns, CPU per reply).
# Usage: scripts/tts_check.sh ENGINE URL [MODEL]
#   scripts/tts_check.sh openai http://127.0.0.1:8880 kokoro      # Kokoro-FastAPI
#   scripts/tts_check.sh fish http://127.0.0.1:8080                # Fish Speech tools/api_server.py
#   scripts/tts_check.sh cosyvoice http://127.0.0.1:50000 CosyVoice2-0.5B
# How to start each server: README.md, "Speech synthesis: HTTP TTS servers".
set -euo pipefail
ENGINE="${1:-}"
URL="${2:-}"
MODEL="${3:-}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "$ENGINE" || -z "$URL" ]]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
case "$ENGINE" in openai | fish | cosyvoice) ;; *) echo "tts-check: ENGINE is openai, fish or cosyvoice" >&2; exit 2 ;; esac
if ! curl -sS -o /dev/null --max-time 5 "$URL" 2>/dev/null; then
    echo "tts-check: nothing answers at $URL: start the $ENGINE server first (README.md)." >&2
    echo "tts-check: the same benchmark runs against the stand-ins with: .venv/bin/python -m bench.tts" >&2
    exit 2
fi
cd "$HERE"
ARGS=(--apis "$ENGINE" --url "$ENGINE=$URL" --replies "${TTS_CHECK_REPLIES:-12}")
if [[ -n "$MODEL" ]]; then ARGS+=(--model "$MODEL"); fi
exec .venv/bin/python -m bench.tts "${ARGS[@]}"
