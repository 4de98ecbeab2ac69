"""WebRTC setup by POST against by WebSocket signalling: offer -> answer, offer -> connected, DELETE.

Starts its own server (`hark.loadtest.spawn`, port 0, the defaults) unless `--url` names one, then
runs `--runs` sessions one after another with aiortc as the client on loopback, each way:
  python -m bench.webrtc_post --runs 10
Prints the median and the worst of each interval in ms, from the offer made (candidates gathered);
the WebSocket's answer includes opening the socket, as a client pays it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import connect

from hark.loadtest.spawn import ServerProcess
from hark.server.transport.webrtc_media import allow_loopback_candidates


async def _peer() -> tuple[RTCPeerConnection, asyncio.Event, str, float]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    connected = asyncio.Event()
    pc.on("connectionstatechange", lambda: connected.set() if pc.connectionState == "connected" else None)
    await pc.setLocalDescription(await pc.createOffer())  # candidates gathered here
    return pc, connected, str(pc.localDescription.sdp), time.perf_counter()


async def by_post(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    pc, connected, sdp, sent = await _peer()
    async with http.post(f"{base}/v1/webrtc/offer", data=sdp, headers={"Content-Type": "application/sdp"}) as resp:
        assert resp.status == 201, await resp.text()
        answer, location = await resp.text(), resp.headers["Location"]
    answered = time.perf_counter()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(connected.wait(), 20)
    up = time.perf_counter()
    async with http.delete(f"{base}{location}") as resp:
        assert resp.status == 204
    deleted = time.perf_counter()
    await pc.close()
    return {"answer": answered - sent, "connected": up - sent, "delete": deleted - up}


async def by_websocket(base: str) -> dict[str, float]:
    pc, connected, sdp, sent = await _peer()
    async with connect(base.replace("http://", "ws://") + "/v1/webrtc") as ws:
        await ws.send(json.dumps({"type": "webrtc.offer", "sdp": sdp}))
        answer = json.loads(await ws.recv())
        answered = time.perf_counter()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await asyncio.wait_for(connected.wait(), 20)
        up = time.perf_counter()
    await pc.close()
    return {"answer": answered - sent, "connected": up - sent}


def _row(name: str, runs: list[dict[str, float]]) -> str:
    cells = []
    for key in runs[0]:
        values = [r[key] * 1000 for r in runs]
        cells.append(f"{key} p50 {statistics.median(values):.0f} max {max(values):.0f}")
    return f"{name:10s} " + ", ".join(cells) + " ms"


async def main_async(url: str | None, runs: int) -> None:
    allow_loopback_candidates()
    server = None
    if url is None:
        server = ServerProcess((), log_path=Path("/tmp/bench-webrtc-post.log"))
        server.start()
        url = server.http_url
    try:
        async with aiohttp.ClientSession() as http:
            await by_post(http, url)  # warm-up: codecs, first session
            posted = [await by_post(http, url) for _ in range(runs)]
        signalled = [await by_websocket(url) for _ in range(runs)]
    finally:
        if server is not None:
            server.stop()
    print(_row("POST", posted))
    print(_row("WebSocket", signalled))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8765 (default: start one)")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main_async(args.url, args.runs))


if __name__ == "__main__":
    main()
