"""Loaded by the server subprocesses of tests/test_hardening.py (PYTHONPATH): injects the faults an
unexpected bug would cause, keyed on a marker in the client's own messages, so a test can make one
session's reader or writer fail at a moment it chooses.

- HARK_FAULT_READER=MARKER: a text message containing MARKER makes `Session.on_text` raise.
- HARK_FAULT_WRITER=MARKER: an outgoing text message containing MARKER makes the socket's send raise
  (a ping whose id is MARKER does it: the pong echoes the id).
- HARK_FAULT_STALL_AUDIO_S=SECONDS: a session's first audio frame holds its reader that long, as a
  full inbox would (the server stops reading the socket: backpressure on the client).
- HARK_FAULT_HANG_STOP=1: a step of the server's shutdown never finishes, not even when cancelled
  (what only the exit watchdog ends).
"""

from __future__ import annotations

import os
from typing import Any

_READER = os.environ.get("HARK_FAULT_READER")
_WRITER = os.environ.get("HARK_FAULT_WRITER")
_STALL_AUDIO_S = float(os.environ.get("HARK_FAULT_STALL_AUDIO_S", "0"))
_HANG_STOP = os.environ.get("HARK_FAULT_HANG_STOP") == "1"


class InjectedFault(RuntimeError):
    pass


if _READER:
    from hark.server.session import Session

    _on_text = Session.on_text

    async def on_text(self: Session, data: str) -> None:
        if _READER in data:
            raise InjectedFault("injected fault in the session's event handling")
        await _on_text(self, data)

    Session.on_text = on_text  # type: ignore[method-assign]

if _WRITER:
    from websockets.asyncio.server import ServerConnection

    _send = ServerConnection.send

    async def send(self: ServerConnection, message: Any, text: bool | None = None) -> None:
        if isinstance(message, str) and _WRITER in message:
            raise InjectedFault("injected fault in the socket's send")
        await _send(self, message, text=text)

    ServerConnection.send = send  # type: ignore[method-assign]

if _STALL_AUDIO_S:
    import asyncio

    from hark.server.session import Session

    _on_binary = Session.on_binary
    _stalled: set[int] = set()

    async def on_binary(self: Session, frame: bytes) -> None:
        if id(self) not in _stalled:
            _stalled.add(id(self))
            await asyncio.sleep(_STALL_AUDIO_S)
        await _on_binary(self, frame)

    Session.on_binary = on_binary  # type: ignore[method-assign]

if _HANG_STOP:
    import asyncio

    # a step of the server's shutdown (app.py runs as __main__: patch what it calls, not it)
    from hark.server.vad_batch import VadBatcher

    async def stop(self: VadBatcher) -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:  # the worst kind of stuck: it even ignores cancellation
                continue

    VadBatcher.stop = stop  # type: ignore[method-assign]
