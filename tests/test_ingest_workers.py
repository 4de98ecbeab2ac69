"""The ingest path (--asr none), frame accounting, several worker processes, overload refusal."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path

from conftest import load_pcm, process_alive
from prometheus_client.parser import text_string_to_metric_families
from wsclient import Peer, silence


def _metrics(http: str) -> dict[str, float]:
    """Samples by name with labels folded in, e.g. 'hark_audio_frames_dropped_total{reason=invalid}'."""
    with urllib.request.urlopen(f"{http}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def _dropped(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("hark_audio_frames_dropped_total{"))


async def _settled(http: str, timeout: float = 30.0) -> dict[str, float]:
    """Metrics once every received frame is accounted for (processed or dropped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = _metrics(http)
        received = samples.get("hark_audio_frames_total", 0.0)
        if received == samples.get("hark_audio_frames_processed_total", 0.0) + _dropped(samples):
            return samples
        if asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.2)


async def test_ingest_path_gives_speech_events_and_empty_finals(server_factory) -> None:
    server = server_factory("--asr", "none")
    peer = await Peer.open(server.url)
    created = peer.of("session.created")[0]
    assert created["engines"]["asr"] == "none"
    await peer.send_pcm(load_pcm("en_goforward_command") + silence(1200))
    final = await peer.wait_for(lambda e: e["type"] == "transcript.final")
    assert final["text"] == ""
    assert [e["type"] for e in peer.events if e["type"].startswith("speech.")] == ["speech.started", "speech.stopped"]
    await peer.send_json({"type": "session.close"})
    await peer.wait_closed()
    assert "response.started" not in peer.types() and not peer.errors()
    samples = await _settled(server.http)
    sent = -(-(len(load_pcm("en_goforward_command")) + len(silence(1200))) // 3200)
    assert samples["hark_audio_frames_total"] == sent
    assert samples["hark_audio_frames_processed_total"] == sent and _dropped(samples) == 0


async def test_every_frame_is_processed_or_counted_dropped(server_factory) -> None:
    server = server_factory("--asr", "none")
    peer = await Peer.open(server.url)
    await peer.conn.send(b"\x01")  # odd length: invalid, dropped
    await peer.send_pcm(load_pcm("en_vosk_digits"), speed=1.9)
    peer.conn.transport.abort()  # the client vanishes: no close handshake
    peer._reader.cancel()
    samples = await _settled(server.http)
    received = samples["hark_audio_frames_total"]
    assert received >= len(load_pcm("en_vosk_digits")) // 3200
    assert samples["hark_audio_frames_dropped_total{reason=invalid}"] == 1
    assert received == samples["hark_audio_frames_processed_total"] + _dropped(samples)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


async def test_two_workers_share_one_port_and_merge_metrics(server_factory) -> None:
    server = server_factory("--workers", "2", "--asr", "none")
    workers = _children(server.process.pid)
    assert len(workers) == 2
    peers = [await Peer.open(server.url) for _ in range(8)]
    assert all(p.of("session.created") for p in peers)
    await asyncio.gather(*(p.send_pcm(silence(1000)) for p in peers))
    samples = await _settled(server.http)
    assert samples["hark_sessions_open"] == 8  # summed over both workers, whichever one served /metrics
    assert samples["hark_audio_frames_total"] == 8 * 10 == samples["hark_audio_frames_processed_total"]
    assert samples["hark_server_resident_memory_bytes"] > 0
    for peer in peers:
        await peer.close()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
    assert not any(process_alive(pid) for pid in workers)


async def test_an_overloaded_loop_refuses_new_sessions(server_factory) -> None:
    # any lag at all is above this limit: the guard must refuse, with server_busy, a session that
    # a server within its limits would admit
    server = server_factory("--asr", "none", "--overload-loop-lag-ms", "0.000001")
    await asyncio.sleep(1.0)
    peer = await Peer.open(server.url)
    assert peer.errors() == ["server_busy"]
    await peer.wait_closed()
    assert peer.conn.close_code == 1013


async def test_a_server_behind_real_time_refuses_new_sessions(server_factory) -> None:
    """Frames that wait in the inbox mean the server is behind: with the limit at (almost) zero,
    any wait at all counts, so the next session is refused while the first one keeps streaming."""
    server = server_factory("--asr", "none", "--overload-frame-wait-ms", "0.000001")
    first = await Peer.open(server.url)
    assert first.of("session.created")
    await first.send_pcm(silence(1000))
    second = await Peer.open(server.url)
    assert second.errors() == ["server_busy"]
    assert "behind real time" in second.of("error")[0]["message"]
    await first.send_pcm(silence(300))  # the running session is not touched
    assert not first.errors() and not first.closed.is_set()
    await first.close()
