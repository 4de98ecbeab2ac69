"""How many sessions this server takes by default: the ASR workers times what one of them carries.

`--max-sessions 0` (the default) means this number. It comes from measurements on a 2-core x86_64
machine (docs/performance.md, "Many sessions", "FunASR", "funasr batched" and "Hardening"): one
pocketsphinx worker process on one core held 4 sessions of the embedded pipeline within the latency
SLO in a 40 s step (5 did not) but not over 100 s (p95 1.9 s), so 3 (re-measured 2026-12-01:
decoding costs ~0.13 CPU s per second of speech, and the 12 measured in November is not
reproducible; with the load client on the same 2 cores, 5-6 held); one FunASR paraformer-streaming
worker (one core) held the real-time streams of its runtime's row below (issue 17: the runtime
`--asr-runtime` chooses, `auto` resolved as the engine resolves it; the "held in real time" figure,
not the higher "by CPU" one); the ingest path (`--asr none`: VAD only) held 500 on one core. A
faster machine carries more: measure it with `hark-loadtest --find-capacity` and set
`--max-sessions`. Beyond the count, admission also refuses while the server is late (the event-loop lag,
frame-wait and recognizer-lag signals, server/context.py) or the ASR engine says it is at capacity.
"""

from __future__ import annotations

from .asr.registry import worker_count
from .config import ServerConfig

# sessions one ASR worker carries within the SLO, measured (docs/performance.md)
SESSIONS_PER_ASR_WORKER = {
    "pocketsphinx": 3,
    "funasr-window": 4,  # not measured on its own: the "FunASR" section's paraformer torch figure, same size
}
# funasr-paraformer-streaming per runtime (the batched host): real-time streams one worker (one core,
# one thread) held with the p95 chunk latency under 600 ms, 2026-12-01 (`python -m bench.funasr
# --sections funasr-batch`, docs/performance.md "funasr batched": torch batched 1, onnx fp32 4, onnx int8
# 6; 2, 6 and 8 streams broke). The "FunASR" section measured torch at 4 on a quicker day, so torch
# takes 2, between the two days and under its CPU bound; the others are today's counts, the cautious
# side (the CPU cost allows 2.8, 4.6 and 6.5). The recognizer-lag guard refuses past what a slower
# machine holds.
PARAFORMER_SESSIONS_PER_WORKER = {
    "torch": 2,
    "onnx": 4,
    "onnx-int8": 6,
}
SESSIONS_WITHOUT_ASR = 500  # --asr none: one core of batched VAD
UNKNOWN_ENGINE_SESSIONS_PER_WORKER = 4  # an engine registered without a measurement: the cautious figure


def asr_worker_count(config: ServerConfig) -> int:
    """The workers the ASR engine starts (the engines' own rule for `--asr-workers 0`)."""
    return worker_count(config)


def paraformer_runtime(config: ServerConfig) -> str:
    """The runtime funasr-paraformer-streaming runs on: `--asr-runtime`, auto decided as the engine
    decides it (the same cached choice); torch where the model cannot be resolved (the engine then
    fails to start with the reason)."""
    from .asr.funasr import DEFAULT_STREAMING_MODEL
    from .asr.funasr_load import ModelLoadError, resolve
    from .asr.paraformer_runtime import ASR_RUNTIMES, choose_runtime

    if config.asr_runtime not in ASR_RUNTIMES:
        return "torch"
    try:
        model = resolve(config.asr_model or DEFAULT_STREAMING_MODEL, "--asr-model")
    except ModelLoadError:
        return "torch"
    return choose_runtime(config.asr_runtime, model).runtime


def sessions_per_asr_worker(config: ServerConfig) -> int:
    if config.asr == "funasr-paraformer-streaming":
        return PARAFORMER_SESSIONS_PER_WORKER[paraformer_runtime(config)]
    return SESSIONS_PER_ASR_WORKER.get(config.asr, UNKNOWN_ENGINE_SESSIONS_PER_WORKER)


def default_max_sessions(config: ServerConfig) -> int:
    if config.asr == "none":
        return SESSIONS_WITHOUT_ASR
    return sessions_per_asr_worker(config) * asr_worker_count(config)


def session_limit(config: ServerConfig) -> int:
    """`--max-sessions`, or the default that fits the engines when it is 0."""
    return config.max_sessions if config.max_sessions > 0 else default_max_sessions(config)
