"""WebRTC offers by POST and WHIP ingest, on the server's HTTP port.

- `POST /v1/webrtc/offer`: an `application/sdp` body (or JSON `{"type": "offer", "sdp"}`) -> `201`
  with the answer (SDP, or JSON `{"type": "answer", "sdp", "session_id"}` for a JSON request), the
  session id in `Hark-Session-Id` and `Location: /v1/webrtc/sessions/<id>`. hark.v1 events travel on
  a data channel the client opens, labelled `hark` or `hark.v1` (server/transport/webrtc_peer.py).
- `POST /v1/whip`: WHIP (RFC 9725) ingest, `application/sdp` only -> `201`, the answer SDP and
  `Location: /v1/whip/<id>`. Audio in, reply speech out (on a send-receive audio m-line), no events.
- `DELETE` on either location ends that session (`204`); an id that is not running, of the other
  route, or created with another API key is `404 unknown_session`. No trickle ICE (the offer carries
  its candidates): WHIP's `PATCH` is answered 405.
With `--workers N` a DELETE that reaches a process without the session is relayed to the others
(webrtc_relay.py).
A POSTed session takes an admission slot exactly like a WebSocket one (`503 server_busy` when full)
and gives it back when it ends: DELETE, the peer closing or failing, the peer not connecting within
`webrtc_connect_timeout_s`, `session.close` on its data channel, or shutdown.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from aiohttp import web

from hark.protocol import ErrorCode

from ..transport.webrtc_posted import AdmissionRefused, OfferRefused, PostedKind
from .errors import HttpError
from .state import HttpState
from .webrtc_relay import WorkerRelay, relay_dir

if TYPE_CHECKING:  # the webrtc extra may be missing: the handler is imported only where it is
    from ..transport.webrtc import WebRTCHandler

OFFER_PATH = "/v1/webrtc/offer"
SESSIONS_PATH = "/v1/webrtc/sessions"
WHIP_PATH = "/v1/whip"
SESSION_ID_HEADER = "Hark-Session-Id"
MAX_SDP_BYTES = 64 * 1024  # a browser's offer with every candidate is a few KiB
SDP_TYPE = "application/sdp"
JSON_TYPE = "application/json"
BUSY_RETRY_AFTER_S = "1"


def add_routes(app: web.Application, state: HttpState) -> None:
    routes = WebRTCRoutes(state)
    offer_session, whip_session = SESSIONS_PATH + "/{session_id}", WHIP_PATH + "/{session_id}"
    app.router.add_post(OFFER_PATH, routes.post_offer)
    app.router.add_delete(offer_session, routes.delete_offer_session)
    app.router.add_post(WHIP_PATH, routes.post_whip)
    app.router.add_delete(whip_session, routes.delete_whip_session)
    app.on_shutdown.append(routes.on_shutdown)
    directory = relay_dir(state.config.reuse_port)
    if directory is not None:  # --workers: a DELETE may reach a process that does not hold the session
        local = [(offer_session, routes.delete_offer_here), (whip_session, routes.delete_whip_here)]
        routes.relay = WorkerRelay(directory, local)
        app.on_startup.append(routes.relay.start)
        app.on_cleanup.append(routes.relay.stop)


class WebRTCRoutes:
    def __init__(self, state: HttpState) -> None:
        self._state = state
        self.relay: WorkerRelay | None = None

    async def post_offer(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        if content_type not in (SDP_TYPE, JSON_TYPE):
            raise _unsupported(content_type, f"{SDP_TYPE} or {JSON_TYPE}")
        body = await _read_capped(request, MAX_SDP_BYTES)
        as_json = content_type == JSON_TYPE
        sdp = _sdp_of_json(body) if as_json else _decode_sdp(body)
        session_id, answer = await self._open(request, sdp, PostedKind.OFFER)
        headers = _session_headers(session_id, f"{SESSIONS_PATH}/{session_id}")
        if as_json:
            payload = {"type": "answer", "sdp": answer, "session_id": session_id}
            return web.json_response(payload, status=201, headers=headers)
        return web.Response(status=201, text=answer, content_type=SDP_TYPE, headers=headers)

    async def post_whip(self, request: web.Request) -> web.Response:
        if request.content_type != SDP_TYPE:
            raise _unsupported(request.content_type, SDP_TYPE)
        sdp = _decode_sdp(await _read_capped(request, MAX_SDP_BYTES))
        session_id, answer = await self._open(request, sdp, PostedKind.WHIP)
        headers = _session_headers(session_id, f"{WHIP_PATH}/{session_id}")
        return web.Response(status=201, text=answer, content_type=SDP_TYPE, headers=headers)

    async def delete_offer_session(self, request: web.Request) -> web.Response:
        return await self._delete(request, PostedKind.OFFER, ask_others=True)

    async def delete_whip_session(self, request: web.Request) -> web.Response:
        return await self._delete(request, PostedKind.WHIP, ask_others=True)

    async def delete_offer_here(self, request: web.Request) -> web.Response:
        """Another worker's relayed DELETE (webrtc_relay.py): this process's sessions only."""
        return await self._delete(request, PostedKind.OFFER, ask_others=False)

    async def delete_whip_here(self, request: web.Request) -> web.Response:
        return await self._delete(request, PostedKind.WHIP, ask_others=False)

    async def on_shutdown(self, app: web.Application) -> None:
        if self._state.webrtc is not None:
            await self._state.webrtc.close_all()

    async def _open(self, request: web.Request, sdp: str, kind: PostedKind) -> tuple[str, str]:
        handler = self._handler()
        _check_offer(sdp)
        try:
            posted, answer = await handler.open_posted(sdp, kind, _owner(request, self._state))
        except AdmissionRefused as exc:
            raise HttpError(503, ErrorCode.SERVER_BUSY, str(exc), {"Retry-After": BUSY_RETRY_AFTER_S}) from None
        except OfferRefused as exc:
            raise HttpError(400, ErrorCode.INVALID_SDP, f"the SDP offer was refused: {exc}") from None
        return posted.id, answer

    async def _delete(self, request: web.Request, kind: PostedKind, ask_others: bool) -> web.Response:
        handler = self._handler()
        session_id = request.match_info["session_id"]
        posted = handler.find_posted(session_id, kind, _owner(request, self._state))
        if posted is None:
            if ask_others and self.relay is not None and await self.relay.delete_elsewhere(request):
                return web.Response(status=204)
            raise HttpError(404, ErrorCode.UNKNOWN_SESSION, f"no running {kind} session {session_id[:64]!r}")
        await handler.end_posted(posted)
        return web.Response(status=204)

    def _handler(self) -> WebRTCHandler:
        self._state.ready()  # 503 server_not_ready while the models load
        handler = self._state.webrtc
        if handler is None:
            raise HttpError(
                503,
                ErrorCode.SERVER_NOT_READY,
                "WebRTC is not installed on this server: pip install 'hark[webrtc]' (aiortc)",
            )
        return handler


# ---------------------------------------------------------------------- request bodies


async def _read_capped(request: web.Request, cap: int) -> bytes:
    """The body, refused as soon as it is known to be over `cap` (from Content-Length, or while reading)."""
    if request.content_length is not None and request.content_length > cap:
        raise _too_large(cap)
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > cap:
            raise _too_large(cap)
    return bytes(body)


def _decode_sdp(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, ErrorCode.INVALID_SDP, "the body is not UTF-8 text, so not an SDP offer") from None


def _sdp_of_json(body: bytes) -> str:
    try:
        offer = json.loads(body)
    except ValueError:
        raise HttpError(400, ErrorCode.INVALID_JSON, 'not JSON: send {"type": "offer", "sdp": ...}') from None
    if not isinstance(offer, dict):
        raise HttpError(400, ErrorCode.INVALID_JSON, 'the body must be a JSON object {"type": "offer", "sdp": ...}')
    unknown = sorted(set(offer) - {"type", "sdp"})
    if unknown:
        raise HttpError(400, ErrorCode.INVALID_FIELD, f"unknown fields {unknown[:8]}: only 'type' and 'sdp'")
    if offer.get("type") != "offer":
        raise HttpError(400, ErrorCode.INVALID_FIELD, "'type' must be 'offer'")
    sdp = offer.get("sdp")
    if not isinstance(sdp, str):
        raise HttpError(400, ErrorCode.INVALID_FIELD, "'sdp' must be a string")
    return sdp


def _check_offer(sdp: str) -> None:
    """What we can tell before aiortc sees it: SDP at all, and a microphone to listen to."""
    lines = [line.strip() for line in sdp.splitlines()]
    if not lines or lines[0] != "v=0":
        raise HttpError(400, ErrorCode.INVALID_SDP, "not an SDP offer: it must start with 'v=0'")
    media = [line for line in lines if line.startswith("m=")]
    if not any(line.startswith("m=audio ") for line in media):
        found = ", ".join(line.split(" ", 1)[0][2:] for line in media) or "none"
        raise HttpError(400, ErrorCode.SDP_NO_AUDIO, f"the offer has no audio m-line (media: {found[:100]})")


def _owner(request: web.Request, state: HttpState) -> str:
    """The configured API key this request carries ("" without keys): a session belongs to its key."""
    offered: list[str] = []
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        offered.append(authorization[7:].strip())
    offered += parse_qs(request.query_string).get("token", [])
    for key in state.config.api_keys:
        if any(hmac.compare_digest(o.encode(), key.encode()) for o in offered):
            return key
    return ""


def _session_headers(session_id: str, location: str) -> dict[str, str]:
    return {
        "Location": location,
        SESSION_ID_HEADER: session_id,
        "Cache-Control": "no-store",
    }


def _unsupported(content_type: str, wanted: str) -> HttpError:
    return HttpError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"Content-Type {content_type[:100]!r}: send {wanted}")


def _too_large(cap: int) -> HttpError:
    return HttpError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"an SDP offer is at most {cap // 1024} KiB")
