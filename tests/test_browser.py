"""The browser page (client/web/) in headless Chromium against the real server, over WebRTC and WebSocket.

Chromium's fake microphone plays 1 s of silence, `en_goforward_command`, then 3 s of silence; the page
must show the transcript and the echo reply, receive the reply's audio, and the server must have received
about the clip's worth of audio. Needs Debian's Chromium (`make browser`); never `playwright install`.
Without Chromium the tests are skipped, unless HARK_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, RunningServer, load_pcm
from playwright.async_api import Page, async_playwright

from bench.browser import (
    FIRST_AUDIO_JS,
    MISSING_CHROMIUM,
    TIMELINE_SCRIPT,
    chromium_args,
    metric_value,
    page_url,
    scrape_metrics,
    write_mic_wav,
)

pytestmark = pytest.mark.timeout(180)  # the test's own bounds (below) come first

CLIP = "en_goforward_command"
WAIT_MS = 60_000  # per step: the page's turn takes ~6 s, more on a loaded 2-core machine
TURN_LIMIT_S = 120  # the whole browser session, launch to close
QUIET_LIMIT_S = 15  # for the server's open sessions to drop to zero, before and after


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("HARK_REQUIRE_BROWSER") == "1":
            pytest.fail(MISSING_CHROMIUM)
        pytest.skip(MISSING_CHROMIUM)
    return path


@pytest.fixture
def fake_mic(tmp_path: Path) -> tuple[Path, float]:
    """The WAV Chromium plays as its microphone, and the clip's duration in seconds."""
    path = tmp_path / "mic.wav"
    return path, write_mic_wav(path, load_pcm(CLIP), lead_s=1.0, tail_s=3.0)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("HARK_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


async def metrics(server: RunningServer) -> str:
    return await asyncio.to_thread(scrape_metrics, server.http)


async def wait_for_metric(server: RunningServer, name: str, ok: Callable[[float], bool], what: str) -> str:
    deadline = time.monotonic() + QUIET_LIMIT_S
    while True:
        text = await metrics(server)
        value = metric_value(text, name)
        if ok(value):
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: {name} is {value} after {QUIET_LIMIT_S} s")
        await asyncio.sleep(0.2)


async def page_state(page: Page, console: list[str]) -> str:
    try:
        stats = await page.evaluate("window.harkStats()")
    except Exception as exc:
        stats = f"(harkStats failed: {exc})"
    return f"harkStats: {stats}\nconsole:\n" + "\n".join(console[-30:])


async def converse(
    server: RunningServer, chromium: str, mic: Path, transport: str, profile: Path, screenshot: Path | None = None
) -> dict[str, Any]:
    """One page load and one spoken turn; returns harkStats, the page's timeline and the server's audio."""
    before = await wait_for_metric(server, "hark_sessions_open", lambda v: v == 0, "other sessions are still open")
    audio_before = metric_value(before, "hark_audio_seconds_total")
    started = time.monotonic()
    console: list[str] = []
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=chromium_args(mic)
        )
        try:
            await context.add_init_script(TIMELINE_SCRIPT)  # records events and first reply audio
            page = context.pages[0] if context.pages else await context.new_page()
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
            try:
                async with asyncio.timeout(TURN_LIMIT_S):
                    await page.goto(page_url(server.http, transport), timeout=WAIT_MS)
                    # pocketsphinx may mishear the last word of a first utterance: only the start is checked
                    final = page.locator("#finals > .final[data-text^='go forward']")
                    await final.first.wait_for(state="attached", timeout=WAIT_MS)
                    reply = page.locator("#reply > .reply[data-status='completed'][data-text^='You said: go forward']")
                    await reply.first.wait_for(state="attached", timeout=WAIT_MS)
                    # reply audio reached the page: WebRTC, sound on the remote track; WebSocket, a binary frame
                    await page.wait_for_function(FIRST_AUDIO_JS, timeout=WAIT_MS)
                    stats: dict[str, Any] = await page.evaluate("window.harkStats()")
                    timeline: list[dict[str, Any]] = await page.evaluate("window.harkTimeline")
                    if screenshot is not None:
                        await page.screenshot(path=str(screenshot), full_page=True)
            except Exception as exc:
                state = await page_state(page, console)
                pytest.fail(f"{transport} turn failed: {exc!r}\n{state}\nserver log:\n{server.log()[-3000:]}")
        finally:
            await context.close()
    # the browser is gone: the server must notice and end the session (it then receives no more audio)
    after = await wait_for_metric(server, "hark_sessions_open", lambda v: v == 0, "the page's session did not end")
    wall_s = time.monotonic() - started
    server.assert_alive()
    return {
        "stats": stats,
        "timeline": timeline,
        "console": console,
        "audio_s": metric_value(after, "hark_audio_seconds_total") - audio_before,
        "wall_s": wall_s,
    }


def check_turn(result: dict[str, Any], transport: str, clip_s: float) -> None:
    stats = result["stats"]
    assert stats["transport"] == transport, stats
    assert stats["status"] == "connected", stats
    assert stats["errors"] == [], stats["errors"]
    assert any(r["status"] == "completed" and r["text"].startswith("You said: go forward") for r in stats["replies"])
    assert stats["packetsReceived"] > 0, stats  # reply audio: RTP packets, or binary frames over the WebSocket
    assert stats["framesSent"] > 0, stats
    assert not [line for line in result["console"] if line.startswith("pageerror")], result["console"]
    # the server got the microphone: at least the clip, at most what real time allows while the page lived
    audio_s, wall_s = result["audio_s"], result["wall_s"]
    assert clip_s <= audio_s <= wall_s + 1.0, f"server received {audio_s:.2f} s of audio in {wall_s:.2f} s"


async def test_webrtc_turn(chromium: str, server: RunningServer, fake_mic: tuple[Path, float], tmp_path: Path) -> None:
    mic, clip_s = fake_mic
    shot = artifacts_dir() / "browser-webrtc.png"
    result = await converse(server, chromium, mic, "webrtc", tmp_path / "profile", screenshot=shot)
    check_turn(result, "webrtc", clip_s)
    marks = {m["type"] for m in result["timeline"]}
    assert {"webrtc.offer_sent", "webrtc.connected", "webrtc.first_audio"} <= marks, marks
    assert shot.stat().st_size > 0


async def test_websocket_turn(
    chromium: str, server: RunningServer, fake_mic: tuple[Path, float], tmp_path: Path
) -> None:
    mic, clip_s = fake_mic
    result = await converse(server, chromium, mic, "websocket", tmp_path / "profile")
    check_turn(result, "websocket", clip_s)
    marks = {m["type"] for m in result["timeline"]}
    assert "websocket.first_audio" in marks and "webrtc.offer_sent" not in marks, marks
