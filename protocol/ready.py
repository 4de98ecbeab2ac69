"""The ready line: the first line hark-server prints on stdout once it accepts sessions.

`hark-server ready on ws://HOST:PORT/v1/stream`. Whoever starts a server process (the tests, the
benchmarks, `hark-loadtest --spawn-server`, the `--workers` supervisor waiting for its workers)
learns from it that the models are loaded and which port `--port 0` bound. The server formats it
here and every reader parses it here, so the shape lives in one place. Sans-IO: strings only.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from . import STREAM_PATH

READY_PREFIX: Final = "hark-server ready on "


def stream_url(host: str, port: int) -> str:
    """The WebSocket URL of a server listening on host:port (an IPv6 literal gets its brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"ws://{host}:{port}{STREAM_PATH}"


def format_ready_line(url: str) -> str:
    """The line to print once ready; `url` is the stream URL (see `stream_url`)."""
    return f"{READY_PREFIX}{url}"


def parse_ready_line(line: str) -> str | None:
    """The stream URL if `line` is a ready line (surrounding whitespace ignored), else None.

    Anything else a server prints (log lines, the browser hint, a line cut short) gives None, so a
    reader can feed every stdout line through this and wait for the first URL.
    """
    text = line.strip()
    if not text.startswith(READY_PREFIX):
        return None
    url = text[len(READY_PREFIX) :]
    if any(ch.isspace() for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number or out of range
        return None
    if parts.scheme != "ws" or not parts.hostname or port is None or parts.path != STREAM_PATH:
        return None
    if parts.query or parts.fragment or parts.username is not None:
        return None
    return url
