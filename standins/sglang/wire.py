"""HTTP plumbing of the simulator: compact JSON, server-sent events, SGLang's two error bodies, the client's socket."""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

SSE_DONE: Final = b"data: [DONE]\n\n"


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj).encode("utf-8") + b"\n\n"


async def end_sse(response: web.StreamResponse) -> None:
    """The `[DONE]` that ends an SGLang event stream, then the end of the body."""
    await response.write(SSE_DONE)
    await response.write_eof()


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(obj), status=status, content_type="application/json")


def value_error(message: str) -> web.Response:
    """SGLang's `_create_error_response`: a ValueError in the native API."""
    return json_response({"error": {"message": message}}, status=400)


def error_response(message: str, *, err_type: str = "Bad Request", code: int = 400) -> web.Response:
    """SGLang's ErrorResponse body, as sent for request-validation errors and by the OpenAI API."""
    return json_response(
        {"object": "error", "message": message, "type": err_type, "param": None, "code": code}, status=code
    )


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def close_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


def sse_response() -> web.StreamResponse:
    return web.StreamResponse(
        status=200, headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
