"""The HTTP audio routes: transcription real-time factor for long files, and how many small voice
turns a second the HTTP side holds.

Starts its own servers (`hark.loadtest.spawn`, port 0, one ASR worker, no HTTP rate limit):
  1. pocketsphinx: POST /v1/audio/transcriptions of the 30 s English clip and the 70 s Mandarin one,
     `--runs` times each, one after another; real-time factor = request wall time / audio duration
     (decode + VAD + ASR + HTTP, on one ASR worker).
  2. FunASR paraformer-streaming (`--funasr-model`, a generated model directory: `python -m
     tools.funasr_models --out DIR [--full]`; random weights, so the words are gibberish, the compute
     is the architecture's) on the same two clips, without the 2-pass re-decode.
  3. pocketsphinx + the echo LLM + espeak: POST /v1/voice/turn with the 2.8 s command clip (the
     seed's JSON body, return_audio true) from `--clients` concurrent clients for `--turn-s` seconds
     each: completed turns per second, latency p50/p95, refusals (503 server_busy).

    python -m bench.http_api --funasr-model .cache/funasr-full/paraformer-streaming --write docs/performance.md
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.sections import write_section
from hark.loadtest.spawn import ServerProcess

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("HARK_CORPUS", REPO.parent / "shared" / "corpus"))
LONG_CLIPS = {"multi_pyannote_sample_2spk": 30.0, "zh_vad_example_70s": 70.47}
TURN_CLIP = "en_goforward_command"
LOAD: list[float] = []  # 1-minute load averages sampled after each measurement
COMMON = ("--asr-workers", "1", "--http-rate-limit", "0", "--log-level", "WARNING")


def clip_path(name: str) -> Path:
    return CORPUS / "audio" / f"{name}.wav"


@dataclass
class Rtf:
    engine: str
    clip: str
    audio_s: float
    walls: list[float]
    segments: int
    words: int

    @property
    def rtf(self) -> float:
        return statistics.median(self.walls) / self.audio_s


async def transcribe(http: aiohttp.ClientSession, base: str, name: str) -> tuple[float, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", clip_path(name).read_bytes(), filename=f"{name}.wav")
    form.add_field("response_format", "verbose_json")
    started = time.perf_counter()
    async with http.post(f"{base}/v1/audio/transcriptions", data=form) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return time.perf_counter() - started, body


async def measure_rtf(engine: str, args: list[str], runs: int, log_dir: Path) -> list[Rtf]:
    server = ServerProcess([*COMMON, *args], log_path=log_dir / f"{engine}.log", cwd=REPO)
    await server.start_async()
    out = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as http:
            for name, seconds in LONG_CLIPS.items():
                walls: list[float] = []
                body: dict[str, Any] = {}
                for _ in range(runs):
                    wall, body = await transcribe(http, server.http_url, name)
                    walls.append(wall)
                    await asyncio.sleep(5.5)  # the recognizer's load window, so the next run is admitted at once
                words = len(body["text"].split())
                out.append(
                    Rtf(engine, name, seconds, walls, len(body["segments"]), words if words > 1 else len(body["text"]))
                )
                LOAD.append(os.getloadavg()[0])
                print(f"{engine} {name}: {[round(w, 2) for w in walls]} s -> RTF {out[-1].rtf:.3f}", flush=True)
    finally:
        await server.stop_async()
    return out


@dataclass
class TurnLoad:
    clients: int
    seconds: float
    latencies: list[float]
    refused: int
    failed: int

    @property
    def per_s(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def turn_load(base: str, clients: int, seconds: float) -> TurnLoad:
    body = {
        "audio_base64": base64.b64encode(clip_path(TURN_CLIP).read_bytes()).decode(),
        "prompt_template": "Answer in one sentence: {asr_text}",
        "max_tokens": 64,
        "voice": "en-us",
        "return_audio": True,
    }
    latencies: list[float] = []
    refused = failed = 0
    deadline = time.perf_counter() + seconds

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal refused, failed
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with http.post(f"{base}/v1/voice/turn", json=body) as resp:
                answer = await resp.json()
            if resp.status == 200 and answer["transcript"]:
                latencies.append(time.perf_counter() - started)
            elif resp.status == 503:
                refused += 1
                await asyncio.sleep(1.0)
            else:
                failed += 1

    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return TurnLoad(clients, time.perf_counter() - started, latencies, refused, failed)


async def measure_turns(client_counts: list[int], seconds: float, log_dir: Path) -> list[TurnLoad]:
    server = ServerProcess([*COMMON], log_path=log_dir / "turns.log", cwd=REPO)
    await server.start_async()
    out = []
    try:
        for clients in client_counts:
            load = await turn_load(server.http_url, clients, seconds)
            LOAD.append(os.getloadavg()[0])
            out.append(load)
            print(
                f"voice turns, {clients} clients: {load.per_s:.2f}/s p50 {load.pct(0.5):.0f} ms "
                f"p95 {load.pct(0.95):.0f} ms, {load.refused} refused, {load.failed} failed",
                flush=True,
            )
            await asyncio.sleep(5.5)
    finally:
        await server.stop_async()
    return out


def report(rtfs: list[Rtf], turns: list[TurnLoad], command: str, funasr_model: str, load: list[float]) -> str:
    lines = [
        "## HTTP API (issue 16)",
        "",
        f"`{command}` on {platform.machine()}, {os.cpu_count()} cores, one ASR worker; the machine's load",
        f"average (other work included) ran {min(load):.1f}-{max(load):.1f} during the run.",
        "",
        "Transcription (`POST /v1/audio/transcriptions`, verbose_json, the whole request: upload, decode, VAD",
        "segments, ASR of each segment in 100 ms frames). Real-time factor = median request time / audio length;",
        "below 1 is faster than real time.",
        "",
        "| engine | clip | audio s | runs (s) | RTF | segments | words (or characters) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rtfs:
        walls = ", ".join(f"{w:.1f}" for w in r.walls)
        lines.append(f"| {r.engine} | {r.clip} | {r.audio_s:.1f} | {walls} | {r.rtf:.3f} | {r.segments} | {r.words} |")
    lines += [
        "",
        f"FunASR ran `{funasr_model}`: generated by `tools.funasr_models` with random weights (the words are",
        "gibberish; the compute is the architecture's), `--no-2pass`. pocketsphinx on the Mandarin clip decodes",
        "English words from Mandarin speech: the cost is real, the words are not.",
        "",
        f"Small voice turns (`POST /v1/voice/turn`, the seed's JSON body, {TURN_CLIP} 2.8 s WAV, echo LLM, espeak",
        "audio back): each client posts the next turn when the last one is answered.",
        "",
        "| clients | turns/s | p50 ms | p95 ms | refused (503) | failed |",
        "|---|---|---|---|---|---|",
    ]
    for t in turns:
        lines.append(
            f"| {t.clients} | {t.per_s:.2f} | {t.pct(0.5):.0f} | {t.pct(0.95):.0f} | {t.refused} | {t.failed} |"
        )
    lines += [
        "",
        "A turn's ASR keeps the one worker busy for most of its time; past 80 % busy over 5 s admission holds new",
        "requests (the bounded wait in server/http/audio_routes.py) so live sessions keep real time: more clients",
        "than the worker carries wait longer instead of adding turns per second.",
    ]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        log_dir = Path(tmp)
        rtfs: list[Rtf] = []
        if not args.skip_rtf:
            rtfs += await measure_rtf("pocketsphinx", ["--asr", "pocketsphinx"], args.runs, log_dir)
            if args.funasr_model:
                funasr = ["--asr", "funasr-paraformer-streaming", "--asr-model", args.funasr_model, "--no-2pass"]
                rtfs += await measure_rtf("funasr-paraformer-streaming", funasr, args.runs, log_dir)
        turns = await measure_turns(args.clients, args.turn_s, log_dir)
    command = "python -m bench.http_api " + " ".join(args.argv)
    return report(rtfs, turns, command, args.funasr_model or "(not run)", LOAD or [os.getloadavg()[0]])


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="transcriptions of each long clip per engine")
    parser.add_argument("--funasr-model", default="", help="a generated paraformer-streaming model directory")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="concurrent voice-turn clients")
    parser.add_argument("--turn-s", type=float, default=20.0, help="seconds of voice turns per client count")
    parser.add_argument("--skip-rtf", action="store_true", help="only the voice-turn load")
    parser.add_argument("--write", help="write the section 'http-api' of this markdown page")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    markdown = asyncio.run(main_async(args))
    print(markdown)
    if args.write:
        write_section(args.write, "http-api", markdown)


if __name__ == "__main__":
    main()
