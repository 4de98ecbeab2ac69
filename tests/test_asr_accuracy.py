"""pocketsphinx word error rate on the LibriVox clips, streamed in 100 ms frames as the server does."""

from __future__ import annotations

import re

import numpy as np
from conftest import load_pcm, manifest

from server.asr.pocketsphinx import PocketsphinxEngine

CLIPS = ("en_librivox_sense_0870", "en_librivox_sense_0920")
# measured 0.293 over both clips (12 errors / 41 words) with pocketsphinx 5.1.1 and its en-us
# model; the bound leaves room for a different build of the same decoder, not for a regression
WER_BOUND = 0.40

_SPOKEN_FORMS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize(text: str) -> list[str]:
    words = re.sub(r"[^a-z' ]", " ", text.lower().replace(".", "")).split()
    return [_SPOKEN_FORMS.get(w, w) for w in words]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return int(d[-1])


def test_edit_distance() -> None:
    assert edit_distance("a b c".split(), "a x c d".split()) == 2
    assert normalize("Mr. John's  dog,") == ["mister", "john's", "dog"]


async def test_pocketsphinx_wer_on_librivox() -> None:
    engine = PocketsphinxEngine(workers=1)
    await engine.start()
    errors = words = 0
    try:
        for name in CLIPS:
            stream = engine.open_stream(f"wer-{name}")
            await stream.begin()
            pcm = load_pcm(name)
            for i in range(0, len(pcm), 3200):
                await stream.accept(pcm[i : i + 3200])
            hypothesis = await stream.finalize()
            await stream.close()
            ref = normalize(manifest()[name]["transcript"])
            clip_errors = edit_distance(ref, normalize(hypothesis))
            print(f"{name}: WER {clip_errors / len(ref):.3f}  hyp: {hypothesis}")
            errors += clip_errors
            words += len(ref)
    finally:
        await engine.aclose()
    wer = errors / words
    print(f"pocketsphinx WER over {len(CLIPS)} LibriVox clips: {wer:.3f} ({errors}/{words})")
    assert wer <= WER_BOUND
