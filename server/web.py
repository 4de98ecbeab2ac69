"""The browser page (client/web/) served from the server's own port: `/` and `/web/<file>`."""

from __future__ import annotations

import functools
import re
from pathlib import Path

WEBRTC_PATH = "/v1/webrtc"
WEB_DIR = Path(__file__).resolve().parents[1] / "client" / "web"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@functools.lru_cache(maxsize=64)
def web_file(path: str) -> tuple[bytes, str] | None:
    """(body, content type) of a page file, or None; names are checked, so no path escapes the folder."""
    if path in ("/", "/index.html"):
        name = "index.html"
    elif path.startswith("/web/") and _SAFE_NAME.match(path[5:]):
        name = path[5:]
    else:
        return None
    file = WEB_DIR / name
    content_type = _CONTENT_TYPES.get(file.suffix)
    if content_type is None or not file.is_file():
        return None
    return file.read_bytes(), content_type
