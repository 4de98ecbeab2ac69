"""Real-time streams for the FunASR benchmarks: corpus audio at real time into N staggered streams
of an engine, chunk latency and memory measured (shared by bench.funasr and bench.funasr_batch)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hark.server.asr.funasr import FunASREngine

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("HARK_CORPUS", REPO.parent / "shared" / "corpus"))
CHUNK_S = 0.6
REAL_TIME_P95_S = 0.6


def corpus_audio(seconds: float) -> bytes:
    with wave.open(str(CORPUS / "audio" / "zh_vad_example_70s.wav")) as wav:
        return bytes(wav.readframes(int(seconds * 16000)))


def rss_mib(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def our_pids() -> list[int]:
    return [os.getpid(), *(p.pid for p in multiprocessing.active_children() if p.pid is not None)]


@dataclass
class Run:
    streams: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    rss_mib: float
    final_ms: float  # end of utterance: flush (+ 2-pass) latency

    @property
    def real_time(self) -> bool:
        return self.p95_ms < REAL_TIME_P95_S * 1000


async def run_streams(engine: FunASREngine, streams: int, audio_s: float, step_s: float = CHUNK_S) -> Run:
    pcm = corpus_audio(audio_s)
    step_bytes = int(step_s * 16000) * 2
    latencies: list[float] = []
    finals: list[float] = []
    peak = 0.0

    async def one(i: int) -> None:
        nonlocal peak
        stream = engine.open_stream(f"bench-{i}")
        await asyncio.sleep(step_s * i / streams)  # staggered, like independent users
        await stream.begin()
        start = time.perf_counter()
        for n, at in enumerate(range(0, len(pcm), step_bytes)):
            due = start + n * step_s  # audio arrives at real time
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await stream.accept(pcm[at : at + step_bytes])
            # from the moment the audio existed: a stream that falls behind shows it here
            latencies.append(time.perf_counter() - due)
            if i == 0 and n % 5 == 0:
                peak = max(peak, rss_mib(our_pids()))
        sent = time.perf_counter()
        await stream.finalize()
        finals.append(time.perf_counter() - sent)
        await stream.close()

    await asyncio.gather(*(one(i) for i in range(streams)))
    ms = np.array(latencies) * 1000
    return Run(
        streams,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 95)),
        float(ms.max()),
        peak,
        float(np.mean(finals) * 1000),
    )
