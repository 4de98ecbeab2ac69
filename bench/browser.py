"""The browser page's latency in headless Chromium, over WebRTC and over the WebSocket.

`python -m bench.browser` starts a hark-server process (as `make bench` does; or `--url` for a running
one) and loads the page (`client/web/`) `--runs` times per transport in Debian's Chromium, each time in
a fresh browser whose fake microphone plays 1 s of silence, the `en_goforward_command` clip, then silence.
Per page load it measures, in the page's own clock (`performance.now()`):

- WebRTC setup: the `webrtc.offer` leaving on the signalling socket -> the peer connection `connected`;
  beside it the server's `hark_stage_latency_seconds{stage="webrtc_setup"}` (offer received -> connected);
- speech end -> first reply audio: the `speech.stopped` event reaching the page -> the first reply
  audio reaching it. WebSocket: the first binary frame after `response.audio.started`. WebRTC: the first
  non-zero sample of the remote track in a Web Audio analyser, polled every 5 ms; beside it what
  `getStats()` (polled every 10 ms) shows: the first speech-sized inbound RTP packet, and the inbound
  `totalAudioEnergy` rising. Both are coarse: Chromium refreshes its stats about every 50 ms, and the
  audio level moves in ~100 ms steps. Also `response.audio.started` reaching the page, and the server's
  own `response.done.metrics.first_audio_ms` (from the end of speech, endpointing wait included).

The page is not modified: `TIMELINE_SCRIPT` is injected before its scripts and observes its
WebSockets, peer connection, data channel and remote track, recording into `window.harkTimeline`.
Never runs `playwright install`: it drives the system's Chromium (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CLIP = "en_goforward_command"
TRANSPORTS = ("webrtc", "websocket")
SAMPLE_RATE = 16000
PAGE_TIMEOUT_S = 60.0


def _player_cushion_ms() -> float:
    """The WebSocket player's delay before a first frame, read from the page so the two never disagree."""
    source = (Path(__file__).resolve().parents[1] / "client" / "web" / "audio.js").read_text()
    match = re.search(r"START_CUSHION_S\s*=\s*([0-9.]+)", source)
    return float(match.group(1)) * 1000.0 if match else float("nan")


PLAYER_CUSHION_MS = _player_cushion_ms()
MISSING_CHROMIUM = "Chromium is missing: apt-get install chromium (make browser does it)"

# Headless Chromium with a WAV as the microphone (see shared notes on WebRTC). No --user-data-dir:
# Playwright refuses it; a persistent context in a fresh directory is the same thing.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--allow-loopback-in-peer-connection",
)

# Injected before the page's own scripts. It only listens: every hark.v1 event but the frequent
# transcript.partial/response.text.delta, the offer leaving, the peer connection's states, the first
# binary (reply audio) frame after each response.audio.started, and for WebRTC, after each
# speech.stopped, the first reply sound on the remote track (a Web Audio analyser of its own) and the
# first speech-sized RTP packet and audio energy in getStats(). Times: performance.now(), ms since navigation.
TIMELINE_SCRIPT = r"""
(() => {
  const timeline = (window.harkTimeline = []);
  const mark = (type, extra) => timeline.push({ type, t: performance.now(), ...extra });
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  let awaitingAudio = null; // WebSocket: the reply whose first binary frame is awaited
  let peer = null;
  let analyser = null; // WebRTC: the remote track's samples, as Web Audio renders them

  // First non-zero sample on the remote track, polled every 5 ms (Web Audio renders 10 ms blocks here).
  async function watchSound(turnId) {
    const samples = new Float32Array(analyser.fftSize);
    let silent = false; // only a rise after silence counts
    let notBefore = performance.now();
    for (const until = notBefore + 30000; performance.now() < until; await sleep(5)) {
      analyser.getFloatTimeDomainData(samples);
      if (!samples.some((x) => Math.abs(x) > 1e-4)) [silent, notBefore] = [true, performance.now()];
      else if (silent) return mark('webrtc.first_audio', { turn_id: turnId, not_before: notBefore });
    }
  }

  async function inboundAudio(pc) {
    const s = { energy: 0, bytes: 0, packets: 0, stamp: null };
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        s.energy += r.totalAudioEnergy || 0;
        s.bytes += r.bytesReceived || 0;
        s.packets += r.packetsReceived || 0;
        s.stamp = r.timestamp;
      }
    });
    return s;
  }

  // The first stats snapshot with speech-sized RTP packets (the server's track sends 3-byte Opus
  // packets while silent), and the first with audio energy played out. notBefore: when the previous
  // snapshot, which had neither, was taken (Chromium refreshes them every ~50 ms).
  async function watchStats(pc, turnId) {
    const base = await inboundAudio(pc);
    let prev = base;
    let notBefore = performance.now();
    let packetSeen = false;
    for (const until = notBefore + 30000; pc.connectionState !== 'closed' && performance.now() < until; ) {
      await sleep(10);
      const now = await inboundAudio(pc);
      if (now.stamp === prev.stamp) continue;
      const bytesPerPacket = (now.bytes - prev.bytes) / Math.max(1, now.packets - prev.packets);
      if (!packetSeen && bytesPerPacket > 20) {
        packetSeen = true;
        mark('webrtc.first_packet', { turn_id: turnId, not_before: notBefore });
      }
      if (now.energy > base.energy + 1e-9) {
        return mark('webrtc.first_energy', { turn_id: turnId, not_before: notBefore });
      }
      [prev, notBefore] = [now, performance.now()];
    }
  }

  function onServerText(text) {
    let e;
    try {
      e = JSON.parse(text);
    } catch {
      return;
    }
    if (!e || typeof e.type !== 'string' || e.type === 'transcript.partial' || e.type === 'response.text.delta') return;
    mark(e.type, {
      turn_id: e.turn_id ?? null,
      response_id: e.response_id ?? null,
      status: e.status ?? null,
      text: e.text ?? null,
      code: e.code ?? null,
      metrics: e.metrics ?? null,
    });
    if (e.type === 'response.audio.started') awaitingAudio = e.response_id;
    if (e.type === 'speech.stopped' && peer) watchStats(peer, e.turn_id);
    if (e.type === 'speech.stopped' && analyser) watchSound(e.turn_id);
  }

  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        if (typeof ev.data === 'string') onServerText(ev.data);
        else if (awaitingAudio !== null) {
          mark('websocket.first_audio', { response_id: awaitingAudio });
          awaitingAudio = null;
        }
      });
    }
    send(data) {
      if (typeof data === 'string' && data.includes('"webrtc.offer"')) mark('webrtc.offer_sent');
      super.send(data);
    }
  };

  const NativePeer = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePeer {
    constructor(...args) {
      super(...args);
      peer = this;
      this.addEventListener('connectionstatechange', () => mark(`webrtc.${this.connectionState}`));
      this.addEventListener('track', (ev) => {
        const ctx = new AudioContext();
        analyser = ctx.createAnalyser();
        analyser.fftSize = 512;
        ctx.createMediaStreamSource(ev.streams[0] || new MediaStream([ev.track])).connect(analyser);
      });
    }
    createDataChannel(...args) {
      const channel = super.createDataChannel(...args);
      channel.addEventListener('message', (ev) => typeof ev.data === 'string' && onServerText(ev.data));
      return channel;
    }
  };
})();
"""

REPLY_DONE_JS = "() => document.querySelector('#reply > .reply[data-status=completed]') !== null"
FIRST_AUDIO_JS = "() => window.harkTimeline.some((m) => m.type.endsWith('.first_audio'))"
WEBRTC_STATS_JS = "() => window.harkTimeline.some((m) => m.type === 'webrtc.first_energy')"

# (key, label, transports it applies to); all in the page's clock but the server's rows
METRICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ready_ms", "page load -> session.created", TRANSPORTS),
    ("offer_to_connected_ms", "offer sent -> connected", ("webrtc",)),
    ("server_setup_ms", "server: offer received -> connected", ("webrtc",)),
    ("stop_to_audio_event_ms", "speech.stopped -> response.audio.started", TRANSPORTS),
    ("stop_to_audio_ms", "speech.stopped -> first reply audio", TRANSPORTS),
    ("stop_to_packet_ms", "speech.stopped -> first speech RTP packet (getStats)", ("webrtc",)),
    ("stop_to_energy_ms", "speech.stopped -> audio energy rises (getStats)", ("webrtc",)),
    ("server_first_audio_ms", "server: first_audio_ms (from end of speech)", TRANSPORTS),
)
# WebRTC: how long after speech.stopped the last look that did not yet find it was taken
LOWER_BOUNDS = ("stop_to_audio_lower_ms", "stop_to_packet_lower_ms", "stop_to_energy_lower_ms")


def chromium_args(mic_wav: Path) -> list[str]:
    """Launch flags with `mic_wav` as the microphone, played once (then silence)."""
    return [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={mic_wav}%noloop"]


def write_mic_wav(path: Path, pcm16k: bytes, lead_s: float = 1.0, tail_s: float = 3.0) -> float:
    """A 16 kHz mono WAV: `lead_s` of silence (the fake mic starts at getUserMedia), the clip, `tail_s`
    of silence (the endpoint and the reply). Returns the clip's duration in seconds."""
    lead = b"\0\0" * round(lead_s * SAMPLE_RATE)
    tail = b"\0\0" * round(tail_s * SAMPLE_RATE)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(lead + pcm16k + tail)
    return len(pcm16k) / 2 / SAMPLE_RATE


def page_url(base_url: str, transport: str) -> str:
    """The page with the test contract's query string: no mic processing, start at once."""
    return f"{base_url.rstrip('/')}/?transport={transport}&ec=0&ns=0&agc=0&autostart=1"


def scrape_metrics(base_url: str) -> str:
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


def metric_value(text: str, name: str, labels: str = "") -> float:
    """One sample of a Prometheus text exposition (`labels` as written, e.g. 'stage="webrtc_setup"'); 0 if absent."""
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def _setup_histogram(text: str) -> tuple[float, float]:
    labels = 'stage="webrtc_setup"'
    return (
        metric_value(text, "hark_stage_latency_seconds_sum", labels),
        metric_value(text, "hark_stage_latency_seconds_count", labels),
    )


def _first(timeline: Sequence[dict[str, Any]], kind: str, **match: Any) -> dict[str, Any] | None:
    return next((m for m in timeline if m["type"] == kind and all(m.get(k) == v for k, v in match.items())), None)


def _since(later: dict[str, Any] | None, earlier: dict[str, Any] | None, key: str = "t") -> float | None:
    return None if later is None or earlier is None else float(later[key]) - float(earlier["t"])


def measure(transport: str, timeline: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The page's intervals for its first completed reply (all None where the page did not get there)."""
    done = _first(timeline, "response.done", status="completed")
    rid = done["response_id"] if done else None
    started = _first(timeline, "response.started", response_id=rid) if rid else None
    turn = started["turn_id"] if started else None
    stopped = _first(timeline, "speech.stopped", turn_id=turn) if turn is not None else None
    audio_event = _first(timeline, "response.audio.started", response_id=rid) if rid else None
    if transport == "webrtc":
        first_audio = _first(timeline, "webrtc.first_audio", turn_id=turn) if turn is not None else None
    else:
        first_audio = _first(timeline, "websocket.first_audio", response_id=rid) if rid else None
    metrics = (done.get("metrics") or {}) if done else {}
    created = _first(timeline, "session.created")
    final = _first(timeline, "transcript.final", turn_id=turn) if turn is not None else None
    rtc = transport == "webrtc"
    first_packet = _first(timeline, "webrtc.first_packet", turn_id=turn) if turn is not None else None
    first_energy = _first(timeline, "webrtc.first_energy", turn_id=turn) if turn is not None else None
    return {
        "ready_ms": created["t"] if created else None,
        "offer_to_connected_ms": _since(_first(timeline, "webrtc.connected"), _first(timeline, "webrtc.offer_sent")),
        "stop_to_audio_event_ms": _since(audio_event, stopped),
        "stop_to_audio_ms": _since(first_audio, stopped),
        "stop_to_audio_lower_ms": _since(first_audio, stopped, "not_before") if rtc else None,
        "stop_to_packet_ms": _since(first_packet, stopped),
        "stop_to_packet_lower_ms": _since(first_packet, stopped, "not_before") if rtc else None,
        "stop_to_energy_ms": _since(first_energy, stopped),
        "stop_to_energy_lower_ms": _since(first_energy, stopped, "not_before") if rtc else None,
        "server_first_audio_ms": metrics.get("first_audio_ms"),
        "server_final_ms": metrics.get("final_ms"),
        "final": final["text"] if final else None,
        "reply": done.get("text") if done else None,
    }


async def run_page(
    playwright: Any, chromium: str, base_url: str, mic_wav: Path, transport: str, timeout_s: float = PAGE_TIMEOUT_S
) -> dict[str, Any]:
    """One page load in a fresh browser, until its first reply is done and its audio has arrived."""
    before = await asyncio.to_thread(scrape_metrics, base_url)
    console: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hark-chromium-") as profile:
        context = await playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True, args=chromium_args(mic_wav)
        )
        try:
            await context.add_init_script(TIMELINE_SCRIPT)
            page = context.pages[0] if context.pages else await context.new_page()
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
            await page.goto(page_url(base_url, transport), timeout=timeout_s * 1000)
            try:
                await page.wait_for_function(REPLY_DONE_JS, timeout=timeout_s * 1000)
                with contextlib.suppress(Exception):  # measured as missing rather than failing the run
                    await page.wait_for_function(FIRST_AUDIO_JS, timeout=10_000)
                    if transport == "webrtc":
                        await page.wait_for_function(WEBRTC_STATS_JS, timeout=10_000)
            except Exception as exc:
                stats = await page.evaluate("window.harkStats()")
                raise RuntimeError(f"{transport}: no completed reply: {exc}\nstats {stats}\nconsole {console}") from exc
            timeline: list[dict[str, Any]] = await page.evaluate("window.harkTimeline")
            stats = await page.evaluate("window.harkStats()")
        finally:
            await context.close()
    after = await asyncio.to_thread(scrape_metrics, base_url)
    result = {"transport": transport, **measure(transport, timeline)}
    setup_sum, setup_count = (a - b for a, b in zip(_setup_histogram(after), _setup_histogram(before), strict=True))
    result["server_setup_ms"] = setup_sum / setup_count * 1000.0 if transport == "webrtc" and setup_count else None
    result["packets_received"] = stats.get("packetsReceived")
    result["errors"] = [e.get("code") for e in stats.get("errors", [])]
    return result


def summarize(pages: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50 and max of each metric over the page loads that measured it."""
    summary: dict[str, dict[str, float]] = {}
    for key in (*(m[0] for m in METRICS), *LOWER_BOUNDS):
        values = [float(p[key]) for p in pages if p.get(key) is not None]
        if values:
            summary[key] = {"n": float(len(values)), "p50": statistics.median(values), "max": max(values)}
    return summary


async def run_browser_bench(base_url: str, chromium: str, runs: int, pcm: bytes) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    result: dict[str, Any] = {"url": base_url, "runs": runs, "clip": CLIP, "transports": {}}
    with tempfile.TemporaryDirectory(prefix="hark-browser-bench-") as tmp:
        mic = Path(tmp) / "mic.wav"
        result["clip_s"] = write_mic_wav(mic, pcm)
        async with async_playwright() as playwright:
            for transport in TRANSPORTS:
                pages = []
                for i in range(runs):
                    started = time.monotonic()
                    async with asyncio.timeout(PAGE_TIMEOUT_S + 30):
                        page = await run_page(playwright, chromium, base_url, mic, transport)
                    page["wall_s"] = time.monotonic() - started
                    print(f"  {transport} run {i + 1}/{runs}: {_brief(page)}")
                    pages.append(page)
                result["transports"][transport] = {"pages": pages, "summary": summarize(pages)}
    return result


def _brief(page: dict[str, Any]) -> str:
    parts = [f"{key} {_ms(page[key])}" for key, _, _ in METRICS if page.get(key) is not None]
    errors = f", errors {page['errors']}" if page["errors"] else ""
    return f"{', '.join(parts)} (heard {page['final']!r}, said {page['reply']!r}{errors})"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}"


def format_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows (with a header) for the console and the markdown report: p50 and max per transport, in ms."""
    header = ["interval (ms)"]
    for transport in TRANSPORTS:
        header += [f"{_LABEL[transport]} p50", f"{_LABEL[transport]} max"]
    rows = [header]
    for key, label, applies in METRICS:
        row = [label]
        for transport in TRANSPORTS:
            stats = result["transports"][transport]["summary"].get(key) if transport in applies else None
            row += [_ms(stats["p50"]), _ms(stats["max"])] if stats else ["-", "-"]
        rows.append(row)
    return rows


_LABEL = {"webrtc": "WebRTC", "websocket": "WebSocket"}


def print_rows(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def browser_section(result: dict[str, Any]) -> str:
    """The markdown section of docs/performance.md for this benchmark."""
    title = "\n## The browser page: WebRTC against WebSocket\n"
    if "skipped" in result:
        return f"{title}\nNot measured in this run: {result['skipped']}\n"
    rows = format_rows(result)
    align = ["---", *(["---:"] * (len(rows[0]) - 1))]
    table = "\n".join("| " + " | ".join(row) + " |" for row in (rows[0], align, *rows[1:]))
    rtc, ws = (result["transports"][t]["summary"] for t in TRANSPORTS)

    def p50(summary: dict[str, dict[str, float]], key: str) -> str:
        return _ms(summary[key]["p50"]) if key in summary else "-"

    def bounds(key: str) -> str:  # WebRTC: (last look without, first look with], p50s
        low, high = rtc.get(f"{key}_lower_ms"), rtc.get(f"{key}_ms")
        return f"{_ms(low['p50'])}-{_ms(high['p50'])} ms" if low and high else "-"

    def diff(a: dict[str, dict[str, float]], key_a: str, b: dict[str, dict[str, float]], key_b: str) -> str:
        return _ms(a[key_a]["p50"] - b[key_b]["p50"]) if key_a in a and key_b in b else "-"

    ws_rendered = _ms(ws["stop_to_audio_ms"]["p50"] + PLAYER_CUSHION_MS) if "stop_to_audio_ms" in ws else "-"
    rtc_path = diff(rtc, "stop_to_audio_ms", rtc, "stop_to_audio_event_ms")
    energy_late = diff(rtc, "stop_to_energy_ms", rtc, "stop_to_audio_ms")
    return f"""{title}
`python -m bench.browser` (run by `make bench`): the page (`client/web/`) in headless
{result.get("chromium", "Chromium")} on the same machine as the server (they share its CPUs),
{result["runs"]} page loads per transport, each in a fresh browser whose fake microphone plays 1 s of
silence, `{result["clip"]}` ({result["clip_s"]:.1f} s), then silence. Times are taken in the page
(`performance.now()`) by a script injected before the page's own, which only listens to its sockets, peer
connection, data channel and remote track; the two `server:` rows are the server's own numbers.

{table}

- **Setup.** The page sends its offer once it has gathered its ICE candidates (no trickle ICE); from there
  the connection is up in {p50(rtc, "offer_to_connected_ms")} ms (p50), {p50(rtc, "server_setup_ms")} ms of it
  counted by the server from receiving the offer. Page load to `session.created`, what a user waits before
  speaking, is {p50(rtc, "ready_ms")} ms over WebRTC against {p50(ws, "ready_ms")} ms over the WebSocket.
- **Speech end to first reply audio**, from `speech.stopped` reaching the page. The server announces the
  reply audio (`response.audio.started`) {p50(rtc, "stop_to_audio_event_ms")} ms (WebRTC) or
  {p50(ws, "stop_to_audio_event_ms")} ms (WebSocket) after it. *First reply audio* is, over the WebSocket, the
  first PCM frame arriving, right behind the announcement; over WebRTC, the first non-zero sample of the
  remote track in a Web Audio analyser (polled every 5 ms), {rtc_path} ms after the announcement: the
  server track's 20 ms frames, Opus, and Chromium's jitter buffer. The WebSocket page then holds its first
  frame {PLAYER_CUSHION_MS:.0f} ms (its player's jitter cushion), so reply sound starts rendering at about
  {ws_rendered} ms over the WebSocket against {p50(rtc, "stop_to_audio_ms")} ms over WebRTC.
- **`getStats()` is too coarse for this.** Chromium refreshes the stats about every 50 ms, so the first
  speech-sized RTP packet (silence goes as 3-byte Opus packets) is only known to have arrived
  {bounds("stop_to_packet")} after `speech.stopped`. And the inbound `audioLevel`/`totalAudioEnergy` moves
  in steps of about 100 ms: energy rose {bounds("stop_to_energy")}
  after `speech.stopped`, {energy_late} ms after the analyser heard
  the sound.
- **The server's `first_audio_ms`** counts from the end of speech, so it includes the endpointing wait
  (the VAD's silence) that passes before `speech.stopped` is sent; the page's intervals start after it.
"""


def chromium_version(path: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
        if match := re.search(r"Chromium [\d.]+", out):
            return match.group(0)
    return "Chromium"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="The browser page's WebRTC and WebSocket latency in Chromium.")
    parser.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8765 (default: start one)")
    parser.add_argument("--runs", type=int, default=3, help="page loads per transport")
    parser.add_argument("--chromium", help="the Chromium binary (default: chromium on PATH)")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    args = parser.parse_args(argv)

    chromium = args.chromium or shutil.which("chromium")
    if chromium is None:
        print(f"browser bench skipped: {MISSING_CHROMIUM}")
        return {"skipped": MISSING_CHROMIUM}
    from hark.loadtest.scenario import load_clip

    pcm = load_clip(CLIP)
    if args.url:
        result = asyncio.run(run_browser_bench(args.url, chromium, args.runs, pcm))
    else:
        from hark.loadtest.spawn import ServerProcess

        with (
            tempfile.TemporaryDirectory(prefix="hark-bench-") as tmp,
            ServerProcess(log_path=Path(tmp) / "server.log") as server,
        ):
            try:
                result = asyncio.run(run_browser_bench(f"http://127.0.0.1:{server.port}", chromium, args.runs, pcm))
            except BaseException:
                print(f"server log tail:\n{server.log_tail()}", file=sys.stderr)
                raise
    result["chromium"] = chromium_version(chromium)
    print_rows(format_rows(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
