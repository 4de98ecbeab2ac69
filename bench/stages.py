"""CPU cost of each pipeline stage per second of audio, measured in-process on the speech corpus.

CPU time (`time.process_time`, which sums every thread of this process) is what says how many
streams a core can carry; wall-clock percentiles of the single calls a user waits on are reported
beside it. Each stage runs the same engine code, with the same settings, as the server does.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.latency import QUANTILES
from hark.loadtest.scenario import corpus_dir, load_clip
from hark.loadtest.stats import summary
from hark.server.asr.pocketsphinx import DEFAULT_OPTIONS
from hark.server.audio import pcm16_to_float
from hark.server.tts.espeak import DEFAULT_VOICE, EspeakEngine
from hark.server.vad import SAMPLE_RATE, SileroVad, VadStream

CLIPS = (
    "en_goforward_command",
    "en_librivox_sense_0870",
    "en_librivox_sense_0920",
    "en_whisper_jfk",
    "en_vosk_digits",
)
FRAME_SAMPLES = SAMPLE_RATE // 10  # 100 ms: what clients send and the server hands each stage
# Reply-sized sentences, as the sentence chunker hands them to TTS.
SENTENCES = (
    "You said: go forward ten meters.",
    "Sure, I can help with that.",
    "The weather tomorrow looks sunny, with a light breeze from the west and a high of twenty one degrees.",
    "Had he married a more amiable woman, he might have been made still more respectable than he was.",
    "One zero zero zero one, nine oh two one oh, zero one eight zero three.",
    "Okay.",
)


@dataclass(frozen=True, slots=True)
class StageResult:
    stage: str
    audio_s: float  # audio processed (VAD, ASR) or produced (TTS)
    cpu_s: float
    wall_s: float
    latency_label: str  # what the latency percentiles time
    latency_ms: dict[str, float]
    extra_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # other per-call percentiles

    @property
    def rtf(self) -> float:
        """CPU seconds per second of audio (real-time factor on one core)."""
        return self.cpu_s / self.audio_s

    @property
    def streams_per_core(self) -> float:
        return self.audio_s / self.cpu_s if self.cpu_s > 0 else float("inf")


def _frames(pcm: bytes) -> list[bytes]:
    step = FRAME_SAMPLES * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


class _TimedVad(SileroVad):
    """Times every model call (one 512-sample window each, as VadStream makes them)."""

    def __init__(self) -> None:
        super().__init__()
        self.window_s: list[float] = []

    def run(self, windows: Any, state: Any) -> Any:
        started = time.perf_counter()
        result = super().run(windows, state)
        self.window_s.append(time.perf_counter() - started)
        return result


def bench_vad(clips: dict[str, bytes], passes: int) -> StageResult:
    model = _TimedVad()
    # one untimed pass: onnxruntime allocates and picks kernels on the first calls
    VadStream(model).process(pcm16_to_float(clips[CLIPS[0]]))
    model.window_s.clear()
    audio_s = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(passes):
        for pcm in clips.values():
            stream = VadStream(model)
            for frame in _frames(pcm):
                stream.process(pcm16_to_float(frame))  # the int16->float conversion is per frame in the server too
            audio_s += len(pcm) / 2 / SAMPLE_RATE
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    lat = summary([s * 1000 for s in model.window_s], QUANTILES)
    return StageResult("vad (silero, 32 ms windows)", audio_s, cpu, wall, "per 512-sample window", lat)


def bench_asr(clips: dict[str, bytes], passes: int) -> StageResult:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **DEFAULT_OPTIONS)
    finalize_s: list[float] = []
    frame_s: list[float] = []
    audio_s = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(passes):
        for pcm in clips.values():
            decoder.start_utt()
            for frame in _frames(pcm):
                # the server's "accept": decode the new 100 ms and read the partial hypothesis
                started = time.perf_counter()
                decoder.process_raw(frame, False, False)
                decoder.hyp()
                frame_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            decoder.end_utt()  # "finalize": what the user waits for once speech has ended
            decoder.hyp()
            finalize_s.append(time.perf_counter() - started)
            audio_s += len(pcm) / 2 / SAMPLE_RATE
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    lat = summary([s * 1000 for s in finalize_s], QUANTILES)
    extra = {"accept per 100 ms frame": summary([s * 1000 for s in frame_s], QUANTILES)}
    return StageResult("asr (pocketsphinx, 100 ms frames)", audio_s, cpu, wall, "finalize (end_utt + hyp)", lat, extra)


# clips whose reference transcripts are human labels (the digits clip's is not, see the manifest)
WER_CLIPS = ("en_goforward_command", "en_librivox_sense_0870", "en_librivox_sense_0920", "en_whisper_jfk")
ASR_SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("pocketsphinx defaults (fwdflat + bestpath)", {}),
    ("bestpath off", {"bestpath": False}),
    ("fwdflat and bestpath off (the server's)", DEFAULT_OPTIONS),
)


def bench_asr_settings() -> list[dict[str, Any]]:
    """WER and finalize time of each decoder setting, each utterance from a fresh cepstral mean."""
    import json

    from pocketsphinx import Decoder

    from .wer import edit_distance, normalize

    with open(corpus_dir() / "manifest.json") as fh:
        references = {item["name"]: item["transcript"] for item in json.load(fh)}
    rows: list[dict[str, Any]] = []
    for label, options in ASR_SETTINGS:
        decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **options)
        initial_cmn = decoder.get_cmn()
        errors = words = 0
        finalize_ms: list[float] = []
        for name in WER_CLIPS:
            decoder.set_cmn(initial_cmn)  # as the server does for a new session
            decoder.start_utt()
            for frame in _frames(load_clip(name)):
                decoder.process_raw(frame, False, False)
                decoder.hyp()
            started = time.perf_counter()
            decoder.end_utt()
            hyp = decoder.hyp()
            finalize_ms.append((time.perf_counter() - started) * 1000)
            ref = normalize(references[name])
            errors += edit_distance(ref, normalize(hyp.hypstr if hyp is not None else ""))
            words += len(ref)
        rows.append(
            {
                "setting": label,
                "wer": errors / words,
                "errors": errors,
                "words": words,
                "finalize_ms": summary(finalize_ms, QUANTILES),
            }
        )
    for row in rows:
        print(
            f"asr setting {row['setting']}: WER {row['wer']:.3f} ({row['errors']}/{row['words']}), "
            f"finalize p50 {row['finalize_ms']['p50']:.0f} ms, max {row['finalize_ms']['max']:.0f} ms"
        )
    return rows


async def _bench_tts(passes: int) -> StageResult:
    engine = EspeakEngine()
    await engine.start()
    try:
        await engine.synthesize("Warm up.", DEFAULT_VOICE)  # first call loads the voice files
        per_sentence: list[float] = []
        audio_s = 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(passes):
            for sentence in SENTENCES:
                started = time.perf_counter()
                pcm = await engine.synthesize(sentence, DEFAULT_VOICE)
                # the engine returns a sentence's audio in one piece: the wait is the time to first audio
                per_sentence.append(time.perf_counter() - started)
                audio_s += len(pcm) / engine.sample_rate
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await engine.aclose()
    lat = summary([s * 1000 for s in per_sentence], QUANTILES)
    return StageResult("tts (espeak-ng)", audio_s, cpu, wall, "time to audio per sentence", lat)


def format_table(results: Sequence[StageResult]) -> list[list[str]]:
    """Rows (with a header) shared by the console table and the markdown report."""
    rows = [
        [
            "stage",
            "audio s",
            "CPU s",
            "CPU s / audio s",
            "real-time streams / core",
            "latency of",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
        ]
    ]
    for r in results:
        lat = r.latency_ms
        rows.append(
            [
                r.stage,
                f"{r.audio_s:.1f}",
                f"{r.cpu_s:.2f}",
                f"{r.rtf:.4f}",
                f"{r.streams_per_core:.0f}",
                r.latency_label,
                *(f"{lat.get(k, float('nan')):.2f}" for k in ("p50", "p90", "p99", "max")),
            ]
        )
    return rows


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(w) if i == 0 or i == 5 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def run_stages(passes: int = 3, tts_passes: int = 5) -> dict[str, Any]:
    """Benchmark VAD, ASR and TTS; print a table and return the numbers."""
    clips = {name: load_clip(name) for name in CLIPS}
    results = [bench_vad(clips, passes), bench_asr(clips, passes), asyncio.run(_bench_tts(tts_passes))]
    rows = format_table(results)
    print_table(rows)
    for r in results:
        for label, p in r.extra_ms.items():
            print(f"{r.stage}: {label}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in p.items() if k != "n"))
    return {
        "clips": list(CLIPS),
        "passes": passes,
        "stages": [{**asdict(r), "cpu_per_audio_s": r.rtf, "streams_per_core": r.streams_per_core} for r in results],
        "table": rows,
        "asr_settings": bench_asr_settings(),
        "wer_clips": list(WER_CLIPS),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    run_stages()
