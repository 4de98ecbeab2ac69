"""One WebRTC peer connection bound to one Session, whatever carried the offer.

`PeerSession.answer(offer_sdp)` returns the answer SDP; `run()` then serves the session until it
ends and says why (`Ending`); `close()` releases everything. Signalling (the `/v1/webrtc` WebSocket,
a POSTed offer, WHIP) lives in webrtc.py and the HTTP routes; media in webrtc_media.py.

hark.v1 events travel on a data channel the client opens, labelled `hark` (the page) or `hark.v1`.
Any other label is closed at once: OpenAI's WebRTC flow names its channel `oai-events` and expects
Realtime events, which this server speaks on the `/v1/realtime` WebSocket only. Where the events go
(`EventRoute`) is the signalling's choice: wait for the channel and treat a full queue as a client
that does not read (the WebSocket flow), keep the newest events until a channel opens (a POSTed
offer: the client may never open one), or nowhere (WHIP: audio in, audio out).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from enum import Enum, StrEnum
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from hark.protocol import Error, ErrorCode, ResponseDone, ResponseStatus, ServerEvent, SessionUpdate, decode_client
from hark.protocol import encode as encode_event

from ..context import ServerContext
from ..session import Session
from .webrtc_media import TRACK_RATE, ReplyAudioTrack, pump_microphone
from .webrtc_posted import OfferRefused
from .ws import session_created

log = logging.getLogger(__name__)

EVENT_CHANNEL_LABELS = frozenset({"hark", "hark.v1"})
MAX_PENDING_EVENTS = 256
MAX_CHANNEL_BUFFER = 1 << 20  # data-channel bytes queued before the client counts as not reading
MAX_INBOUND_MESSAGES = 64
DRAIN_TIMEOUT_S = 2.0  # after session.close, how long the last events and reply audio may take


class EventRoute(Enum):
    CHANNEL = "channel"  # events wait for the channel; a full queue ends the session (slow consumer)
    CHANNEL_IF_OPENED = "channel_if_opened"  # events wait for a channel; past the bound the oldest go
    NONE = "none"  # no events at all (WHIP); data channels are closed


class Ending(StrEnum):
    """Why `PeerSession.run` returned."""

    CLOSED = "closed"  # session.close handled
    PEER_GONE = "peer_gone"  # the peer connection failed (ICE consent lost) or was closed
    NEVER_CONNECTED = "never_connected"  # no connection within the connect timeout
    SLOW_CONSUMER = "slow_consumer"  # the client does not read its data channel
    STOPPED = "stopped"  # the owner called stop(): DELETE, the signalling socket closed, shutdown
    CRASHED = "crashed"  # the session's worker raised


class EventChannel:
    """The Session's outbox: events to the data channel (queued until it opens), reply audio to the track."""

    def __init__(self, track: ReplyAudioTrack, route: EventRoute, fallback: Callable[[str], None] | None) -> None:
        self._track = track
        self._route = route
        self._fallback = fallback  # where a fatal error goes while no channel is open
        self._channel: Any = None
        self._pending: deque[str] = deque()
        self.failed = asyncio.Event()

    def attach(self, channel: Any) -> None:
        self._channel = channel
        while self._pending:
            channel.send(self._pending.popleft())

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until queued events and reply audio have left."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            channel_empty = self._channel is None or self._channel.bufferedAmount == 0
            no_events = not self._pending or self._channel is None
            if channel_empty and no_events and self._track.buffered_ms() == 0:
                return
            await asyncio.sleep(0.02)

    def send_event(self, event: ServerEvent) -> None:
        if isinstance(event, ResponseDone) and event.status == ResponseStatus.CANCELLED.value:
            self._track.clear()  # the user talked over it: drop what the track has not played
        if self._route is EventRoute.NONE:
            return
        text = encode_event(event)
        if self._channel is not None and self._channel.readyState == "open":
            if self._channel.bufferedAmount > MAX_CHANNEL_BUFFER:
                log.warning(
                    "closing a slow consumer: %d bytes queued on the data channel", self._channel.bufferedAmount
                )
                self.failed.set()
                return
            self._channel.send(text)
        elif isinstance(event, Error) and event.fatal and self._fallback is not None:
            self._fallback(text)
        elif len(self._pending) < MAX_PENDING_EVENTS:
            self._pending.append(text)
        elif self._route is EventRoute.CHANNEL:
            self.failed.set()
        else:  # nobody may ever read them: keep the newest, never more than the bound
            self._pending.popleft()
            self._pending.append(text)

    def send_audio(self, pcm: bytes) -> None:
        # already at TRACK_RATE: the session's output rate is set to it at creation and a
        # session.update asking for another one is refused (`PeerSession.on_client_text`)
        self._track.push(pcm)


class PeerSession:
    """An RTCPeerConnection, its reply track and the Session they serve."""

    def __init__(
        self,
        ctx: ServerContext,
        ice_servers: list[RTCIceServer],
        route: EventRoute,
        connect_timeout_s: float,
        fallback: Callable[[str], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._route = route
        self._connect_timeout_s = connect_timeout_s
        # no ICE servers unless configured: aiortc would otherwise add a public STUN server
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers))
        self.track = ReplyAudioTrack()
        self.events = EventChannel(self.track, route, fallback)
        self.session = Session(ctx, self.events, uuid.uuid4().hex)
        self.session.config = self.session.config.updated({"output_sample_rate": TRACK_RATE})
        self._created = time.monotonic()
        self._connected = asyncio.Event()
        self._gone = asyncio.Event()
        self._stop = asyncio.Event()
        # client text from the data channel, in order, bounded: one consumer, never a task per message
        self._inbound: asyncio.Queue[str] = asyncio.Queue(maxsize=MAX_INBOUND_MESSAGES)
        self._tasks: list[asyncio.Task[Any]] = []
        self._closed = False
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def id(self) -> str:
        return self.session.id

    async def answer(self, offer_sdp: str) -> str:
        """The answer SDP, candidates included (aiortc gathers them all here: no trickle ICE)."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            self.pc.addTrack(self.track)  # before the answer, so it rides the peer's send-receive transceiver
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError and others for a malformed SDP or no common codec
            raise OfferRefused(str(exc) or type(exc).__name__) from exc
        return str(self.pc.localDescription.sdp)

    def stop(self) -> None:
        """End the session: `run` returns `Ending.STOPPED`."""
        self._stop.set()

    async def run(self) -> Ending:
        """Serve the session until it ends; the caller then calls `close()`."""
        self.events.send_event(session_created(self._ctx, self.session))
        worker = asyncio.create_task(self.session.run(), name=f"{self.id}-input")
        watchdog = asyncio.create_task(self._watch_connect(), name=f"{self.id}-connect")
        consumer = asyncio.create_task(self._consume(), name=f"{self.id}-channel")
        gone = asyncio.create_task(self._gone.wait())
        failed = asyncio.create_task(self.events.failed.wait())
        stopped = asyncio.create_task(self._stop.wait())
        self._tasks += [worker, watchdog, consumer, gone, failed, stopped]
        await asyncio.wait({worker, watchdog, gone, failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if worker.done() and not worker.cancelled() and worker.exception() is not None:
            log.error("session %s crashed", self.id, exc_info=worker.exception())
            self.events.send_event(Error(code=ErrorCode.INTERNAL_ERROR.value, message="internal error", fatal=True))
            return Ending.CRASHED
        if failed.done():
            return Ending.SLOW_CONSUMER
        if stopped.done():
            return Ending.STOPPED
        if gone.done():
            return Ending.PEER_GONE
        if watchdog.done():
            log.info("session %s: no WebRTC connection within %g s", self.id, self._connect_timeout_s)
            return Ending.NEVER_CONNECTED
        await self.events.drain(timeout_s=DRAIN_TIMEOUT_S)  # session.close: let the last of it leave
        return Ending.CLOSED

    async def close(self) -> None:
        """Cancel the session's tasks and close the peer connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.track.stop()
        await self.pc.close()

    async def on_client_text(self, message: str) -> None:
        """A hark.v1 client event; the rates are the transport's (16 kHz in, 48 kHz out), whatever it asks."""
        try:
            event = decode_client(message)
        except Exception:  # the session reports it with the right code
            await self.session.on_text(message)
            return
        if isinstance(event, SessionUpdate):
            fixed = {"input_sample_rate": 16000, "output_sample_rate": TRACK_RATE}
            for name, rate in fixed.items():
                if event.config.get(name, rate) != rate:
                    self.session.report(ErrorCode.INVALID_FIELD, f"config.{name} is fixed at {rate} over WebRTC")
                    return
        await self.session.on_text(message)

    def add_task(self, task: asyncio.Task[Any]) -> None:
        """A task of the signalling's that `close()` cancels with the session's own."""
        self._tasks.append(task)

    # ------------------------------------------------------------------ peer connection callbacks

    def _on_datachannel(self, channel: Any) -> None:
        if self._route is EventRoute.NONE or channel.label not in EVENT_CHANNEL_LABELS:
            log.info("session %s: data channel %r closed (events go on 'hark' or 'hark.v1')", self.id, channel.label)
            channel.close()
            return

        def on_message(message: Any) -> None:
            if not isinstance(message, str):
                return
            try:
                self._inbound.put_nowait(message)
            except asyncio.QueueFull:
                self.session.report(ErrorCode.RATE_LIMITED, "too many data-channel messages at once; message dropped")

        channel.add_listener("message", on_message)
        self.events.attach(channel)

    def _on_track(self, remote: MediaStreamTrack) -> None:
        if remote.kind == "audio":
            self._tasks.append(asyncio.create_task(pump_microphone(remote, self.session), name=f"{self.id}-mic"))

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("session %s: peer connection %s", self.id, state)
        if state == "connected":
            self._ctx.metrics.observe("webrtc_setup", time.monotonic() - self._created)
            self._connected.set()
        if state in ("failed", "closed"):
            self._gone.set()

    async def _watch_connect(self) -> None:
        """Returns (ending the session) when the peer has not connected within the bound."""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._connected.wait()
        except TimeoutError:
            return
        await asyncio.Event().wait()  # connected: the other watchers end it from here

    async def _consume(self) -> None:
        while True:
            await self.on_client_text(await self._inbound.get())
