"""A raw WebSocket peer for server tests: sends exactly what a test says, records every event.

Deliberately not the `client` package: these tests check the server byte by byte, including
inputs a well-behaved client would never send.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FRAME_BYTES = 3200  # 100 ms at 16 kHz


class Peer:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.events: list[dict[str, Any]] = []  # text events, each with "_t" (monotonic arrival)
        self.audio: list[tuple[float, int]] = []  # (arrival, bytes) of binary frames
        self.audio_bytes = 0
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> Peer:
        conn = await connect(url, open_timeout=30, max_size=16 << 20, **kwargs)
        peer = cls(conn)
        await peer.wait_for(lambda e: e["type"] in ("session.created", "error"))
        return peer

    async def _read(self) -> None:
        try:
            async for message in self.conn:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.audio.append((now, len(message)))
                    self.audio_bytes += len(message)
                else:
                    event = json.loads(message)
                    event["_t"] = now
                    event["_audio_bytes"] = self.audio_bytes
                    self.events.append(event)
                async with self._changed:
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            seen = 0
            async with self._changed:
                while True:
                    for event in self.events[seen:]:
                        if predicate(event):
                            return event
                    seen = len(self.events)
                    if self.closed.is_set():
                        raise AssertionError(f"connection closed while waiting; events: {self.types()}")
                    await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    async def wait_audio(self, frames: int = 1, timeout: float = 60.0) -> None:
        """Until `frames` more binary frames have arrived (or the connection closed)."""
        target = len(self.audio) + frames

        async def arrived() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.audio) >= target or self.closed.is_set())

        await asyncio.wait_for(arrived(), timeout)

    async def wait_closed(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def errors(self) -> list[str]:
        return [e["code"] for e in self.of("error")]

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.conn.send(json.dumps(obj))

    async def send_pcm(self, pcm: bytes, speed: float = 1.8, frame_bytes: int = FRAME_BYTES) -> None:
        """Send in 100 ms frames at `speed` x real time (under the server's 2x flood limit)."""
        start = time.monotonic()
        sent_ms = 0.0
        for i in range(0, len(pcm), frame_bytes):
            frame = pcm[i : i + frame_bytes]
            if len(frame) < 320:  # the protocol's 10 ms minimum
                frame += b"\0" * (320 - len(frame))
            await self.conn.send(frame)
            sent_ms += len(frame) / 32.0
            ahead = sent_ms / speed / 1000.0 - (time.monotonic() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def close(self) -> None:
        await self.conn.close()
        self._reader.cancel()


def silence(ms: int) -> bytes:
    return b"\0" * (ms * 32)
