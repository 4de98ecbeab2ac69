"""pocketsphinx's confidence settings (server/asr/posterior.py) against the first pass alone.

For each decoder setting: word error rate on the English corpus clips with human references, the
CPU time of the end-of-utterance step (what the user waits for), and the confidence of each clip,
clean and under white noise as loud as the speech (the fallback's two sides). Each clip streams in
100 ms frames from a fresh cepstral mean, one decoder in this process.

    .venv/bin/python -m bench.asr_confidence
"""

from __future__ import annotations

import json
import os
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from bench.wer import edit_distance, normalize
from hark.server.asr.pocketsphinx import DEFAULT_OPTIONS
from hark.server.asr.posterior import CONFIDENCE_OPTIONS, mean_word_posterior

CORPUS = Path(os.environ.get("HARK_CORPUS", Path(__file__).resolve().parents[1].parent / "shared" / "corpus"))
CLEAN = ("en_goforward_command", "en_librivox_sense_0870", "en_librivox_sense_0920", "en_vosk_digits", "en_whisper_jfk")
NOISY = ("en_goforward_command", "en_librivox_sense_0870", "en_librivox_sense_0920")
NOISE_RMS = 900.0  # about the LibriVox speech's own level: 0 dB SNR
SETTINGS = {
    "first pass only (before)": DEFAULT_OPTIONS,
    "with confidence (the server's)": {**DEFAULT_OPTIONS, **CONFIDENCE_OPTIONS},
}


def load(name: str) -> bytes:
    with wave.open(str(CORPUS / "audio" / f"{name}.wav")) as wav:
        frames: bytes = wav.readframes(wav.getnframes())
    return frames


def with_noise(pcm: bytes, rms: float, seed: int = 12) -> bytes:
    speech = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    noise = np.random.default_rng(seed).standard_normal(len(speech)) * rms
    return np.clip(speech + noise, -32768, 32767).astype("<i2").tobytes()


def decode(decoder: Any, cmn: str, pcm: bytes, posteriors: bool) -> tuple[str, float | None, float]:
    decoder.set_cmn(cmn)
    decoder.start_utt()
    for i in range(0, len(pcm), 3200):
        decoder.process_raw(pcm[i : i + 3200], False, False)
    started = time.process_time()
    decoder.end_utt()
    hyp = decoder.hyp()
    confidence = mean_word_posterior(decoder.seg()) if posteriors and hyp is not None else None
    return (hyp.hypstr if hyp else ""), confidence, (time.process_time() - started) * 1000.0


def main() -> None:
    from pocketsphinx import Decoder

    references = {item["name"]: item["transcript"] for item in json.loads((CORPUS / "manifest.json").read_text())}
    for label, options in SETTINGS.items():
        decoder = Decoder(samprate=16000, loglevel="FATAL", **options)
        cmn = decoder.get_cmn()
        posteriors = bool(options.get("bestpath"))
        errors = words = 0
        finalize_ms: list[float] = []
        rows: list[str] = []
        for name in CLEAN:
            text, confidence, ms = decode(decoder, cmn, load(name), posteriors)
            ref = normalize(references[name])
            clip_errors = edit_distance(ref, normalize(text))
            errors, words = errors + clip_errors, words + len(ref)
            finalize_ms.append(ms)
            rows.append(f"  clean {name:24s} errors {clip_errors:2d}/{len(ref):2d}  confidence {_fmt(confidence)}")
        for name in NOISY:
            text, confidence, ms = decode(decoder, cmn, with_noise(load(name), NOISE_RMS), posteriors)
            finalize_ms.append(ms)
            rows.append(f"  noisy {name:24s} confidence {_fmt(confidence)}  {text[:50]!r}")
        print(
            f"{label}: WER {errors / words:.3f} ({errors}/{words}); end-of-utterance CPU ms p50 "
            f"{np.percentile(finalize_ms, 50):.0f}, max {max(finalize_ms):.0f}"
        )
        print("\n".join(rows))


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
