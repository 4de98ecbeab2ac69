"""The ready line (hark.protocol.ready): what the server prints is what every reader parses."""

from __future__ import annotations

import pytest

from hark.protocol.ready import READY_PREFIX, format_ready_line, parse_ready_line, stream_url


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8765, "ws://127.0.0.1:8765/v1/stream"),
        ("0.0.0.0", 1, "ws://0.0.0.0:1/v1/stream"),
        ("localhost", 65535, "ws://localhost:65535/v1/stream"),
        ("::1", 40123, "ws://[::1]:40123/v1/stream"),
        ("[::]", 8765, "ws://[::]:8765/v1/stream"),
    ],
)
def test_format_then_parse_gives_the_url_back(host: str, port: int, url: str) -> None:
    line = format_ready_line(stream_url(host, port))
    assert line == f"hark-server ready on {url}"
    assert parse_ready_line(line) == url
    assert parse_ready_line(line + "\n") == url  # as read from a pipe
    assert parse_ready_line(f"  {line}\r\n") == url


def test_the_shape_scripts_rely_on_is_unchanged() -> None:
    # README and scripts outside this repository grep for this exact text: changing it breaks them
    assert format_ready_line(stream_url("127.0.0.1", 8765)) == "hark-server ready on ws://127.0.0.1:8765/v1/stream"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "  talk to it in a browser: http://127.0.0.1:8765/  (Ctrl-C stops)",
        "2026-01-01 10:00:00 INFO hark: listening on ws://127.0.0.1:8765/v1/stream (loading models)",
        "2026-01-01 10:00:00 INFO hark: hark-server ready on ws://127.0.0.1:8765/v1/stream",  # not at the start
        READY_PREFIX,
        f"{READY_PREFIX}ws://127.0.0.1:8765/v1/stream and more",
        f"{READY_PREFIX}ws://127.0.0.1/v1/stream",  # no port
        f"{READY_PREFIX}ws://127.0.0.1:notaport/v1/stream",
        f"{READY_PREFIX}ws://127.0.0.1:70000/v1/stream",  # out of range
        f"{READY_PREFIX}ws://:8765/v1/stream",  # no host
        f"{READY_PREFIX}http://127.0.0.1:8765/v1/stream",  # not a WebSocket URL
        f"{READY_PREFIX}ws://127.0.0.1:8765/",  # another path
        f"{READY_PREFIX}ws://127.0.0.1:8765/v1/stream?x=1",
        f"{READY_PREFIX}ws://user@127.0.0.1:8765/v1/stream",
        f"{READY_PREFIX}ws://[::1:8765/v1/stream",  # a broken IPv6 literal
        "sglang simulator ready on http://127.0.0.1:30000",
    ],
)
def test_other_lines_are_not_ready_lines(line: str) -> None:
    assert parse_ready_line(line) is None
