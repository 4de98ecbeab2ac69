"""HTTP routes, API keys, origins and capacity."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from conftest import RunningServer
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from wsclient import Peer


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


async def test_health_and_metrics(server: RunningServer) -> None:
    status, ctype, body = _get(f"{server.http}/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "input.text", "text": "count the metrics"})
    await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.conn.send("not json")
    await peer.wait_for(lambda e: e["type"] == "error")
    await peer.close()
    status, ctype, body = _get(f"{server.http}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    for name in (
        "hark_sessions_open",
        "hark_sessions_total",
        "hark_audio_frames_total",
        "hark_turns_total",
        'hark_responses_total{status="completed"}',
        'hark_errors_total{code="invalid_json"}',
        'hark_stage_latency_seconds_bucket{le="0.1",stage="first_audio"}',
        "hark_event_loop_lag_seconds",
    ):
        assert name in body, name
    assert _get(f"{server.http}/nope")[0] == 404


async def _refused_at_handshake(url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON error of a handshake the server answered instead of upgrading."""
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, open_timeout=30, **kwargs)
    response = refused.value.response
    assert response.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = json.loads(response.body)
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return response.status_code, body["error"]


async def test_api_keys_header_and_query(server_factory: Any) -> None:
    srv: RunningServer = server_factory("--api-key", "k-one", "--api-key", "k-two")
    # refused before any WebSocket exists: 401 with a JSON body, on every WebSocket path
    for url in (srv.url, srv.url + "?token=k-three", srv.url.replace("/v1/stream", "/v1/webrtc")):
        status, error = await _refused_at_handshake(url)
        assert (status, error["code"]) == (401, "unauthorized"), url
    status, _ = await _refused_at_handshake(srv.url, additional_headers={"Authorization": "Bearer nope"})
    assert status == 401
    by_header = await Peer.open(srv.url, additional_headers={"Authorization": "Bearer k-two"})
    by_query = await Peer.open(srv.url + "?token=k-one")
    for peer in (by_header, by_query):
        assert peer.types() == ["session.created"]
        await peer.close()
    # /metrics is protected by the same keys; /healthz stays open for load balancers
    status, ctype, body = _get(f"{srv.http}/metrics")
    assert status == 401 and ctype == "application/json" and json.loads(body)["error"]["code"] == "unauthorized"
    assert _get(f"{srv.http}/metrics?token=k-one")[0] == 200
    assert _get(f"{srv.http}/metrics", {"Authorization": "Bearer k-two"})[0] == 200
    assert _get(f"{srv.http}/healthz")[0] == 200


async def test_metrics_public_opt_out(server_factory: Any) -> None:
    srv: RunningServer = server_factory("--api-key", "k-one", "--metrics-public")
    status, _, body = _get(f"{srv.http}/metrics")
    assert status == 200 and "hark_sessions_open" in body
    assert (await _refused_at_handshake(srv.url))[0] == 401  # the sessions themselves stay protected


async def test_max_sessions_and_origin(server_factory: Any) -> None:
    srv: RunningServer = server_factory("--max-sessions", "2", "--allowed-origin", "https://app.example")
    first = await Peer.open(srv.url)
    second = await Peer.open(srv.url, origin="https://app.example")
    busy = await Peer.open(srv.url)
    await busy.wait_closed()
    assert busy.errors() == ["server_busy"] and busy.conn.close_code == 1013
    await first.close()
    await second.close()
    status, error = await _refused_at_handshake(srv.url, origin="https://evil.example")
    assert (status, error["code"]) == (403, "origin_not_allowed")


def test_config_file_env_and_cli_precedence(tmp_path: Any) -> None:
    from hark.server.config import load_config

    cfg_file = tmp_path / "hark.toml"
    cfg_file.write_text("port = 9000\nmax_sessions = 5\n[session_defaults]\nmin_silence_ms = 800\n")
    cfg = load_config(["--config", str(cfg_file), "--port", "9100"], {"HARK_MAX_SESSIONS": "7"})
    assert (cfg.port, cfg.max_sessions, cfg.session_defaults.min_silence_ms) == (9100, 7, 800)
    cfg_file.write_text("prot = 1\n")
    with pytest.raises(ValueError, match="unknown setting 'prot'"):
        load_config(["--config", str(cfg_file)], {})
