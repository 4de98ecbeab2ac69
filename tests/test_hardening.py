"""What a hostile or broken client found (issue 12): a session that breaks ends cleanly and frees
its slot, ping floods and idle or non-reading clients are closed, SIGTERM drains whatever the
sessions do, and a port in use is one line, not a traceback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, RunningServer, metric, stop_server
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode
from wsclient import Peer, silence

FAULTS = Path(__file__).resolve().parent / "faultinject"
READER_FAULT = "inject-reader-fault"
WRITER_FAULT = "inject-writer-fault"
LONG_REPLY = "a reply long enough to be cut in the middle of its audio " * 6


async def _sessions_open_drops_to(server: RunningServer, value: float) -> float:
    for _ in range(150):
        current = metric(server, "hark_sessions_open")
        if current == value:
            return current
        await asyncio.sleep(0.1)
    return metric(server, "hark_sessions_open")


async def _mid_reply(peer: Peer) -> str:
    """Start a long typed turn and return its response id once its audio is flowing."""
    await peer.send_json({"type": "input.text", "text": LONG_REPLY})
    started = await peer.wait_for(lambda e: e["type"] == "response.started")
    await peer.wait_for(lambda e: e["type"] == "response.audio.started")
    await peer.wait_audio()  # the writer has just sent a frame: the moment D1 needed
    return str(started["response_id"])


def _faulty_env(**faults: str) -> dict[str, str]:
    # the checkout itself too: sitecustomize imports hark before `-m` puts the cwd on sys.path
    return {"PYTHONPATH": os.pathsep.join((str(FAULTS), str(REPO))), **faults}


# ---------------------------------------------------------------------- D1: a session that breaks


@pytest.mark.parametrize("where", ["reader", "writer"])
async def test_a_failing_session_task_ends_with_error_and_close_and_frees_its_slot(
    server_factory: Any, where: str
) -> None:
    """Each attempt breaks a session mid-reply (its event handling, or its socket's send, raises).
    Before the fix the client got no error and no close, the slot leaked, and SIGTERM hung."""
    env = (
        _faulty_env(HARK_FAULT_READER=READER_FAULT)
        if where == "reader"
        else _faulty_env(HARK_FAULT_WRITER=WRITER_FAULT)
    )
    srv: RunningServer = server_factory("--max-sessions", "3", env=env)
    for _ in range(6):  # twice the slots: a leaked slot would refuse a later attempt
        peer = await Peer.open(srv.url)
        assert peer.types() == ["session.created"], peer.events
        await _mid_reply(peer)
        await peer.send_json({"type": "ping", "id": READER_FAULT if where == "reader" else WRITER_FAULT})
        await peer.wait_closed(timeout=20)
        fatal = [e for e in peer.of("error") if e["fatal"]]
        assert [e["code"] for e in fatal] == ["internal_error"], peer.events[-5:]
        assert peer.conn.close_code == 1011
    assert await _sessions_open_drops_to(srv, 0) == 0
    witness = await Peer.open(srv.url)
    await witness.send_json({"type": "input.text", "text": "still serving"})
    assert (await witness.wait_for(lambda e: e["type"] == "response.done"))["status"] == "completed"
    await witness.close()
    assert "InjectedFault" in srv.log()  # the failure is logged with its traceback, not hidden
    stop_server(srv)  # fails the test if SIGTERM does not stop it
    assert srv.process.returncode == 0, srv.log()[-3000:]


async def test_huge_played_ms_mid_reply_is_answered_and_leaks_nothing(server_factory: Any) -> None:
    """The message of D1 itself: a 401-digit played_ms (float() of it overflowed)."""
    srv: RunningServer = server_factory("--max-sessions", "2")
    for _ in range(4):
        peer = await Peer.open(srv.url)
        response_id = await _mid_reply(peer)
        position = {"type": "playback.position", "response_id": response_id, "played_ms": 10**400}
        await peer.send_json(position)
        error = await peer.wait_for(lambda e: e["type"] == "error", timeout=20)
        if error["fatal"]:  # whichever layer catches it, the client is told, and the socket closes
            await peer.wait_closed(timeout=20)
        else:
            assert error["code"] == "invalid_field"
            await peer.send_json({"type": "ping", "id": "after"})
            await peer.wait_for(lambda e: e["type"] == "pong")
            await peer.close()
    assert await _sessions_open_drops_to(srv, 0) == 0
    stop_server(srv)
    assert srv.process.returncode == 0


# ---------------------------------------------------------------------- SIGTERM drains


async def test_sigterm_drains_live_sessions_and_a_client_that_stopped_reading(server_factory: Any) -> None:
    srv: RunningServer = server_factory("--max-sessions", "40")
    peers = [await Peer.open(srv.url) for _ in range(20)]
    for peer in peers:
        await peer.send_json({"type": "input.text", "text": LONG_REPLY})
    # one client that reads nothing after the handshake (its library stops reading at one message)
    stuck = await connect(srv.url, max_queue=1, open_timeout=30)
    await stuck.send(json.dumps({"type": "session.update", "config": {"output_sample_rate": 48000}}))
    await stuck.send(json.dumps({"type": "input.text", "text": LONG_REPLY}))
    await asyncio.gather(*(p.wait_for(lambda e: e["type"] == "response.audio.started") for p in peers))
    assert metric(srv, "hark_sessions_open") == 21
    started = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, stop_server, srv)
    drained_s = time.monotonic() - started
    assert srv.process.returncode == 0, srv.log()[-3000:]
    for peer in peers:
        await peer.wait_closed(timeout=10)
        assert peer.conn.close_code == 1001
    print(f"SIGTERM drained 20 live sessions and a non-reading client in {drained_s:.2f} s")
    stuck.transport.abort()


def test_a_shutdown_that_hangs_is_ended_by_the_watchdog(server_factory: Any) -> None:
    srv: RunningServer = server_factory(env=_faulty_env(HARK_FAULT_HANG_STOP="1"))
    children = _children(srv.process.pid)
    srv.process.terminate()
    assert srv.process.wait(timeout=60) == 1
    assert "shutdown took over 15 s; exiting now" in srv.log()
    for _ in range(100):  # its worker processes notice and go too
        if not any(Path(f"/proc/{pid}").exists() for pid in children):
            break
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in children), children


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


# ---------------------------------------------------------------------- D2: ping floods


class RawWebSocket:
    """A client that speaks WebSocket frames by hand, so it can flood and not read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, path: str = "/v1/stream") -> RawWebSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send_frames(self, opcode: Opcode, payload: bytes, count: int) -> None:
        frame = Frame(opcode, payload).serialize(mask=True, extensions=[])
        self.writer.write(frame * count)

    async def read_frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)


async def test_ping_flood_is_closed_with_bounded_pongs_and_others_keep_working(server: RunningServer) -> None:
    witness = await Peer.open(server.url)
    flooder = await RawWebSocket.open(server.port)
    flooder.send_frames(Opcode.PING, b"flood", 20_000)  # 220 KB of pings, none of the pongs read yet
    await flooder.writer.drain()
    await asyncio.sleep(0.3)  # the server has seen them while we read nothing
    pongs, close = 0, None
    async with asyncio.timeout(30):
        while close is None:
            try:
                opcode, payload = await flooder.read_frame()
            except asyncio.IncompleteReadError:
                break
            if opcode == Opcode.PONG:
                pongs += 1
            elif opcode == Opcode.CLOSE:
                close = (struct.unpack("!H", payload[:2])[0], payload[2:].decode())
    assert close is not None and close[0] == 1008 and close[1].startswith("ping_flood"), close
    # the server answered only its budget (10 a second, 20 at once), not 20,000: memory stays flat
    assert pongs <= 30, pongs
    flooder.writer.close()
    await witness.send_json({"type": "input.text", "text": "still here"})
    assert (await witness.wait_for(lambda e: e["type"] == "response.done"))["status"] == "completed"
    await witness.close()
    assert metric(server, 'hark_errors_total{code="ping_flood"}') >= 1
    server.assert_alive()


async def test_pong_flood_is_closed_too(server: RunningServer) -> None:
    """Unsolicited pongs cost the same parsing; they share the budget."""
    flooder = await RawWebSocket.open(server.port)
    flooder.send_frames(Opcode.PONG, b"", 5_000)
    close = None
    async with asyncio.timeout(30):
        while close is None:
            opcode, payload = await flooder.read_frame()
            if opcode == Opcode.CLOSE:
                close = struct.unpack("!H", payload[:2])[0], payload[2:].decode()
    assert close[0] == 1008 and close[1].startswith("ping_flood")
    flooder.writer.close()


async def test_keepalive_pings_are_well_within_the_budget(server: RunningServer) -> None:
    peer = await Peer.open(server.url, ping_interval=0.2, ping_timeout=5)
    await asyncio.sleep(2.0)  # ten keepalive pings, answered
    await peer.send_json({"type": "ping", "id": "alive"})
    await peer.wait_for(lambda e: e["type"] == "pong")
    assert not peer.closed.is_set()
    await peer.close()


# ---------------------------------------------------------------------- D6: idle sessions


async def test_idle_session_is_closed_and_pings_do_not_count(server_factory: Any) -> None:
    srv: RunningServer = server_factory("--idle-timeout-s", "1.5")
    # answers keepalives and sends its own pings, but no audio and no events
    idle = await Peer.open(srv.url, ping_interval=0.2, ping_timeout=5)
    assert idle.of("session.created")[0]["limits"]["idle_timeout_s"] == 1.5
    streaming = await Peer.open(srv.url)
    await streaming.send_pcm(silence(3000), speed=1.0)  # twice the timeout, at real time
    await idle.wait_closed(timeout=20)
    error = idle.of("error")[-1]
    assert error["code"] == "idle_timeout" and error["fatal"] is True
    assert idle.conn.close_code == 1008 and idle.conn.close_reason == "idle_timeout"
    assert not streaming.closed.is_set()  # audio, silence included, is activity
    await streaming.send_json({"type": "input.text", "text": "a reply is activity too"})
    await streaming.wait_for(lambda e: e["type"] == "response.done")
    await streaming.wait_closed(timeout=20)  # and after it, silence is idleness again
    assert streaming.errors()[-1] == "idle_timeout"
    assert await _sessions_open_drops_to(srv, 0) == 0


def test_idle_timeout_from_cli_env_and_toml(tmp_path: Path) -> None:
    from hark.server.config import load_config

    assert load_config([], {}).limits.idle_timeout_s == 60.0
    assert load_config(["--idle-timeout-s", "0"], {}).limits.idle_timeout_s == 0.0
    assert load_config([], {"HARK_IDLE_TIMEOUT_S": "12.5"}).limits.idle_timeout_s == 12.5
    toml = tmp_path / "hark.toml"
    toml.write_text("[limits]\nidle_timeout_s = 30\n")
    assert load_config(["--config", str(toml)], {}).limits.idle_timeout_s == 30
    with pytest.raises(ValueError, match="idle_timeout_s"):
        load_config([], {"HARK_IDLE_TIMEOUT_S": "soon"})


# ---------------------------------------------------------------------- a client that stops reading


async def test_client_that_stops_reading_is_closed_as_slow_consumer_without_full_buffers(server: RunningServer) -> None:
    """Default buffers: one short reply fits in the kernel buffers, so no send ever blocks; the
    ping after the output goes unanswered instead. Before, only the keepalive caught it (40-50 s)."""
    before = metric(server, 'hark_errors_total{code="slow_consumer"}')
    stuck = await connect(server.url, max_queue=1, open_timeout=30)  # reads one message, then nothing
    await stuck.send(json.dumps({"type": "input.text", "text": "hello"}))
    for _ in range(300):
        if metric(server, 'hark_errors_total{code="slow_consumer"}') > before:
            break
        await asyncio.sleep(0.1)
    assert metric(server, 'hark_errors_total{code="slow_consumer"}') > before
    with pytest.raises(Exception):  # noqa: B017 - ConnectionClosed of either flavour
        while True:
            await asyncio.wait_for(stuck.recv(), 10)
    assert stuck.close_code == 1008 and "slow_consumer" in (stuck.close_reason or "")


async def test_server_backpressure_is_not_blamed_on_the_client(server_factory: Any) -> None:
    """While the server itself stops reading (its session is behind), the client's pong waits
    behind the audio in the socket: that time does not count against the client."""
    srv: RunningServer = server_factory(env=_faulty_env(HARK_FAULT_STALL_AUDIO_S="8"))
    peer = await Peer.open(srv.url)
    await peer.send_json({"type": "input.text", "text": "there is output to probe"})
    for _ in range(40):  # queued behind the stalled first frame: the server pauses reading
        await peer.conn.send(silence(100))
    assert (await peer.wait_for(lambda e: e["type"] == "response.done"))["status"] == "completed"
    await asyncio.sleep(8.0)  # past the stall, longer than slow_consumer_timeout_s (5 s)
    await peer.send_json({"type": "ping", "id": "still-open"})
    await peer.wait_for(lambda e: e["type"] == "pong" and e["id"] == "still-open", timeout=20)
    assert "slow consumer" not in srv.log()
    await peer.close()


# ---------------------------------------------------------------------- the port in use


def test_port_in_use_is_one_line_naming_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hark.server.app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "--port" in lines[0] and str(port) in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "ready on" not in result.stdout
