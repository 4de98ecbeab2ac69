"""Prometheus metrics, one registry per server instance (tests run several servers in one process).

With `--workers N` every worker process writes its values to files in PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode, chosen when the library is imported) and /metrics on any
worker renders the merged view: counters and histograms summed, live gauges summed over the
workers still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .proctree import tree_usage

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# speech end to first audio lands in 0.3-3 s on CPU; stages in ms to a few s
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# a Smart Turn check is ~65 ms alone on a 2-core CPU and its wait is dead air: finer where it lands
_TURN_CHECK_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0)

# the `stage` label of hark_stage_latency_seconds: every stage observed anywhere, and its meaning
STAGES: dict[str, str] = {
    "frame_wait": "an audio frame's wait in the session inbox",
    "vad": "VAD per frame",
    "asr": "ASR per fed chunk",
    "asr_final": "ASR finalize",
    "tts_chunk": "TTS per text chunk",
    "webrtc_setup": "WebRTC offer to connected",
    "final": "end of user speech to the final transcript",
    "first_token": "end of user speech to the first reply token",
    "first_audio": "end of user speech to the first reply audio",
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        r = self.registry
        self.sessions_open = Gauge("hark_sessions_open", "Open sessions", registry=r, multiprocess_mode="livesum")
        self.sessions_total = Counter("hark_sessions_total", "Sessions accepted", registry=r)
        self.audio_frames = Counter(
            "hark_audio_frames_total", "Binary audio frames received (processed + dropped + still queued)", registry=r
        )
        self.audio_frames_processed = Counter(
            "hark_audio_frames_processed_total", "Audio frames that went through the VAD", registry=r
        )
        self.audio_frames_dropped = Counter(
            "hark_audio_frames_dropped_total",
            "Audio frames received but never processed: invalid, flood, closing, session_ended",
            ["reason"],
            registry=r,
        )
        self.audio_seconds = Counter("hark_audio_seconds_total", "Audio received, seconds", registry=r)
        self.turns = Counter("hark_turns_total", "User turns ended", ["source"], registry=r)
        self.responses = Counter("hark_responses_total", "Responses by status", ["status"], registry=r)
        self.errors = Counter("hark_errors_total", "Error events sent, by code", ["code"], registry=r)
        self.stage_latency = Histogram(
            "hark_stage_latency_seconds",
            "Latency per stage: " + "; ".join(f"{name} ({meaning})" for name, meaning in STAGES.items()),
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.speculation = Counter(
            "hark_speculative_prefills_total",
            "Prefill-only LLM requests sent while the user spoke, by outcome",
            ["outcome"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "hark_llm_tokens_total",
            "LLM tokens: prompt / cached / completion of replies, speculative_prompt / speculative_cached of prefills",
            ["kind"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "hark_event_loop_lag_seconds",
            "How late the event loop ran a timer: time other work held the loop",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.turn_check = Histogram(
            "hark_turn_check_seconds",
            "Semantic turn checks: audio handed to the turn detector to its score (the wait behind other "
            "sessions' checks included; refused and failed checks are not observed)",
            buckets=_TURN_CHECK_BUCKETS,
            registry=r,
        )
        self.vad_batch = Histogram(
            "hark_vad_batch_windows",
            "Sessions whose VAD windows shared one model call (batched VAD)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        # MCP servers (--mcp-server, server/tools/): `server` is a configured name, so the labels are bounded
        self.mcp_server_up = Gauge(
            "hark_mcp_server_up",
            "1 while the MCP server is connected (with --workers: the worker processes connected to it)",
            ["server"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.mcp_connects = Counter(
            "hark_mcp_connects_total",
            "MCP connection attempts by outcome (up, failed: includes sessions lost)",
            ["server", "outcome"],
            registry=r,
        )
        self.mcp_tool_calls = Counter(
            "hark_mcp_tool_calls_total",
            "MCP tool calls by outcome: ok, tool_error (the tool's isError), timeout, unavailable, error, cancelled",
            ["server", "outcome"],
            registry=r,
        )
        self.mcp_tool_seconds = Histogram(
            "hark_mcp_tool_seconds", "MCP tool call duration", ["server"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.cpu_seconds = Gauge(
            "hark_server_cpu_seconds_total",
            "CPU time of the server process and its children (ASR workers), summed over server workers",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.resident_bytes = Gauge(
            "hark_server_resident_memory_bytes",
            "Resident memory of the server process and its children, summed over server workers",
            registry=r,
            multiprocess_mode="livesum",
        )
        # plain HTTP (server/http/): `route` is the matched route's pattern (or `unmatched`), never
        # the raw path, so a client cannot grow the label set
        self.http_requests = Counter(
            "hark_http_requests_total", "HTTP requests answered, by route and status", ["route", "status"], registry=r
        )
        self.http_duration = Histogram(
            "hark_http_request_duration_seconds",
            "HTTP request to the end of its response (a streamed response: to its last byte), by route",
            ["route"],
            buckets=(*_LATENCY_BUCKETS, 30.0, 60.0, 120.0),
            registry=r,
        )
        # the HTTP audio routes (server/offline/): a long file's progress shows as segments and seconds
        self.http_audio_running = Gauge(
            "hark_http_audio_requests_running",
            "HTTP audio requests (transcriptions, voice turns) holding an admission slot now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.http_audio_segments = Counter(
            "hark_http_audio_segments_total", "Speech segments the HTTP audio routes transcribed", registry=r
        )
        self.http_audio_seconds = Counter(
            "hark_http_audio_seconds_total",
            "Audio the HTTP audio routes decoded (decoded) and ran through the ASR (speech), seconds",
            ["kind"],
            registry=r,
        )

        self.tool_calls = Counter(
            "hark_tool_calls_total",
            "Tool calls the model made, by who ran them (client, server, unknown: no such tool) and outcome "
            "(ok, error, timeout, cancelled, invalid_arguments)",
            ["kind", "outcome"],
            registry=r,
        )

        # what the recognizer-lag admission guard reads (server/context.py LagMeter), once a second
        self.asr_lag = Gauge(
            "hark_asr_lag_seconds",
            "How late speech recognition is on average: streaming (a speaking session's newest frame, "
            "arrival -> recognized, last 2 s) or final (a turn's end -> its final transcript, last 5 s); "
            "0 with fewer than 3 samples",
            ["signal"],
            registry=r,
            multiprocess_mode="max",
        )
        # a session leaves none behind when it ends: the soak (loadtest/soak.py) checks it returns to its baseline
        self.tasks = Gauge(
            "hark_tasks", "asyncio tasks alive in the server's event loop", registry=r, multiprocess_mode="livesum"
        )

    def observe(self, stage: str, seconds: float) -> None:
        if stage not in STAGES:  # a new stage is named in STAGES, so the help text stays true
            raise ValueError(f"unknown latency stage {stage!r} (add it to metrics.STAGES)")
        self.stage_latency.labels(stage).observe(seconds)

    def sample_process_tree(self) -> None:
        usage = tree_usage()
        self.cpu_seconds.set(usage.cpu_seconds)
        self.resident_bytes.set(usage.resident_bytes)
        with contextlib.suppress(RuntimeError):  # no loop running in this thread: nothing to count
            self.tasks.set(len(asyncio.all_tasks()))

    def render(self) -> bytes:
        self.sample_process_tree()
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
