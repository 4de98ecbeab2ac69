"""WebRTC for browsers and WebRTC clients (aiortc, the `webrtc` extra): Opus in and out.

The peer connection and its Session do not depend on how the offer arrived (webrtc_peer.py):
- `/v1/webrtc` WebSocket (the page): the client sends `{"type": "webrtc.offer", "sdp"}` with its ICE
  candidates gathered (no trickle ICE), the server answers `webrtc.answer`. hark.v1 events go both
  ways on the data channel `hark`; client events are also accepted on the signalling socket, and a
  fatal error before the channel opens goes there. The session ends when the peer connection fails
  or closes, the signalling socket closes, or the peer does not connect in time.
- a POSTed offer (`POST /v1/webrtc/offer`, WHIP's `POST /v1/whip`; the routes are in
  server/http/webrtc_routes.py): `open_posted` takes a slot and answers; the session lives on its
  own until the peer goes, `end_posted` (the route's DELETE) or shutdown (`close_all`).
Either way the microphone track is resampled to 16 kHz mono for the Session, reply speech goes out at
48 kHz stereo, and a session holds one admission slot for exactly as long as it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import time
from dataclasses import dataclass, field

from aiortc import RTCIceServer
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from hark.protocol import CloseCode, Error, ErrorCode, encode

from ..context import ServerContext
from .webrtc_media import TRACK_RATE, ReplyAudioTrack, allow_loopback_candidates
from .webrtc_peer import Ending, EventRoute, PeerSession
from .webrtc_posted import AdmissionRefused, OfferRefused, PostedKind
from .ws import Admission

__all__ = [
    "TRACK_RATE",
    "AdmissionRefused",
    "OfferRefused",
    "PostedKind",
    "PostedSession",
    "ReplyAudioTrack",
    "WebRTCHandler",
    "allow_loopback_candidates",
]

log = logging.getLogger(__name__)

OFFER_TIMEOUT_S = 10.0
TEARDOWN_TIMEOUT_S = 5.0  # how long a DELETE or shutdown waits for a session to stop


@dataclass(eq=False, slots=True)
class PostedSession:
    peer: PeerSession
    kind: PostedKind
    owner: str  # the API key that created it ("" without keys): only that key may end it
    task: asyncio.Task[None] | None = field(default=None)

    @property
    def id(self) -> str:
        return self.peer.id


class WebRTCHandler:
    """Serves `/v1/webrtc` (signalling on a WebSocket) and the sessions of POSTed offers."""

    def __init__(self, ctx: ServerContext, admission: Admission) -> None:
        self._ctx = ctx
        self.admission = admission
        self._ice_servers = [RTCIceServer(**server) for server in ctx.config.webrtc_ice_servers]
        self.connect_timeout_s = ctx.config.webrtc_connect_timeout_s
        self._posted: dict[str, PostedSession] = {}
        if ipaddress.ip_address(_resolve(ctx.config.host)).is_loopback:
            allow_loopback_candidates()

    # ------------------------------------------------------------------ the WebSocket flow

    async def __call__(self, conn: ServerConnection) -> None:
        async with self.admission.slot(conn) as admitted:
            if admitted:
                await self._serve(conn)

    async def _serve(self, conn: ServerConnection) -> None:
        offer = await self._read_offer(conn)
        if offer is None:
            return
        fatal_sends: set[asyncio.Task[None]] = set()

        def send_fatal(text: str) -> None:  # before the data channel opens, a fatal error goes here
            task = asyncio.get_running_loop().create_task(_send_quietly(conn, text))
            fatal_sends.add(task)
            task.add_done_callback(fatal_sends.discard)

        peer = PeerSession(self._ctx, self._ice_servers, EventRoute.CHANNEL, self.connect_timeout_s, send_fatal)
        close_code, close_reason = CloseCode.NORMAL, "session closed"
        try:
            try:
                answer = await peer.answer(offer)
            except OfferRefused as exc:
                log.info("bad WebRTC offer: %s", exc)
                await self._refuse(conn, ErrorCode.INVALID_FIELD, f"webrtc.offer: the SDP was refused: {exc}")
                return
            await conn.send(json.dumps({"type": "webrtc.answer", "sdp": answer}))
            peer.add_task(asyncio.create_task(self._read_signalling(conn, peer), name=f"{peer.id}-signalling"))
            log.info("session %s opened over WebRTC from %s", peer.id, conn.remote_address)
            ending = await peer.run()
            if ending is Ending.CRASHED:
                close_code, close_reason = CloseCode.INTERNAL_ERROR, ErrorCode.INTERNAL_ERROR.value
            elif ending is Ending.NEVER_CONNECTED:
                close_reason = f"no WebRTC connection within {self.connect_timeout_s:g} s of the answer"
            elif ending is Ending.SLOW_CONSUMER:
                close_code = CloseCode.POLICY_VIOLATION
                close_reason = f"{ErrorCode.SLOW_CONSUMER.value}: client is not reading the data channel"
        except ConnectionClosed:
            pass  # the client left mid-signalling
        finally:
            await peer.close()
            await asyncio.gather(*fatal_sends, return_exceptions=True)  # the crash report, before the close
            with contextlib.suppress(ConnectionClosed):
                await conn.close(close_code, close_reason)
            log.info("session %s closed (WebRTC)", peer.id)

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

    @staticmethod
    async def _read_signalling(conn: ServerConnection, peer: PeerSession) -> None:
        try:
            async for message in conn:
                if isinstance(message, str):
                    await peer.on_client_text(message)
                else:
                    peer.session.report(
                        ErrorCode.INVALID_EVENT, "no binary audio on /v1/webrtc: audio goes on the track"
                    )
        except ConnectionClosed:
            pass
        finally:
            peer.stop()  # the signalling socket closed (or its reader failed): so does the session

    # ------------------------------------------------------------------ POSTed offers (HTTP, WHIP)

    async def open_posted(self, offer_sdp: str, kind: PostedKind, owner: str = "") -> tuple[PostedSession, str]:
        """A new session for an offer that came by POST, and its answer SDP. Raises AdmissionRefused
        (no slot; nothing held) or OfferRefused (the slot is given back)."""
        busy = self.admission.claim()
        if busy is not None:
            raise AdmissionRefused(busy)
        route = EventRoute.NONE if kind is PostedKind.WHIP else EventRoute.CHANNEL_IF_OPENED
        try:
            peer = PeerSession(self._ctx, self._ice_servers, route, self.connect_timeout_s)
        except BaseException:
            self.admission.release()
            raise
        posted = PostedSession(peer, kind, owner)
        started = time.monotonic()
        try:
            answer = await peer.answer(offer_sdp)
        except BaseException:
            await peer.close()
            self.admission.release()
            raise
        self._posted[posted.id] = posted
        posted.task = asyncio.create_task(self._run_posted(posted), name=f"{posted.id}-posted")
        answered_ms = (time.monotonic() - started) * 1000
        log.info("session %s opened over WebRTC (%s, answered in %.0f ms)", posted.id, kind, answered_ms)
        return posted, answer

    def find_posted(self, session_id: str, kind: PostedKind, owner: str = "") -> PostedSession | None:
        """The running session of this kind with this id, if `owner` is the key that created it."""
        posted = self._posted.get(session_id)
        if posted is None or posted.kind is not kind:
            return None
        if not hmac.compare_digest(posted.owner.encode(), owner.encode()):
            return None
        return posted

    async def end_posted(self, posted: PostedSession) -> None:
        """Ends a posted session and waits (bounded) until its slot is free."""
        self._posted.pop(posted.id, None)  # a second DELETE finds nothing, even mid-teardown
        posted.peer.stop()
        if posted.task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(posted.task), TEARDOWN_TIMEOUT_S)

    @property
    def posted_count(self) -> int:
        return len(self._posted)

    async def close_all(self) -> None:
        """Shutdown: end every posted session (bounded)."""
        sessions = list(self._posted.values())
        for posted in sessions:
            posted.peer.stop()
        tasks = [p.task for p in sessions if p.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=TEARDOWN_TIMEOUT_S)

    async def _run_posted(self, posted: PostedSession) -> None:
        ending: Ending | str = "cancelled"
        try:
            ending = await posted.peer.run()
        finally:
            try:
                await posted.peer.close()
            finally:
                self._posted.pop(posted.id, None)
                self.admission.release()
                log.info("session %s closed (WebRTC %s: %s)", posted.id, posted.kind, ending)


async def _send_quietly(conn: ServerConnection, text: str) -> None:
    with contextlib.suppress(ConnectionClosed):
        await conn.send(text)


def _resolve(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "") else host if _is_ip(host) else "0.0.0.0"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
