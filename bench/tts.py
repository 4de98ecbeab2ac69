"""`python -m bench.tts`: the HTTP TTS engines against their labelled stand-ins (espeak-ng audio
behind each real API, standins/tts): LLM first token -> first reply audio byte with clause vs
sentence chunking, audio underruns at real-time playback, and the server's CPU per reply.

Each reply is a real `ResponseRun` (chunker, one TTS request in flight, streamed decode, soxr
resampling, the real-time pacer) fed by a paced fake LLM; a simulated client plays the audio in
real time from its first frame and counts the times it ran dry. These are the stand-ins' numbers
(their latency model: first byte after `--first-byte-ms`, audio `--speed` x real time), never the
real servers'. `--url API=URL` measures a real server instead (scripts/tts_check.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from hark.loadtest.stats import summary
from hark.protocol import ServerEvent
from hark.server.config import ServerConfig
from hark.server.context import ServerContext
from hark.server.llm.base import LLMEngine, LLMRequest, LLMUsage, Message
from hark.server.metrics import Metrics
from hark.server.response import ResponseRun
from hark.server.tts.registry import TTS_ENGINES
from hark.server.tts.streaming import StreamingTTSEngine
from standins.tts.process import tts_standin

from .sections import write_section

OUTPUT_RATE = 16000
REPLIES = (
    "Sure, the weather in Paris tomorrow looks mild, with light rain in the afternoon.",
    "Well, if you leave at eight, you should reach the station well before the train departs.",
    "Of course, I can set a timer for ten minutes, and I will remind you when it rings.",
    "Honestly, the best way to learn a language is to speak it a little every single day.",
    "Right, your next meeting is at three, in the small room on the second floor.",
    "Yes, tomatoes grow best in full sun, so put them where they get six hours of light.",
)


class PacedLLM(LLMEngine):
    """Yields a canned reply word by word, `token_ms` apart: the text arrives as an LLM writes it."""

    name = "paced"

    def __init__(self, token_ms: float) -> None:
        self.token_ms = token_ms

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str]:
        text = request.messages[-1].content
        for i, word in enumerate(text.split(" ")):
            await asyncio.sleep(self.token_ms / 1000.0)
            yield word if i == 0 else " " + word


class PlaybackClient:
    """An outbox that plays reply audio in real time from its first frame and counts underruns."""

    def __init__(self) -> None:
        self.first_audio: float | None = None
        self.audio_s = 0.0
        self.underruns = 0
        self.starved_s = 0.0
        self._clock = 0.0  # wall time at which the audio received so far has played out

    def send_event(self, event: ServerEvent) -> None:
        pass

    def send_audio(self, pcm: bytes) -> None:
        now = time.monotonic()
        if self.first_audio is None:
            self.first_audio = self._clock = now
        elif now > self._clock + 0.005:  # it ran dry (5 ms of scheduling slack)
            self.underruns += 1
            self.starved_s += now - self._clock
            self._clock = now
        seconds = len(pcm) / 2 / OUTPUT_RATE
        self._clock += seconds
        self.audio_s += seconds


async def one_reply(ctx: ServerContext, text: str, index: int, first_clause: bool) -> dict[str, float]:
    client = PlaybackClient()
    request = LLMRequest(messages=[Message("user", text)], request_id=f"bench-{index}", session_id=f"s{index}")
    run = ResponseRun(ctx, client, request, f"resp_{index}", OUTPUT_RATE, "en-us", True)
    run.first_clause = first_clause
    await run.run()
    if run.tts_failure is not None or client.first_audio is None or run.timeline.first_token is None:
        raise RuntimeError(f"reply {index} got no audio: {run.tts_failure}")
    return {
        "first_audio_ms": (client.first_audio - run.timeline.first_token) * 1000.0,
        "underruns": client.underruns,
        "starved_ms": client.starved_s * 1000.0,
        "audio_s": client.audio_s,
    }


Results = dict[bool, list[dict[str, float]]]  # first_clause -> one record per reply


async def measure(
    api: str, url: str, replies: int, concurrency: int, token_ms: float, model: str = "", api_key: str = ""
) -> Results:
    config = ServerConfig(tts=api, tts_url=url, tts_model=model, tts_api_key=api_key, voices_dir="/nonexistent")
    engine = TTS_ENGINES.create(api, config)
    assert isinstance(engine, StreamingTTSEngine)
    await engine.start()
    pool = ThreadPoolExecutor(1)
    ctx = ServerContext(config, Metrics(), cast(Any, None), cast(Any, None), PacedLLM(token_ms), engine, pool)
    results: Results = {}
    gate = asyncio.Semaphore(concurrency)

    async def gated(i: int, clause: bool) -> dict[str, float]:
        async with gate:
            return await one_reply(ctx, REPLIES[i % len(REPLIES)], i, clause)

    try:
        await one_reply(ctx, REPLIES[0], -1, True)  # warm: connections, soxr
        for first_clause in (True, False):
            cpu = time.process_time()  # the whole process: replies overlap, so per batch, not per reply
            batch = list(await asyncio.gather(*(gated(i, first_clause) for i in range(replies))))
            cpu_ms_each = (time.process_time() - cpu) * 1000.0 / replies
            results[first_clause] = [{**r, "cpu_ms": cpu_ms_each} for r in batch]
    finally:
        await engine.aclose()
        pool.shutdown()
    return results


@contextlib.contextmanager
def target(api: str, urls: dict[str, str], standin_args: list[str]) -> Iterator[str]:
    if api in urls:
        yield urls[api]
        return
    with tts_standin(api, *standin_args) as standin:
        yield standin.url


def table(rows: dict[str, Results], urls: dict[str, str]) -> str:
    lines = [
        "| engine | server | first chunk | replies | first token -> first audio p50 / p95 (ms) "
        "| replies with an underrun | starved (ms, total) | server CPU per reply (ms) | CPU per s of audio (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for api, modes in rows.items():
        for first_clause, results in modes.items():
            first = summary([r["first_audio_ms"] for r in results], (50, 95))
            cpu = statistics.mean(r["cpu_ms"] for r in results)
            per_audio = sum(r["cpu_ms"] for r in results) / sum(r["audio_s"] for r in results)
            lines.append(
                f"| {api} | {'real: ' + urls[api] if api in urls else 'stand-in'} | "
                f"{'clause' if first_clause else 'sentence'} | {len(results)} | "
                f"{first['p50']:.0f} / {first['p95']:.0f} | {sum(r['underruns'] > 0 for r in results)} | "
                f"{sum(r['starved_ms'] for r in results):.0f} | {cpu:.1f} | {per_audio:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tts", description=__doc__.splitlines()[0])
    parser.add_argument("--apis", nargs="+", default=["openai", "fish", "cosyvoice"])
    parser.add_argument("--url", action="append", default=[], help="API=URL: a real server instead of the stand-in")
    parser.add_argument("--replies", type=int, default=12, help="replies per engine and chunking mode")
    parser.add_argument("--concurrency", type=int, default=4, help="replies in flight at once")
    parser.add_argument("--token-ms", type=float, default=40.0, help="the fake LLM's time per word")
    parser.add_argument("--first-byte-ms", default="150", help="stand-ins: time to first audio")
    parser.add_argument("--speed", default="3", help="stand-ins: times faster than real time")
    parser.add_argument("--model", default=os.environ.get("HARK_TTS_MODEL", ""), help="as --tts-model")
    parser.add_argument("--api-key", default=os.environ.get("HARK_TTS_API_KEY", ""), help="as --tts-api-key")
    parser.add_argument("--write", metavar="PAGE", help="write the table as section 'tts' of this page")
    args = parser.parse_args(argv)
    urls = dict(item.split("=", 1) for item in args.url)
    standin_args = ["--first-byte-ms", args.first_byte_ms, "--speed", args.speed]
    rows: dict[str, Results] = {}
    for api in args.apis:
        with target(api, urls, standin_args) as url:
            model, key = (args.model, args.api_key) if api in urls else ("", "")
            rows[api] = asyncio.run(measure(api, url, args.replies, args.concurrency, args.token_ms, model, key))
        print(f"{api}: done", flush=True)
    markdown = table(rows, urls)
    print(markdown)
    if args.write:
        command = "python -m bench.tts " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
        write_section(Path(args.write), "tts", section(markdown, command.strip(), args))
    return 0


def section(markdown: str, command: str, args: argparse.Namespace) -> str:
    return f"""## TTS engines over HTTP (`{command}`)

Against the **stand-ins** (standins/tts: each real API's routes, fields and streaming, the audio
espeak-ng, first audio after {args.first_byte_ms} ms, then {args.speed}x real time): these are the
stand-ins' latency model, not Fish Speech's, CosyVoice's or Kokoro's. Each reply is a real
`ResponseRun` (chunker, one TTS request in flight, streamed decode, soxr to 16 kHz, the pacer) fed
by a fake LLM writing a word every {args.token_ms:g} ms, {args.concurrency} replies at once; the
client plays in real time from its first frame. "first chunk": the first clause (", " after 4
words) or the whole first sentence goes to the TTS. CPU is this process's (decode, resample,
pacing, HTTP), the stand-in's synthesis excluded.

{markdown}

What the real servers publish, for scale (their claims, not measured here): Kokoro-FastAPI's README
says 35-100x+ real time on a 4060Ti or better and 5x+ on an M3 Pro CPU; CosyVoice 2's says
first-packet latency as low as 150 ms in streaming mode. Fish Speech publishes no time to first
audio for its HTTP server. `scripts/tts_check.sh` runs this benchmark against a real server.
"""


if __name__ == "__main__":
    raise SystemExit(main())
