"""pocketsphinx word error rate on the LibriVox clips, streamed in 100 ms frames as the server does."""

from __future__ import annotations

from conftest import load_pcm, manifest

from bench.wer import edit_distance, normalize
from hark.server.asr.pocketsphinx import PocketsphinxEngine

CLIPS = ("en_librivox_sense_0870", "en_librivox_sense_0920")
# measured 0.220 over both clips (9 errors / 41 words) with pocketsphinx 5.1.1, its en-us model
# and the server's decoder settings; the bound leaves room for another build of the same decoder
# (a word or two per clip), not for a regression
WER_BOUND = 0.30


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
