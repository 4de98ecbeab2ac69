"""Reading one hark.v1 connection into a ConversationTracker: what a virtual device and bench/latency.py share.

Raw websockets, not hark.client: the harness runs thousands of these and needs only the tracker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from hark.protocol import ConversationTracker, ProtocolError, ServerEvent, decode_server


async def follow(
    conn: ClientConnection,
    tracker: ConversationTracker,
    on_event: Callable[[ServerEvent, float], None],
    on_refused: Callable[[ProtocolError], None],
) -> None:
    """Feed every message of `conn` to `tracker`, stamped with its arrival (time.monotonic()), until it closes.

    `on_event(event, at)` follows each event the tracker took; `on_refused(exc)` gets what it did not:
    a `ConversationError` (the server broke the conversation rules; the tracker is unchanged and goes
    on) or the `ProtocolError` of a frame that does not decode (e.g. an event type from a newer server).
    """
    try:
        async for message in conn:
            now = time.monotonic()
            try:
                if isinstance(message, bytes):
                    tracker.audio(len(message), now)
                    continue
                event = decode_server(message)
                tracker.feed(event, now)
            except ProtocolError as exc:
                on_refused(exc)
                continue
            on_event(event, now)
    except ConnectionClosed:
        pass
