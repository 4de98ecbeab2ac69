"""WebRTC for browsers (aiortc, the `webrtc` extra): Opus in and out, hark.v1 on a data channel.

Signalling is one WebSocket at `/v1/webrtc`: the client sends `{"type": "webrtc.offer", "sdp"}`
with its ICE candidates gathered (no trickle ICE), the server answers `webrtc.answer`. Then:
- the browser's microphone track is decoded by aiortc, resampled with PyAV to 16 kHz mono and
  fed to the same `Session` the WebSocket transport uses, in 100 ms frames;
- reply speech goes out on an audio track at 48 kHz stereo (aiortc lowers mono by 3 dB), its
  frames paced by the track's own clock;
- hark.v1 events go both ways on the data channel `hark`; client events are also accepted on
  the signalling socket, and errors before the channel opens go there.
The session ends when the peer connection fails or closes, or the signalling socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import ipaddress
import json
import logging
import time
import uuid
from collections import deque
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from hark.protocol import (
    CloseCode,
    Error,
    ErrorCode,
    ResponseDone,
    ResponseStatus,
    ServerEvent,
    SessionUpdate,
    decode_client,
    encode,
)

from ..context import ServerContext
from ..session import Session
from .ws import Admission, session_created

log = logging.getLogger(__name__)

TRACK_RATE = 48000
TRACK_FRAME = 960  # 20 ms, what Opus packs
INPUT_FRAME_BYTES = 3200  # 100 ms at 16 kHz: the session's recommended frame
MAX_PENDING_EVENTS = 256
MAX_CHANNEL_BUFFER = 1 << 20  # data-channel bytes queued before the client counts as not reading
OFFER_TIMEOUT_S = 10.0


def allow_loopback_candidates() -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; a server bound to loopback needs it."""
    import aioice.ice

    original = aioice.ice.get_host_addresses
    if getattr(original, "_hark_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        return (["127.0.0.1"] if use_ipv4 else []) + addresses

    with_loopback._hark_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = with_loopback


class ReplyAudioTrack(MediaStreamTrack):
    """Reply speech as 20 ms stereo frames at 48 kHz; silence when there is nothing to say."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pcm = bytearray()  # mono int16 at 48 kHz, waiting to be sent
        self._start: float | None = None
        self._pts = 0

    def push(self, pcm_mono_48k: bytes) -> None:
        self._pcm += pcm_mono_48k

    def clear(self) -> None:
        self._pcm.clear()

    def buffered_ms(self) -> float:
        return len(self._pcm) / 2 * 1000.0 / TRACK_RATE

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        # pace by the track's clock, as aiortc's own AudioStreamTrack does
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += TRACK_FRAME
            wait = self._start + self._pts / TRACK_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        need = TRACK_FRAME * 2
        chunk = bytes(self._pcm[:need])
        del self._pcm[:need]
        mono = np.zeros(TRACK_FRAME, dtype="<i2")
        mono[: len(chunk) // 2] = np.frombuffer(chunk, dtype="<i2")
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = TRACK_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, TRACK_RATE)
        return frame


class WebRTCOutbox:
    """Events to the data channel (queued until it opens), reply audio to the track."""

    def __init__(self, conn: ServerConnection, track: ReplyAudioTrack) -> None:
        self._conn = conn
        self._track = track
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
            if channel_empty and not self._pending and self._track.buffered_ms() == 0:
                return
            await asyncio.sleep(0.02)

    def send_event(self, event: ServerEvent) -> None:
        if isinstance(event, ResponseDone) and event.status == ResponseStatus.CANCELLED.value:
            self._track.clear()  # the user talked over it: drop what the track has not played
        text = encode(event)
        if self._channel is not None and self._channel.readyState == "open":
            if self._channel.bufferedAmount > MAX_CHANNEL_BUFFER:
                log.warning(
                    "closing a slow consumer: %d bytes queued on the data channel", self._channel.bufferedAmount
                )
                self.failed.set()
                return
            self._channel.send(text)
        elif isinstance(event, Error) and event.fatal:
            asyncio.get_running_loop().create_task(self._send_ws(text))
        elif len(self._pending) < MAX_PENDING_EVENTS:
            self._pending.append(text)
        else:
            self.failed.set()

    async def _send_ws(self, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._conn.send(text)

    def send_audio(self, pcm: bytes) -> None:
        # already at TRACK_RATE: the session's output rate is set to it at creation and a
        # session.update asking for another one is refused (`_on_client_text`)
        self._track.push(pcm)


class WebRTCHandler:
    """Serves `/v1/webrtc`: signalling, one RTCPeerConnection and one Session per connection."""

    def __init__(self, ctx: ServerContext, admission: Admission) -> None:
        self._ctx = ctx
        self.admission = admission
        self._ice_servers = [RTCIceServer(**server) for server in ctx.config.webrtc_ice_servers]
        if ipaddress.ip_address(_resolve(ctx.config.host)).is_loopback:
            allow_loopback_candidates()

    async def __call__(self, conn: ServerConnection) -> None:
        async with self.admission.slot(conn) as admitted:
            if admitted:
                await self._serve(conn)

    async def _serve(self, conn: ServerConnection) -> None:
        offer = await self._read_offer(conn)
        if offer is None:
            return
        started = time.monotonic()
        # no ICE servers unless configured: aiortc would otherwise add a public STUN server
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        track = ReplyAudioTrack()
        outbox = WebRTCOutbox(conn, track)
        session = Session(self._ctx, outbox, uuid.uuid4().hex)
        session.config = session.config.updated({"output_sample_rate": TRACK_RATE})
        ended = asyncio.Event()
        # client text from the data channel, in order, bounded: one consumer, never a task per message
        inbound: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        tasks: list[asyncio.Task[Any]] = []

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label != "hark":
                return

            def on_message(message: Any) -> None:
                if not isinstance(message, str):
                    return
                try:
                    inbound.put_nowait(message)
                except asyncio.QueueFull:
                    session.report(ErrorCode.RATE_LIMITED, "too many data-channel messages at once; message dropped")

            channel.add_listener("message", on_message)
            outbox.attach(channel)

        @pc.on("track")
        def on_track(remote: MediaStreamTrack) -> None:
            if remote.kind == "audio":
                tasks.append(asyncio.create_task(self._pump_microphone(remote, session)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: peer connection %s", session.id, pc.connectionState)
            if pc.connectionState == "connected":
                self._ctx.metrics.observe("webrtc_setup", time.monotonic() - started)
            if pc.connectionState in ("failed", "closed"):
                ended.set()

        close_code, close_reason = CloseCode.NORMAL, "session closed"
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
                pc.addTrack(track)  # before the answer, so it rides the browser's send-receive transceiver
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:  # a malformed SDP, no common codec
                log.info("bad WebRTC offer: %s", exc)
                await self._refuse(conn, ErrorCode.INVALID_FIELD, f"webrtc.offer: the SDP was refused: {exc}")
                return
            await conn.send(json.dumps({"type": "webrtc.answer", "sdp": pc.localDescription.sdp}))
            outbox.send_event(session_created(self._ctx, session))
            tasks.append(asyncio.create_task(self._consume(inbound, session), name=f"{session.id}-channel"))
            worker = asyncio.create_task(session.run(), name=f"{session.id}-input")
            reader = asyncio.create_task(self._read_signalling(conn, session), name=f"{session.id}-signalling")
            watchers = [asyncio.create_task(ended.wait()), asyncio.create_task(outbox.failed.wait())]
            tasks += [worker, reader, *watchers]
            log.info("session %s opened over WebRTC from %s", session.id, conn.remote_address)
            await asyncio.wait({worker, reader, *watchers}, return_when=asyncio.FIRST_COMPLETED)
            if worker.done() and not worker.cancelled() and worker.exception() is not None:
                log.error("session %s crashed", session.id, exc_info=worker.exception())
                outbox.send_event(Error(code=ErrorCode.INTERNAL_ERROR.value, message="internal error", fatal=True))
                close_code, close_reason = CloseCode.INTERNAL_ERROR, ErrorCode.INTERNAL_ERROR.value
            elif outbox.failed.is_set():
                close_code = CloseCode.POLICY_VIOLATION
                close_reason = f"{ErrorCode.SLOW_CONSUMER.value}: client is not reading the data channel"
            elif worker.done():  # session.close: let the last events and reply audio leave first
                await outbox.drain(timeout_s=2.0)
        except ConnectionClosed:
            pass  # the client left mid-signalling
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            track.stop()
            await pc.close()
            with contextlib.suppress(ConnectionClosed):
                await conn.close(close_code, close_reason)
            log.info("session %s closed (WebRTC)", session.id)

    async def _consume(self, inbound: asyncio.Queue[str], session: Session) -> None:
        while True:
            await self._on_client_text(session, await inbound.get())

    async def _read_offer(self, conn: ServerConnection) -> str | None:
        try:
            raw = await asyncio.wait_for(conn.recv(), OFFER_TIMEOUT_S)
            message = json.loads(raw)
        except TimeoutError:
            await self._refuse(conn, ErrorCode.INVALID_EVENT, f"no webrtc.offer within {OFFER_TIMEOUT_S:g} s")
            return None
        except (ValueError, TypeError):
            await self._refuse(conn, ErrorCode.INVALID_JSON, "the first message must be a webrtc.offer JSON object")
            return None
        except ConnectionClosed:
            return None
        if not isinstance(message, dict) or message.get("type") != "webrtc.offer":
            await self._refuse(conn, ErrorCode.INVALID_EVENT, "the first message must be {type: webrtc.offer, sdp}")
            return None
        sdp = message.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            await self._refuse(conn, ErrorCode.INVALID_FIELD, "webrtc.offer: 'sdp' must be a non-empty string")
            return None
        return sdp

    async def _refuse(self, conn: ServerConnection, code: ErrorCode, message: str) -> None:
        self._ctx.metrics.errors.labels(code.value).inc()
        with contextlib.suppress(ConnectionClosed):
            await conn.send(encode(Error(code=code.value, message=message, fatal=True)))
            await conn.close(CloseCode.POLICY_VIOLATION, code.value)

    async def _on_client_text(self, session: Session, message: str) -> None:
        # the microphone arrives at 16 kHz whatever the client asks: rates are the transport's
        try:
            event = decode_client(message)
        except Exception:  # the session reports it with the right code
            await session.on_text(message)
            return
        if isinstance(event, SessionUpdate):
            fixed = {"input_sample_rate": 16000, "output_sample_rate": TRACK_RATE}
            for name, rate in fixed.items():
                if event.config.get(name, rate) != rate:
                    session.report(ErrorCode.INVALID_FIELD, f"config.{name} is fixed at {rate} over WebRTC")
                    return
        await session.on_text(message)

    async def _read_signalling(self, conn: ServerConnection, session: Session) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in conn:
                if isinstance(message, str):
                    await self._on_client_text(session, message)
                else:
                    session.report(ErrorCode.INVALID_EVENT, "no binary audio on /v1/webrtc: audio goes on the track")

    @staticmethod
    async def _pump_microphone(remote: MediaStreamTrack, session: Session) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        pending = bytearray()
        try:
            while True:
                frame = await remote.recv()
                assert isinstance(frame, av.AudioFrame)
                for out in resampler.resample(frame):
                    pending += out.to_ndarray().astype("<i2").tobytes()
                while len(pending) >= INPUT_FRAME_BYTES:
                    await session.on_binary(bytes(pending[:INPUT_FRAME_BYTES]))
                    del pending[:INPUT_FRAME_BYTES]
        except MediaStreamError:
            return


def _resolve(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "") else host if _is_ip(host) else "0.0.0.0"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
