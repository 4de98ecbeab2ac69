"""CPU cost of the Smart Turn turn detector: features, and the model per check at batch 1/4/8/16.

In-process, on utterance tails cut from the speech corpus (the last 8 s of each, as the detector
sees them). Features: one utterance at a time (they are computed per check, in the batch's worker
thread). Model: one onnxruntime call (`--threads`, default the server's: up to two) over a batch of
b checks; the process's CPU time divided by b is the cost per check (onnxruntime's own threads
included: nothing else runs here). "Detector" runs b concurrent `score` calls through
`SmartTurnDetector` (batcher, worker thread, features and model) and reads its own cost counters,
which count the calling thread only (exact at `--threads 1`). Medians over the rounds; wall is
elapsed time.

    python -m bench.turn_model [--rounds 5] [--batches 1 4 8 16] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hark.server.turn.features import log_mel
from hark.server.turn.smart_turn import SmartTurnDetector, SmartTurnModel, load_smart_turn

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("HARK_CORPUS", REPO.parent / "shared" / "corpus"))
# (clip, seconds kept from its start; None: whole) - complete and mid-sentence utterances
CUTS: tuple[tuple[str, float | None], ...] = (
    ("en_goforward_command", None),
    ("en_librivox_sense_0870", 2.0),
    ("en_librivox_sense_0870", None),
    ("en_librivox_sense_0920", 2.5),
    ("en_whisper_jfk", 5.5),
    ("en_whisper_jfk", None),
    ("zh_funasr_regression_sample", None),
    ("zh_funasr_asr_example", None),
)

Int16Array = npt.NDArray[np.int16]


def utterances() -> list[Int16Array]:
    out: list[Int16Array] = []
    for name, seconds in CUTS:
        with wave.open(str(CORPUS / "audio" / f"{name}.wav")) as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        out.append(pcm if seconds is None else pcm[: int(seconds * 16000)])
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed(fn: Any, *args: Any) -> tuple[float, float]:
    # the process's CPU: onnxruntime's own threads work for the call too (nothing else runs here)
    cpu, wall = time.process_time(), time.perf_counter()
    fn(*args)
    return time.process_time() - cpu, time.perf_counter() - wall


def bench_features(audios: Sequence[Int16Array], rounds: int) -> dict[str, float]:
    log_mel(audios[0])  # warm the filter bank cache
    samples = [_timed(log_mel, audios[i % len(audios)]) for i in range(rounds * len(audios))]
    return {
        "cpu_ms": 1000 * statistics.median(cpu for cpu, _ in samples),
        "wall_ms": 1000 * statistics.median(wall for _, wall in samples),
    }


def bench_model(model: SmartTurnModel, audios: Sequence[Int16Array], batch: int, rounds: int) -> dict[str, float]:
    features = np.stack([log_mel(audios[i % len(audios)]) for i in range(batch)])
    model.predict(features)  # warm-up: first calls allocate
    samples = [_timed(model.predict, features) for _ in range(rounds)]
    cpu = statistics.median(cpu for cpu, _ in samples)
    wall = statistics.median(wall for _, wall in samples)
    return {"batch": batch, "cpu_ms_per_check": 1000 * cpu / batch, "wall_ms_per_batch": 1000 * wall}


async def bench_detector(
    model: SmartTurnModel, audios: Sequence[Int16Array], batch: int, rounds: int
) -> dict[str, float]:
    detector = SmartTurnDetector(model, max_batch=batch)
    await detector.start()
    walls: list[float] = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.gather(*(detector.score(audios[i % len(audios)]) for i in range(batch)))
            walls.append(time.perf_counter() - started)
    finally:
        await detector.stop()
    cost = detector.cost
    return {
        "batch": batch,
        "cpu_ms_per_check": cost.cpu_ms_per_check,
        "features_cpu_ms_per_check": 1000 * cost.features_cpu_s / cost.checks,
        "model_cpu_ms_per_check": 1000 * cost.model_cpu_s / cost.checks,
        "wall_ms_per_round": 1000 * statistics.median(walls),
        "largest_batch": cost.largest_batch,
    }


def render(results: dict[str, Any]) -> str:
    lines = [
        f"Smart Turn v3.2 on {results['host']['cpu']} ({results['host']['cpus']} CPUs, load "
        f"{results['host']['load']}), onnxruntime {results['threads']} thread(s), {results['rounds']} rounds, medians",
        "",
        f"features (Whisper log-mel, 8 s): {results['features']['cpu_ms']:.1f} ms CPU, "
        f"{results['features']['wall_ms']:.1f} ms wall per check",
        "",
        "| batch | model CPU ms / check | model wall ms / batch | detector CPU ms / check "
        "(features + model) | detector wall ms / round |",
        "|---:|---:|---:|---:|---:|",
    ]
    for model_row, detector_row in zip(results["model"], results["detector"], strict=True):
        lines.append(
            f"| {model_row['batch']} | {model_row['cpu_ms_per_check']:.1f} | {model_row['wall_ms_per_batch']:.1f} "
            f"| {detector_row['cpu_ms_per_check']:.1f} ({detector_row['features_cpu_ms_per_check']:.1f} + "
            f"{detector_row['model_cpu_ms_per_check']:.1f}) | {detector_row['wall_ms_per_round']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.turn_model", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--threads", type=int, help="onnxruntime threads per call (default: the server's choice)")
    args = parser.parse_args(argv)
    model = load_smart_turn(threads=args.threads)
    audios = utterances()
    results: dict[str, Any] = {
        "host": {
            "cpu": cpu_name(),
            "cpus": os.cpu_count(),
            "load": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        },
        "rounds": args.rounds,
        "threads": model.threads,
        "features": bench_features(audios, args.rounds),
        "model": [bench_model(model, audios, b, args.rounds) for b in args.batches],
        "detector": [asyncio.run(bench_detector(model, audios, b, args.rounds)) for b in args.batches],
    }
    print(render(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
