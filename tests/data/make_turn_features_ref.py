"""Regenerates turn_features_ref.npz, the reference tests/test_turn_model.py checks Hark's Whisper
log-mel features against. Needs transformers (the funasr extra brings it); run from the repo root:

    .venv/bin/python tests/data/make_turn_features_ref.py

For each clip: the 16 kHz int16 samples / 32768, the last 8 s kept and zero-padded at the front
(the Smart Turn input), then `WhisperFeatureExtractor(chunk_length=8)` called the way Pipecat calls
it (do_normalize=True, padding="max_length", max_length=128000, truncation=True). Kept: every 8th
frame ([80, 100]), the mean of every frame ([800]) and of every mel bin ([80]).
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np
import transformers
from transformers import WhisperFeatureExtractor

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "audio"
CLIPS = ("en_goforward_command", "en_whisper_jfk")
N = 8 * 16000


def main() -> None:
    extractor = WhisperFeatureExtractor(chunk_length=8)
    arrays: dict[str, np.ndarray] = {}
    for name in CLIPS:
        with wave.open(str(CORPUS / f"{name}.wav")) as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        audio = pcm.astype(np.float32) / 32768.0
        audio = audio[-N:]
        audio = np.concatenate([np.zeros(N - len(audio), dtype=np.float32), audio])
        features = extractor(
            audio,
            sampling_rate=16000,
            return_tensors="np",
            padding="max_length",
            max_length=N,
            truncation=True,
            do_normalize=True,
        ).input_features[0]
        assert features.shape == (80, 800), features.shape
        arrays[f"{name}/every_8th_frame"] = features[:, ::8].astype(np.float32)
        arrays[f"{name}/frame_means"] = features.mean(axis=0).astype(np.float32)
        arrays[f"{name}/mel_means"] = features.mean(axis=1).astype(np.float32)
    arrays["transformers_version"] = np.array(transformers.__version__)
    np.savez_compressed(Path(__file__).with_name("turn_features_ref.npz"), **arrays)
    print(f"wrote {len(CLIPS)} clips with transformers {transformers.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
