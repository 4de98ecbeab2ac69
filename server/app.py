"""hark-server: startup, the one port (WebSockets and HTTP, server/http/front.py) and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from hark.protocol import STREAM_PATH, CloseCode, Error, ErrorCode, encode
from hark.protocol.ready import format_ready_line, stream_url
from hark.protocol.realtime import REALTIME_PATH

from .config import ServerConfig, load_config
from .context import ServerContext
from .engines import create_asr, create_llm, create_tts
from .http.app import build_app
from .http.front import HEAD_LIMIT, Front, select_through_front
from .http.state import HttpState
from .metrics import Metrics
from .models import ModelFileError
from .transport.realtime import RealtimeHandler, realtime_handshake_refusal, refuse_not_ready, select_subprotocol
from .transport.ws import TEARDOWN_TIMEOUT_S, Admission, HandshakeRefusal, StreamHandler, handshake_refusal
from .transport.ws_connection import guarded_connection
from .turn.setup import prepare_turn_detection
from .web import WEBRTC_PATH

if TYPE_CHECKING:
    from .tools.toolbox import MCPToolbox
    from .transport.webrtc import WebRTCHandler
from .vad import SileroVad
from .vad_batch import VadBatcher

log = logging.getLogger("hark")

# hard cap enforced by the WebSocket layer (closes with 1009); messages between the protocol's
# 1 MiB limit and this get an error event instead, so clients learn what went wrong
HARD_MAX_MESSAGE_BYTES = 8 << 20
WEBSOCKET_PATHS = (STREAM_PATH, WEBRTC_PATH)
# shutdown: close frames get this long before the sockets are aborted; handlers then get their
# teardown bound; past SHUTDOWN_DEADLINE_S after the signal the process exits regardless
SHUTDOWN_CLOSE_S = 3.0
SHUTDOWN_DEADLINE_S = 15.0
MCP_CLOSE_S = 4.0  # stdio MCP servers: stdin closed, 2 s to exit, then SIGTERM (the SDK's steps)
# plain HTTP: a request in progress at shutdown gets this long, then it is cancelled (aiohttp waits
# up to this twice: for the handler, then for its cancellation); a long SSE stream is cut here
SHUTDOWN_HTTP_S = 3.0
HTTP_KEEPALIVE_S = 75.0  # an idle keep-alive HTTP connection is closed after this (nginx's default)


class StartupError(Exception):
    """A reason the server cannot start that the person starting it can fix (one line)."""


class HarkServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self._ready = False
        self._server: Server | None = None
        self.http = HttpState(config, self.metrics)  # what the HTTP routes see; filled in when ready
        self._http_runner: web.AppRunner | None = None
        self._front: Front | None = None
        self._ctx: ServerContext | None = None
        self.handler: StreamHandler | None = None
        self.webrtc: WebRTCHandler | None = None
        self.realtime: RealtimeHandler | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._tools: MCPToolbox | None = None  # --mcp-server

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind first (so /healthz answers 503 while loading), then load the engines."""
        cfg = self.config
        started = time.monotonic()
        asr, llm, tts = create_asr(cfg), create_llm(cfg), create_tts(cfg)
        pool = ThreadPoolExecutor(max_workers=cfg.inference_threads, thread_name_prefix="inference")
        loop = asyncio.get_running_loop()
        ping_floods = self.metrics.errors.labels(ErrorCode.PING_FLOOD.value)
        self._http_runner = web.AppRunner(
            build_app(self.http),
            access_log=None,  # hark_http_requests_total counts them; a line per request would flood the log
            shutdown_timeout=SHUTDOWN_HTTP_S,
            keepalive_timeout=HTTP_KEEPALIVE_S,
            handler_cancellation=True,  # a client that hangs up stops its request's work
            max_line_size=HEAD_LIMIT,  # the front already bounds the first head; later ones likewise
            max_field_size=HEAD_LIMIT,
        )
        await self._http_runner.setup()
        assert self._http_runner.server is not None
        self._front = Front(
            guarded_connection(cfg.ws_max_pings_per_s, ping_floods.inc),
            self._http_runner.server,  # aiohttp's low-level server: calling it makes a RequestHandler
            on_refused=lambda status: self.metrics.http_requests.labels("unmatched", str(status)).inc(),
        )
        try:
            self._server = await serve(
                self._handle,
                cfg.host,
                cfg.port,
                process_request=self._route,
                # a callable, not the class websockets' annotation names: it returns the front protocol,
                # which hands upgrades to a GuardedConnection and everything else to aiohttp
                create_connection=cast(type[ServerConnection], self._front),
                select_subprotocol=select_through_front(select_subprotocol),  # `realtime` on /v1/realtime
                max_size=HARD_MAX_MESSAGE_BYTES,
                compression=None,  # PCM does not deflate; compression would cost CPU for nothing
                reuse_port=cfg.reuse_port,  # --workers: several processes accept on one port
                server_header="hark",
            )
        except OSError as exc:
            await self._http_runner.cleanup()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartupError(
                f"cannot listen on {cfg.host}:{cfg.port}: {reason} (choose another --port, or --port 0 for a free one)"
            ) from None
        self._lag_task = asyncio.create_task(self._watch_loop_lag(), name="loop-lag")
        log.info("listening on ws://%s:%d%s (loading models)", cfg.host, self.port, STREAM_PATH)
        self._tools = _start_server_tools(cfg, self.metrics)  # connects while the models load; never fatal
        vad = await loop.run_in_executor(pool, SileroVad)
        try:  # before the engines start: a refusal here leaves no worker behind
            cfg.session_defaults, turn_detector = await loop.run_in_executor(pool, prepare_turn_detection, cfg)
        except ModelFileError as exc:  # semantic turn detection asked for by name, and no model
            raise StartupError(str(exc)) from None
        await asyncio.gather(asr.start(), llm.start(), tts.start())
        batcher = VadBatcher(vad, pool, self.metrics) if cfg.vad_batching else None
        if batcher is not None:
            batcher.start()
        if turn_detector is not None:
            turn_detector.observe_latency = self.metrics.turn_check.observe
            await turn_detector.start()
        self._ctx = ServerContext(cfg, self.metrics, vad, asr, llm, tts, pool, batcher, turn_detector=turn_detector)
        self._ctx.server_tools = self._tools
        admission = Admission(self._ctx)
        self.handler = StreamHandler(self._ctx, admission)
        self.webrtc = _webrtc_handler(self._ctx, admission)
        self.realtime = RealtimeHandler(self._ctx, admission)  # the OpenAI Realtime API, same Session
        self.http.admission, self.http.webrtc = admission, self.webrtc
        self.http.ctx = self._ctx  # last: HttpState.ready() answers 503 until this is set
        self._ready = True
        log.info("ready in %.1f s: asr=%s llm=%s tts=%s", time.monotonic() - started, asr.name, llm.name, tts.name)

    async def _watch_loop_lag(self, interval: float = 0.05) -> None:
        """Time a short sleep: anything beyond it is time the loop was blocked by other work.
        Also samples the process tree's CPU and memory once a second (each worker its own)."""
        ticks = 0
        while True:
            ready = self._ready  # a tick begun while loading measures the loading, not the load
            before = time.monotonic()
            await asyncio.sleep(interval)
            lag = max(0.0, time.monotonic() - before - interval)
            self.metrics.loop_lag.observe(lag)
            if ready and self._ctx is not None:  # smoothed over wall time (server/context.py)
                self._ctx.note_loop_lag(lag, interval + lag)
                self._ctx.refresh_frame_wait(time.monotonic())
            ticks += 1
            if ticks % 20 == 0:
                self.metrics.sample_process_tree()
                if self._ctx is not None:
                    self.metrics.asr_lag.labels("streaming").set(self._ctx.asr_lag.mean_s())
                    self.metrics.asr_lag.labels("final").set(self._ctx.final_lag.mean_s())

    async def _handle(self, conn: ServerConnection) -> None:
        if conn.request is not None and conn.request.path.split("?", 1)[0] == REALTIME_PATH:
            await (self.realtime or refuse_not_ready)(conn)  # its errors in its own protocol
            return
        if self.handler is None:  # still loading (the port is bound first): nothing to admit to yet
            refusal = Error(
                code=ErrorCode.SERVER_NOT_READY.value, message="models are still loading; retry shortly", fatal=True
            )
            with contextlib.suppress(Exception):
                await conn.send(encode(refusal))
                await conn.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.SERVER_NOT_READY.value)
            return
        path = conn.request.path.split("?", 1)[0] if conn.request is not None else ""
        if path == WEBRTC_PATH:
            if self.webrtc is None:
                await conn.send(
                    encode(
                        Error(
                            code=ErrorCode.SERVER_NOT_READY.value,
                            fatal=True,
                            message=("WebRTC is not installed on this server: pip install 'hark[webrtc]' (aiortc)"),
                        )
                    )
                )
                await conn.close(CloseCode.TRY_AGAIN_LATER, "webrtc not installed")
                return
            await self.webrtc(conn)
            return
        await self.handler(conn)

    def _route(self, conn: ServerConnection, request: Request) -> Response | None:
        """WebSocket upgrades only (server/http/front.py sends plain HTTP to aiohttp): the refusals."""
        path = request.path.split("?", 1)[0]
        if path == REALTIME_PATH:
            refusal = realtime_handshake_refusal(self.config, request)
        elif path in WEBSOCKET_PATHS:
            refusal = handshake_refusal(self.config, request)
        else:
            message = f"no WebSocket at {path[:200]!r}; the WebSocket is at {STREAM_PATH}"
            refusal = HandshakeRefusal(404, ErrorCode.NOT_FOUND, message)
        if refusal is None:
            return None  # go on with the WebSocket handshake
        self.metrics.errors.labels(refusal.code.value).inc()
        return _refusal_response(refusal)

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self._server is not None:
            self._server.close(close_connections=False)  # no new connections, of either kind
        if self._front is not None:
            self._front.abort_pending()  # connections that never sent a whole request head
        drains = [self._drain_http()]
        if self._server is not None:
            drains.append(self._drain(self._server))
        await asyncio.gather(*drains)  # side by side: each is bounded on its own
        if self._tools is not None:  # after the sessions: none is mid-call now
            await self._tools.aclose(MCP_CLOSE_S)
        if self._ctx is not None:
            if self._ctx.vad_batcher is not None:
                await self._ctx.vad_batcher.stop()
            if self._ctx.turn_detector is not None:
                await self._ctx.turn_detector.stop()
            await asyncio.gather(self._ctx.asr.aclose(), self._ctx.llm.aclose(), self._ctx.tts.aclose())
            self._ctx.inference_pool.shutdown(wait=False, cancel_futures=True)

    async def _drain_http(self) -> None:
        """Idle keep-alive connections close now; requests in progress get SHUTDOWN_HTTP_S to finish,
        then they are cancelled (a long server-sent-events stream ends here)."""
        if self._http_runner is None:
            return
        try:
            async with asyncio.timeout(2 * SHUTDOWN_HTTP_S + 2.0):
                await self._http_runner.cleanup()
        except TimeoutError:
            log.error("shutdown: HTTP requests still running after %g s; going on", 2 * SHUTDOWN_HTTP_S + 2.0)

    @staticmethod
    async def _drain(server: Server) -> None:
        """Close every connection with 1001, in bounded time whatever the clients do."""
        server.close(close_connections=False)
        connections = list(server.connections)
        # all at once: each close may wait for a client that is not reading
        closes = [asyncio.create_task(conn.close(CloseCode.GOING_AWAY, "server shutting down")) for conn in connections]
        if closes:
            _, pending = await asyncio.wait(closes, timeout=SHUTDOWN_CLOSE_S)
            if pending:
                log.warning("shutdown: %d clients did not complete the close handshake; aborting them", len(pending))
                for conn in connections:
                    conn.transport.abort()
                await asyncio.wait(closes, timeout=1.0)
        try:
            async with asyncio.timeout(TEARDOWN_TIMEOUT_S + 1.0):
                await server.wait_closed()  # every connection handler has returned
        except TimeoutError:
            log.error("shutdown: connection handlers still running after %g s; going on", TEARDOWN_TIMEOUT_S + 1.0)


def _refusal_response(refusal: HandshakeRefusal) -> Response:
    body = json.dumps({"error": {"code": refusal.code.value, "message": refusal.message}}).encode()
    headers = _headers("application/json", len(body))
    if refusal.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="hark"'
    reason = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}.get(refusal.status, "Error")
    return Response(refusal.status, reason, headers, body)


def _headers(content_type: str, length: int | None = None) -> Headers:
    headers = Headers([("Content-Type", content_type), ("Cache-Control", "no-store")])
    if length is not None:
        headers["Content-Length"] = str(length)
    return headers


def _start_server_tools(cfg: ServerConfig, metrics: Metrics) -> MCPToolbox | None:
    """--mcp-server: the toolbox, connecting in the background (a server that is not there is logged,
    counted in /metrics and retried; the MCP SDK is imported only here)."""
    if not cfg.mcp_servers:
        return None
    from .tools.mcp_config import ToolFilter, parse_server_specs

    specs = parse_server_specs(cfg.mcp_servers)
    tool_filter = ToolFilter.parse(cfg.mcp_tools, specs)
    try:
        from .tools.toolbox import MCPToolbox
    except ImportError as exc:
        raise StartupError(f"--mcp-server needs the MCP SDK ({exc}): pip install 'hark[mcp]'") from None
    toolbox = MCPToolbox(specs, tool_filter, metrics=metrics)
    toolbox.start()
    return toolbox


def _webrtc_handler(ctx: ServerContext, admission: Admission) -> WebRTCHandler | None:
    try:
        from .transport.webrtc import WebRTCHandler
    except ImportError as exc:  # the webrtc extra is optional
        log.warning("WebRTC disabled (%s): pip install 'hark[webrtc]'", exc)
        return None
    return WebRTCHandler(ctx, admission)


async def _serve_forever(config: ServerConfig) -> None:
    server = HarkServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    # tests, benchmarks, the harness and the --workers supervisor wait for this line (hark.protocol.ready)
    print(format_ready_line(stream_url(config.host, server.port)), flush=True)
    print(f"  talk to it in a browser: http://{config.host}:{server.port}/  (Ctrl-C stops)", flush=True)
    await stop.wait()
    log.info("shutting down")
    _exit_if_stuck(SHUTDOWN_DEADLINE_S)
    await server.stop()


def _exit_if_stuck(deadline_s: float) -> None:
    """The drain is bounded step by step; this is the bound on all of it, threads at exit included."""

    def hard_exit() -> None:
        # straight to fd 2: a logging lock held by a stuck thread must not stop the exit
        os.write(2, f"hark-server: shutdown took over {deadline_s:g} s; exiting now\n".encode())
        os._exit(1)

    timer = threading.Timer(deadline_s, hard_exit)
    timer.daemon = True
    timer.start()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = load_config(argv)
    except (OSError, ValueError) as exc:
        print(f"hark-server: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if config.workers > 1:
        from .workers import serve_workers

        raise SystemExit(serve_workers(config, list(sys.argv[1:] if argv is None else argv)))
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve_forever(config))
    except (ValueError, StartupError) as exc:  # a configuration the engines refuse, a port in use
        print(f"hark-server: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
