"""Issue 17 item 4: the 2-pass final when several utterances end together, batched against one at a time.

The offline Paraformer decode of N whole utterances that end in the same tick: the batched host's
`BatchedOfflineParaformer.decode_passes` (passes of similar lengths, shortest first) against N
FunASR `generate` calls in a row (the one-stream-per-call host). One torch thread, in this process
(pin it with `taskset -c 0`). For each N: wall time until the first utterance's text is known,
the mean over the utterances and the last, this process's CPU time, medians over the repeats;
and whether every batched text equals its one-at-a-time text. ct-punc is not in it: it runs per
utterance in both (FunASR's CTTransformer takes one text per call), the same cost either way.

    taskset -c 0 .venv/bin/python -m bench.funasr_twopass --model DIR [--sizes 1 2 4 8] [--repeats 3]
        [--lengths 3.2 5.1 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
import wave
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.funasr_streams import CORPUS
from hark.server.asr.funasr_load import load_model
from hark.server.asr.paraformer_offline_batch import MAX_PADDED_RATIO, BatchedOfflineParaformer, OfflineJob

CLIP = CORPUS / "audio" / "zh_vad_example_70s.wav"
# seconds of each utterance, cycled: spoken turns of different lengths (the longest 2.6x the shortest)
LENGTHS_S = (3.2, 5.1, 2.4, 6.3, 4.0, 2.9, 5.6, 3.5)


def utterances(n: int, lengths_s: tuple[float, ...] = LENGTHS_S) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    with wave.open(str(CLIP)) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).astype(np.float32) / 32768.0
    out = []
    for i in range(n):
        n_samples = int(lengths_s[i % len(lengths_s)] * 16000)
        start = (i * 7 * 16000) % (len(pcm) - n_samples)  # each from its own place in the recording
        out.append(pcm[start : start + n_samples].copy())
    return out


def one_at_a_time(model: Any, audio: list[np.ndarray[Any, np.dtype[np.float32]]]) -> tuple[list[str], list[float]]:
    """Texts, and the seconds until each is known (in the order they end, as the host decodes)."""
    started = time.perf_counter()
    texts, at = [], []
    for a in audio:
        result = model.generate(input=a)
        texts.append(str(result[0]["text"]) if result else "")
        at.append(time.perf_counter() - started)
    return texts, at


def batched(
    batcher: BatchedOfflineParaformer, audio: list[np.ndarray[Any, np.dtype[np.float32]]]
) -> tuple[list[str], list[float]]:
    """As the batched host: passes of similar lengths, shortest first; texts, and the seconds until
    each is known (its pass done)."""
    started = time.perf_counter()
    jobs = [OfflineJob(a) for a in audio]
    done: dict[int, float] = {}
    for finished in batcher.decode_passes(jobs):
        done.update((id(job), time.perf_counter() - started) for job in finished)
    return [j.text if isinstance(j.text, str) else f"error: {j.text}" for j in jobs], [done[id(j)] for j in jobs]


def ms(arm: dict[str, list[float]]) -> str:
    med = {key: statistics.median(values) * 1000 for key, values in arm.items()}
    return f"{med['first']:.0f} / {med['mean']:.0f} / {med['last']:.0f} | {med['cpu']:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="offline Paraformer model directory")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lengths", type=float, nargs="+", default=list(LENGTHS_S), help="utterance seconds, cycled")
    args = parser.parse_args()
    import torch

    model = load_model(str(Path(args.model)), "--model", 1)
    torch.set_num_threads(1)
    batcher = BatchedOfflineParaformer(model, max(args.sizes))
    assert batcher.batchable, "this model is not the plain Paraformer the batch covers"
    warm = utterances(1)
    one_at_a_time(model, warm)
    batched(batcher, warm)
    print(f"model {args.model}; utterances of {', '.join(f'{s:g}' for s in args.lengths)} s (cycled); 1 torch thread")
    print(
        "| N | audio s | one at a time: first / mean / last final ms | CPU ms "
        "| batched: first / mean / last final ms | CPU ms | CPU batched/alone | texts equal |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        audio = utterances(n, tuple(args.lengths))
        alone: dict[str, list[float]] = {"first": [], "mean": [], "last": [], "cpu": []}
        together: dict[str, list[float]] = {"first": [], "mean": [], "last": [], "cpu": []}
        equal = True
        for _ in range(args.repeats):
            for arm, run in ((alone, partial(one_at_a_time, model)), (together, partial(batched, batcher))):
                cpu = time.process_time()
                texts, at = run(audio)
                arm["cpu"].append(time.process_time() - cpu)
                arm["first"].append(min(at))
                arm["mean"].append(statistics.mean(at))
                arm["last"].append(max(at))
                if arm is alone:
                    expected = texts
                else:
                    equal = equal and texts == expected

        ratio = statistics.median(together["cpu"]) / statistics.median(alone["cpu"])
        audio_s = sum(len(a) for a in audio) / 16000
        print(
            f"| {n} | {audio_s:.1f} | {ms(alone)} | {ms(together)} | {ratio:.2f} | {'yes' if equal else 'NO'} |",
            flush=True,
        )
    print(
        f"largest pass: {batcher.largest_batch} utterances (padded frames at most {MAX_PADDED_RATIO:g}x the real ones)"
    )


if __name__ == "__main__":
    main()
