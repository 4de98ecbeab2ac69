"""Prometheus metrics, one registry per server instance (tests run several servers in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# speech end to first audio lands in 0.3-3 s on CPU; stages in ms to a few s
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions_open = Gauge("hark_sessions_open", "Open sessions", registry=self.registry)
        self.sessions_total = Counter("hark_sessions_total", "Sessions accepted", registry=self.registry)
        self.audio_frames = Counter("hark_audio_frames_total", "Audio frames received", registry=self.registry)
        self.audio_seconds = Counter("hark_audio_seconds_total", "Audio received, seconds", registry=self.registry)
        self.turns = Counter("hark_turns_total", "User turns ended", ["source"], registry=self.registry)
        self.responses = Counter("hark_responses_total", "Responses by status", ["status"], registry=self.registry)
        self.errors = Counter("hark_errors_total", "Error events sent, by code", ["code"], registry=self.registry)
        self.stage_latency = Histogram(
            "hark_stage_latency_seconds",
            "Latency per stage: vad/asr per frame, asr_final, llm_first_token, tts_chunk; "
            "final, first_token, first_audio from the end of user speech",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.speculation = Counter(
            "hark_speculative_prefills_total",
            "Prefill-only LLM requests sent while the user spoke, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.llm_tokens = Counter(
            "hark_llm_tokens_total",
            "LLM prompt tokens: prompt / cached of replies, speculative_prompt / speculative_cached of prefills",
            ["kind"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "hark_event_loop_lag_seconds",
            "How late the event loop ran a timer: time other work held the loop",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=self.registry,
        )

    def observe(self, stage: str, seconds: float) -> None:
        self.stage_latency.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
