"""One port for HTTP and WebSockets (server/http/front.py): plain HTTP with bodies and keep-alive
reaches aiohttp, upgrades reach websockets, and neither disturbs the other. Raw sockets, so every
byte on the wire is the test's own."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, metric, serving, start_server, stop_server
from wsclient import Peer

CRLF = b"\r\n"


class HttpConnection:
    """One TCP connection speaking HTTP/1.1 by hand (keep-alive unless told otherwise)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, port)

    def send(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, chunked: bool = False
    ) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
            payload = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 4096]), body[i : i + 4096]) for i in range(0, len(body), 4096)
            )
            payload += b"0\r\n\r\n"
        else:
            if body or method in ("POST", "PUT"):
                lines.append(f"Content-Length: {len(body)}")
            payload = body
        self.writer.write("\r\n".join(lines).encode() + CRLF + CRLF + payload)

    async def response(self, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(CRLF + CRLF)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
            return int(status_line.split()[1]), headers, body

    async def request(
        self, method: str, path: str, body: bytes = b"", **kwargs: Any
    ) -> tuple[int, dict[str, str], bytes]:
        self.send(method, path, body, **kwargs)
        return await self.response()

    async def closed_by_server(self, timeout: float) -> bool:
        """Whether the server closes the connection within `timeout` (EOF or reset)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
            return True
        except (ConnectionError, OSError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()


def error_of(status_headers_body: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    """(status, error code) of a JSON error response, checking its shape."""
    status, headers, body = status_headers_body
    assert headers["content-type"] == "application/json", headers
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"} and error["message"], error
    return status, error["code"]


async def text_turn(url: str, text: str = "one port for everything") -> tuple[list[str], int]:
    """A hark.v1 round trip: the reply's event types (deltas folded) and its audio bytes."""
    peer = await Peer.open(url)
    try:
        await peer.send_json({"type": "input.text", "text": text})
        done = await peer.wait_for(lambda e: e["type"] == "response.done")
        await asyncio.sleep(0.3)  # audio sent behind response.done, if any, arrives too
        assert done["status"] == "completed", done
        types = [t for i, t in enumerate(peer.types()) if i == 0 or t != peer.types()[i - 1]]
        return types, peer.audio_bytes
    finally:
        await peer.close()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---------------------------------------------------------------------- routes and keep-alive


async def test_bodies_reach_http_with_keep_alive_and_json_errors(server: RunningServer) -> None:
    conn = await HttpConnection.open(server.port)
    try:
        status, headers, body = await conn.request("GET", "/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok"} and headers["server"] == "hark"
        # a body: websockets alone would have refused it ("unsupported request body")
        result = await conn.request("POST", "/healthz", b'{"x": 1}', headers={"Content-Type": "application/json"})
        assert error_of(result) == (405, "method_not_allowed") and "GET" in result[1]["allow"]
        assert error_of(await conn.request("POST", "/no/such/route", b"abc")) == (404, "not_found")
        assert error_of(await conn.request("GET", "/v1/stream")) == (426, "bad_request")  # no Upgrade header
        status, headers, body = await conn.request("GET", "/metrics")
        assert (
            status == 200 and headers["content-type"].startswith("text/plain") and b"hark_http_requests_total" in body
        )
        status, headers, _ = await conn.request("GET", "/v1/webrtc/config")
        assert status == 200 and headers["content-type"] == "application/json"
        assert (await conn.request("GET", "/"))[0] == 200
        # all of it on the one connection, which is still open
        assert (await conn.request("GET", "/healthz"))[0] == 200
    finally:
        conn.close()


async def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    conn = await HttpConnection.open(server.port)
    try:
        for path in ("/healthz", "/nope", "/healthz"):
            conn.send("GET", path)
        assert [(await conn.response())[0] for _ in range(3)] == [200, 404, 200]
    finally:
        conn.close()


async def test_websocket_sessions_keep_working_beside_http(server: RunningServer) -> None:
    conn = await HttpConnection.open(server.port)
    try:
        http = asyncio.create_task(_requests_on(conn, 30))
        types, audio = await text_turn(server.url)
        assert types[0] == "session.created" and types[-1] == "response.done" and audio > 0
        assert await http == 30
    finally:
        conn.close()


async def _requests_on(conn: HttpConnection, count: int) -> int:
    answered = 0
    for _ in range(count):
        status, _, _ = await conn.request("GET", "/healthz")
        answered += status == 200
        await asyncio.sleep(0.01)
    return answered


async def test_http_flood_leaves_a_session_untouched(server: RunningServer) -> None:
    baseline = await text_turn(server.url)
    stop = time.monotonic() + 2.0  # a bounded flood: 8 keep-alive connections as fast as they go
    statuses: list[int] = []

    async def flood() -> None:
        conn = await HttpConnection.open(server.port)
        try:
            while time.monotonic() < stop:
                statuses.append((await conn.request("POST", "/healthz", b"x" * 1000))[0])
                statuses.append((await conn.request("GET", "/healthz"))[0])
        finally:
            conn.close()

    floods = [asyncio.create_task(flood()) for _ in range(8)]  # POSTs past the rate limit get 429
    during = await text_turn(server.url)
    await asyncio.gather(*floods)
    assert during[0] == baseline[0]  # the same events in the same order
    assert abs(during[1] - baseline[1]) <= baseline[1] * 0.005  # the same reply audio (to a few samples' pacing)
    assert len(statuses) > 100 and set(statuses) <= {200, 405, 429}, (len(statuses), set(statuses))


# ---------------------------------------------------------------------- the request head


async def test_partial_heads_and_early_eofs_leave_nothing_behind(server: RunningServer) -> None:
    pid = server.process.pid
    tasks_before = metric(server, "hark_tasks")
    fds_before = open_fds(pid)
    for i in range(30):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[: 5 + i])
        if i % 2:
            sock.shutdown(socket.SHUT_WR)  # half-closed before the head ended
            sock.settimeout(10)
            assert sock.recv(100) == b""  # the server closes its side too, answering nothing
        sock.close()
    await asyncio.sleep(1.0)
    assert open_fds(pid) <= fds_before + 2, (fds_before, open_fds(pid))
    assert metric(server, "hark_tasks") <= tasks_before + 2
    conn = await HttpConnection.open(server.port)
    assert (await conn.request("GET", "/healthz"))[0] == 200
    conn.close()


async def test_a_head_over_16_kib_is_431_and_closed(server: RunningServer) -> None:
    conn = await HttpConnection.open(server.port)
    conn.send("GET", "/healthz", headers={f"X-Filler-{i}": "y" * 1000 for i in range(20)})
    result = await conn.response()
    assert error_of(result) == (431, "headers_too_large")
    assert await conn.closed_by_server(10)
    # one without an end at all: refused as soon as it is past the cap
    conn = await HttpConnection.open(server.port)
    conn.writer.write(b"GET /healthz HTTP/1.1\r\nX-Endless: " + b"z" * 20_000)
    assert error_of(await conn.response()) == (431, "headers_too_large")
    assert await conn.closed_by_server(10)
    assert metric(server, 'hark_http_requests_total{route="unmatched",status="431"}') >= 2


async def test_a_slow_head_is_dropped_after_the_open_timeout(server: RunningServer) -> None:
    conn = await HttpConnection.open(server.port)
    conn.writer.write(b"GET /healthz HTTP/1.1\r\n")

    async def dribble() -> None:  # slowloris: a byte now and then, never the end of the head
        with_errors = (ConnectionError, OSError)
        try:
            while True:
                await asyncio.sleep(0.5)
                conn.writer.write(b"X")
                await conn.writer.drain()
        except with_errors:
            return

    dribbler = asyncio.create_task(dribble())
    try:
        assert await conn.closed_by_server(20), "a head that never ends must not hold the connection"
    finally:
        dribbler.cancel()
        conn.close()


async def test_websocket_upgrade_on_an_unknown_path_is_404(server: RunningServer) -> None:
    conn = await HttpConnection.open(server.port)
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    conn.send("GET", "/healthz", headers={**headers, "Sec-WebSocket-Version": "13"})
    assert error_of(await conn.response()) == (404, "not_found")
    conn.close()


# ---------------------------------------------------------------------- keys, origins, caps, limits


async def test_api_keys_origins_and_cors_on_http(server_factory: Any) -> None:
    srv: RunningServer = server_factory("--api-key", "k-one", "--allowed-origin", "https://app.example")
    conn = await HttpConnection.open(srv.port)
    try:
        guarded = "/v1/stream"  # a route that needs the key (it answers 426 once past it)
        result = await conn.request("GET", guarded)
        assert error_of(result) == (401, "unauthorized") and result[1]["www-authenticate"].startswith("Bearer")
        assert error_of(await conn.request("GET", guarded, headers={"Authorization": "Bearer nope"}))[0] == 401
        assert (await conn.request("GET", guarded, headers={"Authorization": "Bearer k-one"}))[0] == 426
        assert (await conn.request("GET", guarded + "?token=k-one"))[0] == 426
        evil = {"Origin": "https://evil.example", "Authorization": "Bearer k-one"}
        assert error_of(await conn.request("GET", guarded, headers=evil)) == (403, "origin_not_allowed")
        # open routes stay open (a load balancer, the page before it has a key)
        assert (await conn.request("GET", "/healthz", headers={"Origin": "https://evil.example"}))[0] == 200
        assert error_of(await conn.request("GET", "/metrics")) == (401, "unauthorized")
        # CORS: a preflight from an allowed origin is answered without credentials; others are refused
        ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
        status, headers, _ = await conn.request("OPTIONS", guarded, headers={"Origin": "https://app.example", **ask})
        assert status == 204 and headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in headers["access-control-allow-methods"]
        assert headers["access-control-allow-headers"] == "authorization, content-type"
        refused = await conn.request("OPTIONS", guarded, headers={"Origin": "https://evil.example", **ask})
        assert error_of(refused) == (403, "origin_not_allowed")
        status, headers, _ = await conn.request(
            "GET", guarded, headers={"Origin": "https://app.example", "Authorization": "Bearer k-one"}
        )
        assert status == 426 and headers["access-control-allow-origin"] == "https://app.example"
    finally:
        conn.close()


async def test_body_cap_by_content_length_and_while_reading_chunks(server_factory: Any) -> None:
    srv: RunningServer = server_factory("--http-max-body-mb", "0.01")  # 10 KiB
    conn = await HttpConnection.open(srv.port)
    # refused from Content-Length alone, before the body is sent: the client learns it at once
    conn.writer.write(
        b"POST /v1/voice/turn HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000\r\n\r\n"
    )
    assert error_of(await conn.response()) == (413, "payload_too_large")
    assert await conn.closed_by_server(10)
    # chunked: no length up front, refused once what was read passes the cap
    conn = await HttpConnection.open(srv.port)
    body = json.dumps({"audio_base64": "A" * 40_000, "prompt_template": "{asr_text}"}).encode()
    result = await conn.request(
        "POST", "/v1/voice/turn", body, headers={"Content-Type": "application/json"}, chunked=True
    )
    assert error_of(result) == (413, "payload_too_large")
    conn.close()
    # under the cap the same route takes the body (and answers about its content, not its size)
    conn = await HttpConnection.open(srv.port)
    small = await conn.request(
        "POST", "/v1/voice/turn", b'{"audio_base64": "%%%"}', headers={"Content-Type": "application/json"}
    )
    assert small[0] == 400, small
    conn.close()


async def test_rate_limit_is_429_with_retry_after(server_factory: Any) -> None:
    srv: RunningServer = server_factory("--http-rate-limit", "2")  # a burst of 4, then 2 a second
    conn = await HttpConnection.open(srv.port)
    try:
        results = [await conn.request("GET", "/nope") for _ in range(10)]
        statuses = [r[0] for r in results]
        assert statuses[:4] == [404] * 4 and 429 in statuses, statuses
        limited = next(r for r in results if r[0] == 429)
        assert error_of(limited) == (429, "rate_limited") and int(limited[1]["retry-after"]) >= 1
        # probes and scrapes are not limited
        assert [(await conn.request("GET", "/healthz"))[0] for _ in range(10)] == [200] * 10
        await asyncio.sleep(1.1)  # refilled
        assert (await conn.request("GET", "/nope"))[0] == 404
    finally:
        conn.close()
    assert metric(srv, 'hark_http_requests_total{route="unmatched",status="429"}') >= 1


async def test_metrics_count_http_requests_by_route(server: RunningServer) -> None:
    name = 'hark_http_requests_total{route="/healthz",status="200"}'
    refused = 'hark_http_requests_total{route="unmatched",status="405"}'  # no route matched the method
    before, refused_before = metric(server, name), metric(server, refused)
    conn = await HttpConnection.open(server.port)
    for _ in range(3):
        await conn.request("GET", "/healthz")
        await conn.request("POST", "/healthz", b"{}")
    conn.close()
    assert (metric(server, name), metric(server, refused)) == (before + 3, refused_before + 3)
    assert metric(server, 'hark_http_request_duration_seconds_count{route="/healthz"}') >= 3


# ---------------------------------------------------------------------- shutdown, loops, workers


async def test_sigterm_with_a_request_in_progress_exits_in_bounded_time(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    conn = await HttpConnection.open(srv.port)
    # a body that never finishes arriving: the request is in progress when the signal comes
    conn.writer.write(
        b"POST /v1/voice/turn HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"
    )
    await conn.writer.drain()
    peer = await Peer.open(srv.url)
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await asyncio.to_thread(stop_server, srv)  # SIGTERM; fails the test if it had to be killed
    took = time.monotonic() - started
    assert srv.process.returncode == 0, srv.log_tail()
    await peer.wait_closed(10)
    assert peer.conn.close_code == 1001
    assert await conn.closed_by_server(5)
    conn.close()
    print(f"shutdown with an HTTP request in progress: {took:.1f} s")


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def loop_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The server under uvloop (what it uses when installed) and under asyncio's own loop."""
    tmp = tmp_path_factory.mktemp(f"loop-{request.param}")
    if request.param == "uvloop":
        with serving(tmp) as running:
            yield running
        return
    shadow = tmp / "shadow"
    (shadow / "uvloop").mkdir(parents=True)
    (shadow / "uvloop" / "__init__.py").write_text(
        "import sys\nprint('uvloop shadowed by the test', file=sys.stderr)\nraise ImportError('shadowed')\n"
    )
    path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH", "")) if p)
    running = start_server(tmp, env={"PYTHONPATH": path})
    assert "uvloop shadowed by the test" in running.log(), running.log_tail()
    yield running
    running.assert_alive()
    stop_server(running)


async def test_both_event_loops_hand_connections_over(loop_server: RunningServer) -> None:
    conn = await HttpConnection.open(loop_server.port)
    try:
        assert [(await conn.request("POST", "/healthz", b"body"))[0] for _ in range(3)] == [405] * 3
        types, audio = await text_turn(loop_server.url)
        assert types[-1] == "response.done" and audio > 0
        partial = socket.create_connection(("127.0.0.1", loop_server.port))
        partial.sendall(b"GET /heal")
        partial.close()
        assert (await conn.request("GET", "/healthz"))[0] == 200
    finally:
        conn.close()


async def test_workers_share_the_port_for_both(server_factory: Any) -> None:
    srv: RunningServer = server_factory("--workers", "2")
    conns = [await HttpConnection.open(srv.port) for _ in range(6)]  # spread over the workers by the kernel
    try:
        for conn in conns:
            assert (await conn.request("POST", "/healthz", b"x"))[0] == 405
            assert (await conn.request("GET", "/healthz"))[0] == 200
        turns = await asyncio.gather(*(text_turn(srv.url) for _ in range(4)))
        assert all(types[-1] == "response.done" for types, _ in turns)
    finally:
        for conn in conns:
            conn.close()
    # /metrics merges the workers: every request above is counted, whichever worker took it
    assert metric(srv, 'hark_http_requests_total{route="/healthz",status="200"}') == 6
    assert metric(srv, 'hark_http_requests_total{route="unmatched",status="405"}') == 6
