"""`python -m standins.tts API`: one TTS stand-in as a process; its first stdout line is the ready line
`tts stand-in API (espeak-ng, not a neural TTS) ready on http://HOST:PORT` (`parse_ready_line`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
from collections.abc import Sequence

from aiohttp import web

from ..process import wait_for_stop_signal
from . import cosyvoice_api, fish_api, openai_api
from .common import StandinState, Timing, admin_routes

APIS = ("openai", "fish", "cosyvoice")
DEFAULT_PORTS = {"openai": 8880, "fish": 8080, "cosyvoice": 50000}  # the real servers' defaults
_READY = re.compile(r"^tts stand-in (\w+) \(espeak-ng, not a neural TTS\) ready on (http://\S+)$")


def format_ready_line(api: str, url: str) -> str:
    return f"tts stand-in {api} (espeak-ng, not a neural TTS) ready on {url}"


def parse_ready_line(line: str) -> str | None:
    match = _READY.match(line.strip())
    return match.group(2) if match else None


def build_app(
    api: str, timing: Timing, *, sample_rate: int = 22050, reference_ids: Sequence[str] = (), api_key: str | None = None
) -> tuple[web.Application, StandinState]:
    state = StandinState(api, timing)
    app = web.Application(client_max_size=64 << 20)
    if api == "openai":
        app.add_routes(openai_api.routes(state))
    elif api == "fish":
        app.add_routes(fish_api.routes(state, set(reference_ids), api_key))
    elif api == "cosyvoice":
        app.add_routes(cosyvoice_api.routes(state, sample_rate))
    else:
        raise ValueError(f"unknown API {api!r} (known: {', '.join(APIS)})")
    app.add_routes(admin_routes(state))
    return app, state


async def _serve(args: argparse.Namespace) -> None:
    timing = Timing(first_byte_ms=args.first_byte_ms, speed=args.speed, chunk_ms=args.chunk_ms)
    app, state = build_app(
        args.api, timing, sample_rate=args.sample_rate, reference_ids=args.reference_id, api_key=args.api_key
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = DEFAULT_PORTS[args.api] if args.port is None else args.port
    site = web.TCPSite(runner, args.host, port)
    await site.start()
    bound = runner.addresses[0][1]  # the port bound when 0 was asked for
    print(format_ready_line(args.api, f"http://{args.host}:{bound}"), flush=True)
    try:
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()
        state.voice.executor.shutdown(wait=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m standins.tts", description="A labelled TTS stand-in: a real API's routes, espeak-ng audio."
    )
    parser.add_argument("api", choices=APIS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: the real server's port; 0 picks a free one")
    parser.add_argument("--first-byte-ms", type=float, default=Timing.first_byte_ms)
    parser.add_argument("--speed", type=float, default=Timing.speed, help="times faster than real time")
    parser.add_argument("--chunk-ms", type=int, default=Timing.chunk_ms, help="audio per streamed piece")
    parser.add_argument("--sample-rate", type=int, default=22050, help="cosyvoice: 22050 (300M) or 24000 (v2)")
    parser.add_argument("--reference-id", action="append", default=[], help="fish: a reference_id it knows")
    parser.add_argument("--api-key", help="fish: require this bearer key (its --api-key)")
    args = parser.parse_args(argv)
    if args.speed <= 0 or args.first_byte_ms < 0 or args.chunk_ms < 10:
        parser.error("--speed must be > 0, --first-byte-ms >= 0, --chunk-ms >= 10")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0
