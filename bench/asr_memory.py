"""Memory of the pocketsphinx workers through a burst of concurrent speakers and a long utterance.

Drives `PocketsphinxEngine` as the server does (100 ms chunks, begin/accept/finalize/close per
stream) with every stream speaking at once, then closes them and reads the workers' resident
memory: before, at the peak, after the burst, and after a second burst (memory that stays after a
burst, or grows with each one, is the leak issue 12 D5 describes). Then one stream speaks a single
long utterance (continuous speech) and the memory is read again once it has ended.

    .venv/bin/python -m bench.asr_memory --streams 40 --workers 1 --long-s 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time

from bench.funasr_streams import rss_mib
from hark.loadtest.scenario import load_clip
from hark.server.asr.pocketsphinx import PocketsphinxEngine

CHUNK = 3200  # 100 ms at 16 kHz
CLIP = "en_librivox_sense_0870"


def workers_rss() -> float:
    return rss_mib([p.pid for p in multiprocessing.active_children() if p.pid is not None])


async def speak(engine: PocketsphinxEngine, stream_id: str, pcm: bytes) -> str:
    stream = engine.open_stream(stream_id)
    await stream.begin()
    for i in range(0, len(pcm), CHUNK):
        await stream.accept(pcm[i : i + CHUNK])
    text = await stream.finalize()
    await stream.close()
    return text


async def burst(engine: PocketsphinxEngine, streams: int, pcm: bytes, tag: str) -> tuple[float, float]:
    """All streams begin before any ends (so each holds a decoder at once); returns (peak, after) MiB."""
    opened = [engine.open_stream(f"{tag}-{i}") for i in range(streams)]
    await asyncio.gather(*(s.begin() for s in opened))
    for i in range(0, len(pcm), CHUNK):
        await asyncio.gather(*(s.accept(pcm[i : i + CHUNK]) for s in opened))
    peak = workers_rss()
    await asyncio.gather(*(s.finalize() for s in opened))
    await asyncio.gather(*(s.close() for s in opened))
    await asyncio.sleep(1.0)
    return peak, workers_rss()


async def main(args: argparse.Namespace) -> dict[str, float]:
    pcm = load_clip(CLIP)
    engine = PocketsphinxEngine(workers=args.workers)
    await engine.start()
    try:
        result: dict[str, float] = {"streams": args.streams, "workers": args.workers, "start_mib": workers_rss()}
        for n in (1, 2):
            started = time.perf_counter()
            peak, after = await burst(engine, args.streams, pcm, f"burst{n}")
            result |= {f"burst{n}_peak_mib": peak, f"burst{n}_after_mib": after}
            result[f"burst{n}_s"] = time.perf_counter() - started
        if args.long_s > 0:
            long_pcm = pcm * max(1, round(args.long_s * 32000 / len(pcm)))
            await speak(engine, "long", long_pcm)
            await asyncio.sleep(1.0)
            result["long_audio_s"] = len(long_pcm) / 32000
            result["after_long_mib"] = workers_rss()
        return result
    finally:
        await engine.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=40, help="concurrent speakers per burst")
    parser.add_argument("--workers", type=int, default=1, help="pocketsphinx worker processes")
    parser.add_argument("--long-s", type=float, default=120.0, help="one utterance this long afterwards (0: skip)")
    report = asyncio.run(main(parser.parse_args()))
    print(json.dumps({k: round(v, 1) for k, v in report.items()}, indent=2))
