"""The plain-HTTP side of the server's port: an aiohttp application (server/http/front.py hands it
every connection that is not a WebSocket upgrade).

Middlewares, outermost first: metrics and errors (every failure becomes `{"error": {"code",
"message"}}`, aiohttp's own 404/405/413 included), CORS preflight and origins, API keys, the
per-key rate limit, the body cap. The same key and origin rules as the WebSocket handshake
(server/transport/ws.py). The page, /healthz, /v1/webrtc/config and /metrics (its own key rule,
as before) stay open to browsers and load balancers; every other route needs a key when keys are set.

Bodies: aiohttp enforces `client_max_size` (= --http-max-body-mb) inside request.read(), .json(),
.text() and .post(), chunked bodies included; a Content-Length over it is refused before any byte is
read. Routes that stream `request.content` themselves use `body_chunks`, which counts the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from hark.protocol import STREAM_PATH, ErrorCode
from hark.protocol.realtime import REALTIME_PATH

from ..ratelimit import TokenBucket
from ..transport.ws import KEY_MESSAGE, matching_key, offered_key_matches, offered_keys, origin_refusal
from ..web import WEBRTC_PATH, web_file
from . import audio_routes, webrtc_routes
from .errors import HttpError, error_response
from .state import HttpState

log = logging.getLogger(__name__)

STATE_KEY = web.AppKey("hark_http_state", HttpState)
# routes a browser or a load balancer fetches without a key (as before the HTTP routes existed)
OPEN_ROUTES = frozenset({"/", "/index.html", "/web/{name}", "/healthz", WEBRTC_PATH + "/config"})
# not rate limited: probes and scrapes come often, from one address, and cost next to nothing
UNLIMITED_ROUTES = frozenset({"/healthz", "/metrics"})
RATE_LIMIT_CLIENTS = 4096  # buckets kept (least recently used dropped): a bound on memory
_STATUS_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.ORIGIN_NOT_ALLOWED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.RATE_LIMITED,
    431: ErrorCode.HEADERS_TOO_LARGE,
    503: ErrorCode.SERVER_NOT_READY,
}
_CORS_EXPOSED = "Location, Retry-After, Content-Type, ETag, X-Session-Id, Hark-Session-Id"


def body_limit(state: HttpState) -> int:
    return int(state.config.http_max_body_mb * 1024 * 1024)


def route_label(request: web.Request) -> str:
    """The route's pattern, never the raw path: a bounded label set for the metrics."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def build_app(state: HttpState) -> web.Application:
    limiter = RateLimiter(state.config.http_rate_limit)
    app = web.Application(
        client_max_size=body_limit(state),
        middlewares=[
            _errors_and_metrics(state),
            _origins_and_cors(state),
            _api_keys(state),
            _rate_limit(state, limiter),
            _body_cap(state),
        ],
    )
    app[STATE_KEY] = state
    app.on_response_prepare.append(_cors_headers(state))
    _add_core_routes(app, state)
    audio_routes.add_routes(app, state)  # transcriptions, voice turns, chat completions
    webrtc_routes.add_routes(app, state)  # SDP offers by POST, WHIP
    return app


# ---------------------------------------------------------------------- the routes everyone had


def _add_core_routes(app: web.Application, state: HttpState) -> None:
    async def healthz(request: web.Request) -> web.Response:
        ready = state.ctx is not None
        body = b'{"status":"ok"}\n' if ready else b'{"status":"loading"}\n'
        return _no_store(web.Response(status=200 if ready else 503, body=body, content_type="application/json"))

    async def metrics(request: web.Request) -> web.Response:
        cfg = state.config
        if cfg.api_keys and not cfg.metrics_public and not offered_key_matches(cfg, request.headers, request.path_qs):
            raise HttpError(
                401,
                ErrorCode.UNAUTHORIZED,
                "/metrics needs an API key: 'Authorization: Bearer KEY' or '?token=KEY' (or --metrics-public)",
                {"WWW-Authenticate": 'Bearer realm="hark"'},
            )
        response = web.Response(body=state.metrics.render())
        response.content_type = "text/plain"
        response.headers[hdrs.CONTENT_TYPE] = "text/plain; version=0.0.4; charset=utf-8"
        return _no_store(response)

    async def webrtc_config(request: web.Request) -> web.Response:  # what the page needs before its offer
        body = json.dumps({"ice_servers": state.config.webrtc_ice_servers}).encode()
        return _no_store(web.Response(body=body, content_type="application/json"))

    async def page_file(request: web.Request) -> web.Response:
        static = web_file(request.path)
        if static is None:
            raise _not_found()
        body, content_type = static
        response = web.Response(body=body)
        response.headers[hdrs.CONTENT_TYPE] = content_type
        return _no_store(response)

    async def websocket_only(request: web.Request) -> web.Response:
        raise HttpError(
            426,
            ErrorCode.BAD_REQUEST,
            f"{request.path} is a WebSocket endpoint: open it with a WebSocket client",
            {"Upgrade": "websocket", "Connection": "Upgrade"},
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(WEBRTC_PATH + "/config", webrtc_config)
    for path in ("/", "/index.html", "/web/{name}"):
        app.router.add_get(path, page_file)
    for path in (STREAM_PATH, WEBRTC_PATH, REALTIME_PATH):
        app.router.add_get(path, websocket_only)


def _no_store(response: web.Response) -> web.Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _not_found() -> HttpError:
    return HttpError(404, ErrorCode.NOT_FOUND, f"not found; the WebSocket is at {STREAM_PATH}")


# ---------------------------------------------------------------------- middlewares


def _errors_and_metrics(state: HttpState) -> Middleware:
    @web.middleware
    async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except HttpError as exc:
            status = exc.status
            response = error_response(exc.status, exc.code, exc.message, exc.headers)
            if exc.status in (413, 431):  # the rest of an oversized request is not worth reading
                response.force_close()
            return response
        except web.HTTPException as exc:  # aiohttp's own (404/405 from the router, 413 from read())
            status = exc.status
            if exc.status == 413:  # client_max_size, hit while reading (a chunked body, say)
                limited = too_large(state)
                response = error_response(413, limited.code, limited.message)
                response.force_close()
                return response
            return _from_aiohttp(request, exc)
        except asyncio.CancelledError:
            status = 499  # the client went away mid-request (handler_cancellation), nginx's code for it
            raise
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return error_response(500, ErrorCode.INTERNAL_ERROR, "the server failed to answer this request")
        finally:
            route = route_label(request)
            state.metrics.http_requests.labels(route, str(status)).inc()
            state.metrics.http_duration.labels(route).observe(time.monotonic() - started)

    return errors_and_metrics


def _from_aiohttp(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:  # a redirect or a success raised as an exception: pass it on as it is
        return exc
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "www-authenticate")}
    if exc.status == 404:
        return error_response(404, ErrorCode.NOT_FOUND, _not_found().message, headers)
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ())))
        return error_response(
            405, ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} {request.path[:200]}: use {allowed}", headers
        )
    code = _STATUS_CODES.get(exc.status, ErrorCode.BAD_REQUEST if exc.status < 500 else ErrorCode.INTERNAL_ERROR)
    return error_response(exc.status, code, exc.text or exc.reason, headers)


def _origins_and_cors(state: HttpState) -> Middleware:
    @web.middleware
    async def origins_and_cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        preflight = (
            request.method == hdrs.METH_OPTIONS
            and origin is not None
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
            and getattr(request.match_info.http_exception, "status", 0) != 404
        )
        refusal = origin_refusal(state.config, origin)
        if refusal is not None and (preflight or route_label(request) not in OPEN_ROUTES):
            raise HttpError(refusal.status, refusal.code, refusal.message)
        if preflight:  # before the key check: browsers send no credentials on a preflight
            asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "Authorization, Content-Type")
            return web.Response(
                status=204,
                headers={
                    hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET, POST, DELETE, OPTIONS",
                    hdrs.ACCESS_CONTROL_ALLOW_HEADERS: asked,
                    hdrs.ACCESS_CONTROL_MAX_AGE: "600",
                },
            )
        return await handler(request)

    return origins_and_cors


def _cors_headers(state: HttpState) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        """Every response (errors and streams included): our Server header; to an allowed Origin, CORS."""
        response.headers[hdrs.SERVER] = "hark"  # as on the WebSocket handshake
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or origin_refusal(state.config, origin) is not None:
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin if state.config.allowed_origins else "*"
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = _CORS_EXPOSED
        response.headers.add(hdrs.VARY, "Origin")

    return add_headers


def _api_keys(state: HttpState) -> Middleware:
    @web.middleware
    async def api_keys(request: web.Request, handler: Handler) -> web.StreamResponse:
        cfg = state.config
        route = route_label(request)
        guarded = cfg.api_keys and route not in OPEN_ROUTES and route not in ("/metrics", "unmatched")
        if guarded and not offered_key_matches(cfg, request.headers, request.path_qs):
            raise HttpError(401, ErrorCode.UNAUTHORIZED, KEY_MESSAGE, {"WWW-Authenticate": 'Bearer realm="hark"'})
        return await handler(request)

    return api_keys


class RateLimiter:
    """A token bucket per client (API key, or address without keys), the least recent dropped past a bound."""

    def __init__(self, rate_per_s: float, max_clients: int = RATE_LIMIT_CLIENTS) -> None:
        self.rate = rate_per_s
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def retry_after_s(self, client: str) -> int | None:
        """None: go ahead; else whole seconds until a request will be let through."""
        if self.rate <= 0:
            return None
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate, max(2.0 * self.rate, 1.0))
            if len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        if bucket.try_take(1):
            return None
        return max(1, math.ceil(1.0 / self.rate))


def _client_id(state: HttpState, request: web.Request) -> str:
    """Per API key when a valid one is offered (wherever the client connects from), else per address."""
    key = matching_key(state.config, offered_keys(request.headers, request.path_qs)) if state.config.api_keys else None
    if key is not None:
        return "key:" + key
    return "ip:" + (request.remote or "?")


def _rate_limit(state: HttpState, limiter: RateLimiter) -> Middleware:
    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if route_label(request) not in UNLIMITED_ROUTES:
            retry_after = limiter.retry_after_s(_client_id(state, request))
            if retry_after is not None:
                raise HttpError(
                    429,
                    ErrorCode.RATE_LIMITED,
                    f"over {limiter.rate:g} requests a second; retry in {retry_after} s",
                    {"Retry-After": str(retry_after)},
                )
        return await handler(request)

    return rate_limit


def _body_cap(state: HttpState) -> Middleware:
    limit = body_limit(state)

    @web.middleware
    async def body_cap(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > limit:  # refused before a byte of it is read
            raise too_large(state)
        return await handler(request)

    return body_cap


def too_large(state: HttpState) -> HttpError:
    return HttpError(
        413,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the request body is over {state.config.http_max_body_mb:g} MB (--http-max-body-mb)",
    )


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body as it arrives, for routes that do not want it all in memory; 413 past the cap."""
    state = request.app[STATE_KEY]
    limit, seen = body_limit(state), 0
    async for chunk in request.content.iter_any():
        seen += len(chunk)
        if seen > limit:
            raise too_large(state)
        yield chunk
