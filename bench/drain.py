"""SIGTERM drain time: how long a hark-server takes to exit with live sessions that are mid-reply,
and with a client that stopped reading (whose close handshake never completes).

    python -m bench.drain [--sessions 20] [--repeat 3]

Each run starts a fresh server (`hark.loadtest.spawn.ServerProcess`), opens the sessions, starts a
long typed reply in each, waits until every reply's audio flows, sends SIGTERM and times the exit.
The bound the server promises is 15 s (README, "What one client can hold"); the figures show how
much of it a drain uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from hark.loadtest.spawn import ServerProcess

REPLY = {"type": "input.text", "text": "a reply long enough to still be playing at shutdown " * 6}


async def _reading_session(url: str) -> ClientConnection:
    conn = await connect(url, open_timeout=60, max_size=16 << 20)
    await conn.recv()  # session.created
    await conn.send(json.dumps(REPLY))
    while not isinstance(await conn.recv(), bytes):  # until reply audio flows
        pass
    return conn


async def _drain(conn: ClientConnection) -> None:
    try:
        async for _ in conn:
            pass
    except Exception:  # any way the server ends it is fine here
        pass


async def one_run(sessions: int, stalled: bool, log_dir: Path) -> float:
    """Seconds from SIGTERM to the server's exit."""
    server = ServerProcess(["--max-sessions", str(sessions + 2)], log_path=log_dir / f"drain-{time.monotonic_ns()}.log")
    await server.start_async()
    try:
        peers = [await _reading_session(server.url) for _ in range(sessions)]
        readers = [asyncio.create_task(_drain(peer)) for peer in peers]
        stuck: ClientConnection | None = None
        if stalled:  # reads one message, then nothing: its library stops reading the socket
            stuck = await connect(server.url, open_timeout=60, max_queue=1)
            await stuck.send(json.dumps({"type": "session.update", "config": {"output_sample_rate": 48000}}))
            await stuck.send(json.dumps(REPLY))
            await asyncio.sleep(1.0)  # its reply is being sent into full buffers
        started = time.monotonic()
        code = await server.stop_async()
        elapsed = time.monotonic() - started
        if code != 0 or server.killed:
            raise SystemExit(f"server exited with {code} (killed: {server.killed}):\n{server.log_tail()}")
        await asyncio.gather(*readers)
        if stuck is not None:
            stuck.transport.abort()
        return elapsed
    finally:
        await server.stop_async()


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="hark-drain-") as tmp:
        for sessions, stalled in ((args.sessions, False), (args.sessions, True), (0, True)):
            times = [await one_run(sessions, stalled, Path(tmp)) for _ in range(args.repeat)]
            what = f"{sessions} live sessions mid-reply" + (" + 1 client that stopped reading" if stalled else "")
            print(
                f"SIGTERM drain, {what}: median {statistics.median(times):.2f} s, max {max(times):.2f} s"
                f" ({args.repeat} runs)",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
