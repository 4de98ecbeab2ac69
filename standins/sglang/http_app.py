"""The simulator's HTTP server (aiohttp): SGLang's routes on the simulated GPU, plus /sim/* for tests.

Handlers parse a body (parse.py), apply an injected fault (faults.py), queue the request on the
scheduler and answer in SGLang's shapes (payloads.py), whole or as server-sent events. A handler
that waits polls its client's transport, because a client that vanished must be noticed the way
SGLang notices it (its request is aborted only after `disconnect_abort_delay_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Coroutine
from dataclasses import asdict
from typing import Any, Final

from aiohttp import web

from .config import SERVER_HEADER, SimConfig
from .faults import FAULT_MODES, Faults
from .parse import is_int, is_number, parse_chat, parse_generate
from .payloads import (
    chat_chunk,
    chat_completion,
    chat_finish_with_tools,
    chat_usage_chunk,
    native_payload,
    prometheus_text,
    tool_call_deltas,
)
from .radix import RadixCache
from .request import BadRequest, SimRequest
from .scheduler import Scheduler
from .tools import ToolCallSplitter
from .wire import (
    client_gone,
    close_connection,
    end_sse,
    error_response,
    json_response,
    sse,
    sse_response,
    value_error,
)

log = logging.getLogger("standins.sglang")

_POLL_S: Final = 0.05  # how often a waiting handler checks for a vanished client


class SGLangSimulator:
    """The SGLang simulator as an aiohttp server, usable in-process or from the command line."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self.scheduler = Scheduler(self.config)
        self.faults = Faults()
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._scheduler_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._started = time.time()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the simulator is not started")
        host = self.config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def start(self) -> int:
        """Start listening; returns the port (a free one when `config.port` is 0)."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already started")
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.on_response_prepare.append(self._server_header)
        self._routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        infos = socket.getaddrinfo(self.config.host, self.config.port, type=socket.SOCK_STREAM)
        family, socktype, proto, _, address = infos[0]
        sock = socket.socket(family, socktype, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.setblocking(False)
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(sock.getsockname()[1])
        self._scheduler_task = asyncio.create_task(self.scheduler.run(), name="sglang-sim-scheduler")
        log.info("sglang simulator (not SGLang) listening on %s", self.url)
        return self.port

    async def stop(self) -> None:
        """Abort everything in flight, stop the scheduler and close the server."""
        self._closing.set()
        self.scheduler.abort(abort_all=True, message="Simulator shutting down")
        for task in list(self._background):
            task.cancel()
        if self._scheduler_task is not None:
            self._scheduler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler_task
            self._scheduler_task = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SGLangSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- Python API for tests -------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        scheduler = self.scheduler
        cache = scheduler.cache
        return {
            "running": scheduler.running(),
            "queued": scheduler.queued(),
            "prefilling": scheduler.prefilling.rid if scheduler.prefilling is not None else None,
            "requests": list(scheduler.records),
            "cache": {
                "tokens": cache.size,
                "capacity": cache.capacity,
                "nodes": cache.node_count,
                "inserted_tokens": cache.inserted_tokens,
                "evicted_tokens": cache.evicted_tokens,
            },
            "totals": dict(scheduler.totals),
            "faults": asdict(self.faults),
        }

    def set_faults(
        self, mode: str, *, count: int | None = None, after_tokens: int = 3, delay_s: float | None = None
    ) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {', '.join(FAULT_MODES)}")
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        if after_tokens < 0:
            raise ValueError("after_tokens must be >= 0")
        if delay_s is not None and not 0 <= delay_s <= self.config.hang_max_s:
            raise ValueError(f"delay_s must be between 0 and {self.config.hang_max_s}")
        self.faults = Faults(mode=mode, remaining=count, after_tokens=after_tokens, delay_s=delay_s)

    def reset(self) -> None:
        """Abort everything in flight, then clear the cache, the records, the totals and the faults."""
        self.scheduler.abort(abort_all=True, message="Simulator reset")
        self.scheduler.cache = RadixCache(self.config.cache_capacity_tokens)
        self.scheduler.records.clear()
        self.scheduler.reset_totals()
        self.faults = Faults()

    # --- plumbing -------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("POST", "/generate", self._generate)
        app.router.add_route("PUT", "/generate", self._generate)
        app.router.add_post("/abort_request", self._abort_request)
        app.router.add_get("/health", self._health)
        app.router.add_get("/health_generate", self._health)
        app.router.add_get("/get_model_info", self._model_info)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/flush_cache", self._flush_cache)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/sim/stats", self._sim_stats)
        app.router.add_post("/sim/faults", self._sim_faults)
        app.router.add_post("/sim/reset", self._sim_reset)

    @staticmethod
    async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER_HEADER

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _abort_after_disconnect(self, rid: str) -> None:
        """What SGLang's background abort task does for a vanished client."""

        async def later() -> None:
            await asyncio.sleep(self.config.disconnect_abort_delay_s)
            self.scheduler.abort(rid, message="Aborted by AbortReq.")

        req = self.scheduler.requests.get(rid)
        if req is not None and not req.finished:
            self._spawn(later(), f"sglang-sim-abort-{rid}")

    async def _wait_update(self, request: web.Request, req: SimRequest, deadline: float) -> str:
        """Wait for the request to change: "changed", "gone" (client vanished) or "timeout"."""
        loop = asyncio.get_running_loop()
        while True:
            if req.changed.is_set():
                req.changed.clear()
                return "changed"
            if client_gone(request):
                return "gone"
            remaining = deadline - loop.time()
            if remaining <= 0:
                return "timeout"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(req.changed.wait(), timeout=min(_POLL_S, remaining))

    async def _follow(self, request: web.Request, req: SimRequest, deadline: float) -> bool:
        """Wait for news on `req` (a timeout aborts it); False if the client vanished meanwhile."""
        outcome = await self._wait_update(request, req, deadline)
        if outcome == "gone":
            self._abort_after_disconnect(req.rid)
            return False
        if outcome == "timeout":
            self.scheduler.abort(req.rid, message="Request timed out in the simulator.")
        return True

    def _drop(self, request: web.Request, req: SimRequest, response: web.StreamResponse) -> web.StreamResponse:
        """The "drop_mid_stream" fault: the request ends and the connection closes without a word."""
        self.scheduler.abort(req.rid, message="Connection dropped (simulated fault).")
        close_connection(request)
        return response

    async def _read_json(self, request: web.Request) -> Any:
        try:
            return await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"JSON decode error: {exc}", kind="validation") from exc

    async def _read_object(self, request: web.Request, not_an_object: str) -> dict[str, Any] | web.StreamResponse:
        """The JSON object body, or the 400 response to send instead."""
        try:
            body = await self._read_json(request)
        except BadRequest as exc:
            return error_response(exc.message)
        return body if isinstance(body, dict) else error_response(not_an_object)

    async def _admit(self, request: web.Request, req: SimRequest) -> tuple[web.StreamResponse | None, int | None]:
        """Apply the injected fault, if any, then queue the request.

        Returns a response to send instead (a 500, or nothing at all for a hang or a dropped
        connection), or None and, for "drop_mid_stream", after how many stream events to drop.
        """
        fault = self.faults.take()
        if fault.mode == "http_500":
            return error_response(
                "Internal server error (simulated fault).", err_type="InternalServerError", code=500
            ), None
        if fault.mode == "slow_first_byte":
            await asyncio.sleep(fault.delay_s if fault.delay_s is not None else 2.0)
        if fault.mode == "hang":
            loop = asyncio.get_running_loop()
            end = loop.time() + (fault.delay_s if fault.delay_s is not None else self.config.hang_max_s)
            while loop.time() < end and not client_gone(request) and not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=min(_POLL_S, end - loop.time()))
            close_connection(request)
            return web.Response(status=500), None  # never delivered: the connection is closed
        if fault.mode == "drop_mid_stream" and not req.stream:
            close_connection(request)
            return web.Response(status=500), None  # never delivered
        if self._closing.is_set():
            return error_response("The simulator is shutting down.", err_type="ServiceUnavailable", code=503), None
        try:
            self.scheduler.submit(req)
        except BadRequest as exc:  # the rid went in flight meanwhile
            return value_error(exc.message), None
        return None, fault.after_tokens if fault.mode == "drop_mid_stream" else None

    # --- native API -----------------------------------------------------------------------

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._read_json(request)
            stream = isinstance(body, dict) and body.get("stream") is True
            try:
                req = parse_generate(body, self.scheduler, request.headers)
            except BadRequest as exc:
                if exc.kind == "value" and stream:
                    return await self._stream_error(request, exc.message)
                raise
        except BadRequest as exc:
            if exc.kind == "value":
                return value_error(exc.message)
            return error_response(exc.message)
        early, drop_after = await self._admit(request, req)
        if early is not None:
            return early
        if req.stream:
            return await self._stream_native(request, req, drop_after)
        return await self._wait_whole(request, req, native_payload)

    async def _stream_error(self, request: web.Request, message: str) -> web.StreamResponse:
        response = sse_response()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(sse({"error": {"message": message}}))
            await end_sse(response)
        return response

    async def _wait_whole(self, request: web.Request, req: SimRequest, payload: Any) -> web.StreamResponse:
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_s
        while not req.finished:
            if not await self._follow(request, req, deadline):
                return web.Response(status=499)  # nobody is listening
        return json_response(payload(req))

    async def _stream_native(self, request: web.Request, req: SimRequest, drop_after: int | None) -> web.StreamResponse:
        response = sse_response()
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_s
        sent_tokens = 0
        chunks = 0
        try:
            await response.prepare(request)
            while True:
                if len(req.output_ids) != sent_tokens or req.finished:
                    sent_tokens = len(req.output_ids)
                    await response.write(sse(native_payload(req)))
                    chunks += 1
                if req.finished:
                    break
                if drop_after is not None and chunks >= drop_after:
                    return self._drop(request, req, response)
                if not await self._follow(request, req, deadline):
                    return response
            await end_sse(response)
        except ConnectionError:
            self._abort_after_disconnect(req.rid)
        return response

    async def _abort_request(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_object(request, "Input should be a valid dictionary or instance of AbortReq")
        if isinstance(body, web.StreamResponse):
            return body
        rid = body.get("rid", "")
        abort_all = body.get("abort_all", False)
        if rid is None:
            rid = ""
        if not isinstance(rid, str) or not isinstance(abort_all, bool):
            return error_response("rid must be a string and abort_all a boolean")
        aborted = self.scheduler.abort(rid, abort_all=abort_all)
        if aborted:
            log.info("aborted %s", ", ".join(aborted))
        return web.Response(status=200)

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def _model_info(self, request: web.Request) -> web.StreamResponse:
        return json_response(
            {
                "model_path": self.config.model_path,
                "tokenizer_path": None,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": "default",
                "simulator": True,
            }
        )

    async def _models(self, request: web.Request) -> web.StreamResponse:
        name = self.config.served_model_name
        card = {
            "id": name,
            "object": "model",
            "created": int(self._started),
            "owned_by": "sglang",
            "root": name,
            "parent": None,
            "max_model_len": self.config.context_length,
        }
        return json_response({"object": "list", "data": [card]})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        text = prometheus_text(self.scheduler, self.config.served_model_name)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def _flush_cache(self, request: web.Request) -> web.StreamResponse:
        text = (
            "Cache flushed.\nPlease check backend logs for more details. "
            "(When there are running or waiting requests, the operation will not be performed.)\n"
        )
        if self.scheduler.requests:
            return web.Response(text=text, status=400)
        self.scheduler.cache.clear()
        return web.Response(text=text, status=200)

    # --- OpenAI chat ------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        media_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return error_response("Unsupported Media Type: Only 'application/json' is allowed")
        try:
            body = await self._read_json(request)
            req, model, include_usage = parse_chat(body, self.scheduler, request.headers)
        except BadRequest as exc:
            err_type = "BadRequestError" if exc.kind in ("openai", "value") else "Bad Request"
            return error_response(exc.message, err_type=err_type)
        early, drop_after = await self._admit(request, req)
        if early is not None:
            return early
        created = int(time.time())
        if req.stream:
            return await self._stream_chat(request, req, model, created, include_usage, drop_after)

        cache_report = self.config.enable_cache_report

        def whole(r: SimRequest) -> dict[str, Any]:
            return chat_completion(r, model, created, cache_report=cache_report)

        return await self._wait_whole(request, req, whole)

    async def _stream_chat(
        self,
        request: web.Request,
        req: SimRequest,
        model: str,
        created: int,
        include_usage: bool,
        drop_after: int | None,
    ) -> web.StreamResponse:
        def chunk(delta: dict[str, Any], finish: str | None = None, matched: Any = None) -> bytes:
            return sse(chat_chunk(req, model, created, delta, finish, matched))

        response = sse_response()
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_s
        sent_text = 0
        sent_role = False
        tokens_seen = 0
        splitter = ToolCallSplitter() if req.tool_parsing else None
        sent_args: dict[int, int] = {}  # tool call index -> arguments characters sent
        try:
            await response.prepare(request)
            while True:
                if drop_after is not None and tokens_seen >= drop_after and not req.finished:
                    return self._drop(request, req, response)
                if len(req.output_ids) > 0 or req.finished:
                    if not sent_role:
                        await response.write(chunk({"role": "assistant", "content": ""}))
                        sent_role = True
                    visible = req.visible_text
                    if splitter is not None:  # SGLang's tool-call parser: markup out, tool_calls in
                        visible = splitter.split(visible, req.finished)
                    if len(visible) > sent_text:
                        await response.write(chunk({"content": visible[sent_text:]}))
                        sent_text = len(visible)
                    if splitter is not None:
                        for delta in tool_call_deltas(splitter, sent_args):
                            await response.write(chunk({"tool_calls": [delta]}))
                    tokens_seen = len(req.output_ids)
                if req.finished:
                    break
                if not await self._follow(request, req, deadline):
                    return response
            reason = req.finish_reason or {}
            finish = chat_finish_with_tools(req, len(sent_args))
            await response.write(chunk({}, finish, reason.get("matched")))
            if include_usage:
                cache_report = self.config.enable_cache_report
                usage_chunk = chat_usage_chunk(req, model, created, cache_report=cache_report)
                await response.write(sse(usage_chunk))
            await end_sse(response)
        except ConnectionError:
            self._abort_after_disconnect(req.rid)
        return response

    # --- simulator-only endpoints --------------------------------------------------------------

    async def _sim_stats(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.stats())

    async def _sim_faults(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_object(request, "body must be a JSON object")
        if isinstance(body, web.StreamResponse):
            return body
        mode = body.get("mode", "none")
        count = body.get("count")
        after_tokens = body.get("after_tokens", 3)
        delay_s = body.get("delay_s")
        if (
            not isinstance(mode, str)
            or (count is not None and not is_int(count))
            or not is_int(after_tokens)
            or (delay_s is not None and not is_number(delay_s))
        ):
            return error_response("mode: str, count: int|null, after_tokens: int, delay_s: number|null")
        try:
            self.set_faults(
                mode, count=count, after_tokens=after_tokens, delay_s=float(delay_s) if delay_s is not None else None
            )
        except ValueError as exc:
            return error_response(str(exc))
        return json_response({"faults": asdict(self.faults)})

    async def _sim_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return json_response({"reset": True})
