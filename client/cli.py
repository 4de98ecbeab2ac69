"""hark-client: stream a WAV file to hark-server like a person speaking, and show what comes back.

Exit codes: 0 ok; 1 the server sent an `error` event, closed abnormally or did not finish in time;
2 usage or connection problems (including a session the server refused to open).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from websockets.exceptions import ConnectionClosed

from hark.protocol import (
    Error,
    ProtocolError,
    ResponseDone,
    ResponseStatus,
    ResponseTextDelta,
    SpeechStarted,
    TranscriptFinal,
    TranscriptPartial,
    encode,
)

from .client import (
    AudioChunk,
    Conversation,
    HarkClient,
    HarkConnectError,
    HarkConnectionClosed,
    HarkServerError,
    IncomingEvent,
    Pace,
    TurnResult,
    stream_pcm,
)
from .wav import read_wav, resample_pcm16, write_wav

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
FRAME_MS = 100  # the protocol's recommended frame size


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hark-client",
        description="Stream a WAV file to hark-server at real-time pace and print transcripts, reply and latency.",
        epilog="Exit codes: 0 ok, 1 the server reported an error, 2 usage or connection problem.",
    )
    p.add_argument("--url", default="ws://127.0.0.1:8765/v1/stream", help="server URL (default: %(default)s)")
    p.add_argument("--wav", required=True, help="16-bit PCM WAV, mono or stereo, any rate (resampled as needed)")
    p.add_argument("--fast", action="store_true", help="send as fast as the server's advertised limits allow")
    p.add_argument("--save-reply", metavar="OUT.wav", help="write all reply audio to this WAV file")
    p.add_argument("--json", action="store_true", help="print one JSON object per server event and a summary")
    p.add_argument("--api-key", default=os.environ.get("HARK_API_KEY"), help="bearer token (default: $HARK_API_KEY)")
    p.add_argument(
        "--turn-detection",
        choices=("server", "silence", "semantic"),
        default="server",
        help="how the server ends a turn: its default, after silence only, or by meaning (default: %(default)s)",
    )
    p.add_argument(
        "--tail-silence-ms",
        type=int,
        default=1000,
        help="silence sent after the file so the server's VAD hears the speech end (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the connection, and for the server to finish after the audio (default: %(default)s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help; return it so main() is testable
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not args.url.startswith(("ws://", "wss://")):
        return _usage(f"--url must start with ws:// or wss://, got {args.url!r}")
    if args.tail_silence_ms < 0:
        return _usage("--tail-silence-ms must be >= 0")
    if not args.timeout > 0:
        return _usage("--timeout must be > 0")
    try:
        pcm, rate = read_wav(args.wav)
    except FileNotFoundError:
        return _usage(f"--wav: no such file: {args.wav}")
    except (OSError, ValueError) as exc:
        return _usage(f"--wav: {exc}")
    try:
        return asyncio.run(_run(args, pcm, rate))
    except KeyboardInterrupt:
        print("hark-client: interrupted", file=sys.stderr)
        return 130


def _usage(message: str) -> int:
    print(f"hark-client: error: {message}", file=sys.stderr)
    return EXIT_USAGE


async def _run(args: argparse.Namespace, pcm: bytes, wav_rate: int) -> int:
    view = _View(sys.stdout, json_mode=args.json)
    client = HarkClient(args.url, api_key=args.api_key, open_timeout=args.timeout)
    try:
        await client.connect()
    except HarkConnectError as exc:
        print(f"hark-client: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HarkServerError as exc:
        print(f"hark-client: the server refused the session: {exc}", file=sys.stderr)
        return EXIT_USAGE

    conv = Conversation()
    failure: str | None = None
    async with client:
        assert client.session_created is not None
        view.event(client.session_created, conv)
        if args.turn_detection != "server":
            await client.update({"turn_detection": {"type": args.turn_detection}}, wait=True)
        in_rate = client.config.input_sample_rate
        audio = resample_pcm16(pcm, wav_rate, in_rate) + bytes(in_rate * args.tail_silence_ms // 1000 * 2)
        pace: Pace = "fast" if args.fast else "realtime"
        view.note(f"session {client.session_id}: streaming {len(audio) / 2 / in_rate:.1f} s of audio ({pace})")
        # 100 ms unless the server's advertised frame limits say otherwise
        frame_ms = min(max(FRAME_MS, client.limits.min_frame_ms), client.limits.max_frame_ms)

        reader = asyncio.create_task(_read(client, conv, view))
        sender = asyncio.create_task(_send(client, audio, in_rate, frame_ms, pace))
        await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done() and sender.exception() is not None:
            # a local failure (e.g. a frame outside the limits); the server side is still fine
            failure = f"sending failed: {sender.exception()}"
        elif not reader.done():
            try:
                await asyncio.wait_for(asyncio.shield(reader), args.timeout)
            except TimeoutError:
                failure = f"timed out after {args.timeout:g} s waiting for the server to finish"
            except Exception:
                pass  # reported from reader.exception() below
        for task in (sender, reader):
            task.cancel()
        await asyncio.gather(sender, reader, return_exceptions=True)
        if failure is None and not reader.cancelled() and reader.exception() is not None:
            failure = _describe_failure(reader.exception())
        conv.close_code, conv.close_reason = client.close_code, client.close_reason or ""

    view.finish()
    if failure:
        print(f"hark-client: {failure}", file=sys.stderr)
    saved = _save_reply(args.save_reply, conv, client.config.output_sample_rate) if args.save_reply else None
    code = EXIT_ERROR if (conv.errors or failure) else EXIT_OK
    view.summary(client.session_id, conv, saved, code)
    return code


def _describe_failure(exc: BaseException | None) -> str:
    if isinstance(exc, HarkConnectionClosed):
        return str(exc)
    if isinstance(exc, ProtocolError):
        return f"the server sent an invalid message: {exc}"
    return f"unexpected failure while reading: {exc!r}"


async def _read(client: HarkClient, conv: Conversation, view: _View) -> None:
    async for event in client.events():
        conv.feed(event)
        view.event(event, conv)


async def _send(client: HarkClient, audio: bytes, rate: int, frame_ms: int, pace: Pace) -> None:
    try:
        await stream_pcm(client, audio, rate, frame_ms, pace)
        await client.close_session()
    except ConnectionClosed:
        pass  # the server closed first (e.g. after a fatal error); the reader reports why


def _save_reply(path: str, conv: Conversation, fallback_rate: int) -> tuple[str, float] | None:
    """Write every response's audio, in order, at the first announced rate (others are resampled)."""
    rates = [r.sample_rate for r in conv.responses if r.audio and r.sample_rate]
    rate = rates[0] if rates else fallback_rate
    pcm = b"".join(resample_pcm16(bytes(r.audio), r.sample_rate or rate, rate) for r in conv.responses if r.audio)
    try:
        write_wav(path, pcm, rate)
    except OSError as exc:
        print(f"hark-client: cannot write {path}: {exc}", file=sys.stderr)
        return None
    if not pcm:
        print(f"hark-client: no reply audio arrived; wrote an empty {path}", file=sys.stderr)
    return path, len(pcm) / 2 / rate


def _fmt_ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _latency_line(metrics: dict[str, Any]) -> str:
    def num(key: str) -> str:
        v = metrics.get(key)
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else "-"

    return (
        f"final {_fmt_ms(metrics.get('final_ms'))} | first token {_fmt_ms(metrics.get('first_token_ms'))} | "
        f"first audio {_fmt_ms(metrics.get('first_audio_ms'))} | tokens {num('cached_tokens')} cached / "
        f"{num('prompt_tokens')} prompt | speculative prefills {num('speculative_prefills')}"
    )


def _result_json(r: TurnResult) -> dict[str, Any]:
    return {
        "response_id": r.response_id,
        "turn_id": r.turn_id,
        "transcript": r.transcript,
        "text": r.text,
        "status": r.status,
        "metrics": r.metrics,
        "audio_bytes": len(r.audio),
        "audio_ms": r.audio_ms,
        "sample_rate": r.sample_rate,
        "errors": [{"code": e.code, "message": e.message, "fatal": e.fatal} for e in r.errors],
    }


class _View:
    """Renders events: JSON lines, a live updating line on a terminal, or plain lines for logs and pipes."""

    def __init__(self, out: TextIO, *, json_mode: bool) -> None:
        self.out = out
        self.json = json_mode
        self.live = not json_mode and out.isatty()
        self._line_open = False
        self._last_partial = ""

    def event(self, event: IncomingEvent, conv: Conversation) -> None:
        if isinstance(event, Error):
            self._clear()
            fatal = " (fatal)" if event.fatal else ""
            print(f"hark-client: server error{fatal}: {event.code}: {event.message}", file=sys.stderr)
        if self.json:
            if isinstance(event, AudioChunk):
                obj: dict[str, Any] = {"type": "audio", "response_id": event.response_id, "bytes": len(event.pcm)}
                self._print(json.dumps(obj))
            else:
                self._print(encode(event))
            return
        if isinstance(event, SpeechStarted):
            self._show("you: ...")
        elif isinstance(event, TranscriptPartial):
            if self.live:
                self._show(f"you: {event.text} ...")
            elif event.text and event.text != self._last_partial:
                self._print(f"  partial: {event.text}")
            self._last_partial = event.text
        elif isinstance(event, TranscriptFinal):
            self._last_partial = ""
            self._print(f"you:  {event.text}")
        elif isinstance(event, ResponseTextDelta) and self.live:
            result = conv.response(event.response_id)
            if result is not None:
                self._show(f"hark: {result.text}")
        elif isinstance(event, ResponseDone):
            status = "" if event.status == ResponseStatus.COMPLETED else f"  [{event.status}]"
            self._print(f"hark: {event.text}{status}")

    def note(self, line: str) -> None:
        """A line for people; JSON output carries only events and the summary."""
        if not self.json:
            self._print(line)

    def _show(self, text: str) -> None:
        """Replace the live line (terminal only); keeps the end of long text, where the news is."""
        if not self.live:
            return
        width = max(20, shutil.get_terminal_size().columns - 1)
        if len(text) > width:
            text = "..." + text[-(width - 3) :]
        self.out.write("\r\x1b[K" + text)
        self.out.flush()
        self._line_open = True

    def _clear(self) -> None:
        if self._line_open:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._line_open = False

    def _print(self, line: str) -> None:
        self._clear()
        print(line, file=self.out, flush=True)

    def finish(self) -> None:
        self._clear()

    def summary(self, session_id: str, conv: Conversation, saved: tuple[str, float] | None, code: int) -> None:
        if self.json:
            obj = {
                "type": "summary",
                "session_id": session_id,
                "responses": [_result_json(r) for r in conv.responses],
                "finals": [f.text for f in conv.finals],
                "errors": [{"code": e.code, "message": e.message, "fatal": e.fatal} for e in conv.errors],
                "close_code": conv.close_code,
                "saved_reply": saved[0] if saved else None,
                "exit_code": code,
            }
            self._print(json.dumps(obj, ensure_ascii=False))
            return
        self._print("")
        self._print(f"session {session_id}: {len(conv.responses)} response(s)")
        answered = {r.turn_id for r in conv.responses}
        for final in conv.finals:
            if final.turn_id not in answered:
                self._print(f"  turn {final.turn_id} (no response): {final.text}")
        if not conv.responses and not conv.finals:
            self._print("  nothing was transcribed (was there speech in the file?)")
        for i, r in enumerate(conv.responses, 1):
            self._print(f"response {i} ({r.response_id}, turn {r.turn_id}): {r.status or 'unfinished'}")
            self._print(f"  transcript: {r.transcript or '-'}")
            self._print(f"  reply:      {r.text or '-'}")
            if r.audio and r.sample_rate:
                self._print(f"  audio:      {len(r.audio) / 2 / r.sample_rate:.2f} s at {r.sample_rate} Hz")
            self._print(f"  latency:    {_latency_line(r.metrics)}")
        if saved:
            self._print(f"reply audio saved to {saved[0]} ({saved[1]:.2f} s)")


if __name__ == "__main__":
    sys.exit(main())
