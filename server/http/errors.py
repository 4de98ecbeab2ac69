"""HTTP errors as JSON: `{"error": {"code", "message"}}` with hark.v1's stable codes where they exist."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from hark.protocol import ErrorCode


class HttpError(Exception):
    """Raised by a route handler; the app's error middleware turns it into the JSON response."""

    def __init__(
        self, status: int, code: ErrorCode | str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = str(code)
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: ErrorCode | str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = json.dumps({"error": {"code": str(code), "message": message}}).encode()
    # bytes, so the type stays plain `application/json` (JSON is UTF-8; the WebSocket refusals say the same)
    response = web.Response(status=status, body=body, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers or {})
    return response
