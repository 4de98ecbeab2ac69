"""`python -m standins.sglang`: the simulator as a process, and the one line that says it is ready.

The first line on stdout is `sglang simulator ready on http://HOST:PORT`; whoever starts the process
(tests/simproc.py, bench/capacity_suite.py) reads the URL from it with `parse_ready_line`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Final

from ..process import wait_for_stop_signal
from .config import SimConfig
from .http_app import SGLangSimulator

READY_PREFIX: Final = "sglang simulator ready on "


def format_ready_line(url: str) -> str:
    return f"{READY_PREFIX}{url}"


def parse_ready_line(line: str) -> str | None:
    """The simulator's URL if `line` is its ready line, else None."""
    line = line.strip()
    if not line.startswith(READY_PREFIX):
        return None
    url = line[len(READY_PREFIX) :]
    return url if url.startswith("http://") and " " not in url else None


def _parse_args(argv: Sequence[str] | None) -> SimConfig:
    defaults = SimConfig(port=30000)
    parser = argparse.ArgumentParser(
        prog="python -m standins.sglang",
        description="SGLang simulator: SGLang's HTTP API with a radix cache and a latency model, no GPU.",
    )
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default: loopback)")
    parser.add_argument("--port", type=int, default=defaults.port, help="port (0 picks a free one)")
    parser.add_argument("--prefill-overhead-ms", type=float, default=defaults.prefill_overhead_ms)
    parser.add_argument("--prefill-ms-per-token", type=float, default=defaults.prefill_ms_per_token)
    parser.add_argument("--decode-ms-per-token", type=float, default=defaults.decode_ms_per_token)
    parser.add_argument("--cache-capacity-tokens", type=int, default=defaults.cache_capacity_tokens)
    parser.add_argument("--context-length", type=int, default=defaults.context_length)
    parser.add_argument("--disconnect-abort-delay-s", type=float, default=defaults.disconnect_abort_delay_s)
    parser.add_argument("--request-timeout-s", type=float, default=defaults.request_timeout_s)
    parser.add_argument(
        "--disable-priority-scheduling", action="store_true", help="ignore `priority` (first come, first served)"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name, value in (
        ("--prefill-overhead-ms", args.prefill_overhead_ms),
        ("--prefill-ms-per-token", args.prefill_ms_per_token),
        ("--decode-ms-per-token", args.decode_ms_per_token),
        ("--disconnect-abort-delay-s", args.disconnect_abort_delay_s),
    ):
        if value < 0:
            parser.error(f"{name} must be >= 0")
    if args.cache_capacity_tokens < 1 or args.context_length < 1 or args.request_timeout_s <= 0:
        parser.error("--cache-capacity-tokens, --context-length and --request-timeout-s must be positive")
    return SimConfig(
        host=args.host,
        port=args.port,
        prefill_overhead_ms=args.prefill_overhead_ms,
        prefill_ms_per_token=args.prefill_ms_per_token,
        decode_ms_per_token=args.decode_ms_per_token,
        cache_capacity_tokens=args.cache_capacity_tokens,
        context_length=args.context_length,
        disconnect_abort_delay_s=args.disconnect_abort_delay_s,
        request_timeout_s=args.request_timeout_s,
        enable_priority_scheduling=not args.disable_priority_scheduling,
    )


async def _serve(config: SimConfig) -> None:
    sim = SGLangSimulator(config)
    await sim.start()
    print(format_ready_line(sim.url), flush=True)
    try:
        await wait_for_stop_signal()
    finally:
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    config = _parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))
    return 0
