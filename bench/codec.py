"""µs per event for the hark.v1 codec: encode and decode of a representative set of events.

    python bench/codec.py                      # the codec in this tree (hark.protocol)
    python bench/codec.py --impl /tmp/old      # a `protocol/` package copied elsewhere, e.g. an older
                                               # commit: git archive HEAD~1 protocol | tar -x -C /tmp/old

Each figure is the best of --repeat runs of --number calls (best, not mean: the machine is shared and
the minimum is the figure least disturbed by other work). Rejected messages are timed too: a hostile
client chooses which path the server runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import timeit
from collections.abc import Callable
from types import ModuleType
from typing import Any


def load(impl: str | None) -> ModuleType:
    if impl is None:
        return importlib.import_module("hark.protocol")
    sys.path.insert(0, impl)
    return importlib.import_module("protocol")


def client_events(p: Any) -> dict[str, Any]:
    return {
        "ping": p.Ping(id="42"),
        "playback.position": p.PlaybackPosition(response_id="resp_7", played_ms=1200),
        "input.text": p.InputText(text="what is the weather like in Lisbon tomorrow afternoon?"),
        "session.update": p.SessionUpdate(config={"input_sample_rate": 48000, "min_silence_ms": 700, "voice": "en-gb"}),
        "response.cancel": p.ResponseCancel(response_id="resp_7"),
    }


def server_events(p: Any) -> dict[str, Any]:
    metrics = {
        "final_ms": 212.4,
        "first_token_ms": 260.1,
        "first_audio_ms": 301.9,
        "audio_ms": 1826,
        "prompt_tokens": 412,
        "cached_tokens": 398,
        "speculative_prefills": 3,
        "speculative_aborted": 1,
    }
    return {
        "session.created": p.SessionCreated(
            session_id="5f0c2b9e6d7a4e1f",
            protocol="hark.v1",
            config=p.SessionConfig().to_dict(),
            limits=p.SessionLimits().to_dict(),
            engines={"asr": "pocketsphinx", "llm": "echo", "tts": "espeak"},
        ),
        "transcript.partial": p.TranscriptPartial(turn_id=3, text="go forward ten", stable_text="go forward"),
        "response.text.delta": p.ResponseTextDelta(response_id="resp_7", delta=" meters."),
        "response.text.delta (CJK)": p.ResponseTextDelta(response_id="resp_7", delta="明天里斯本的天气"),
        "response.audio.started": p.ResponseAudioStarted(response_id="resp_7", sample_rate=24000),
        "response.done": p.ResponseDone(
            response_id="resp_7", status="completed", text="You said: go.", metrics=metrics
        ),
        "error": p.Error(code="invalid_field", message="playback.position: 'played_ms' must be >= 0"),
        "pong": p.Pong(id="42"),
    }


BAD_CLIENT = {
    "bad: not json": "{this is not json",
    "bad: unknown type": '{"type":"audio.launch"}',
    "bad: field type": '{"type":"playback.position","response_id":"r","played_ms":"soon"}',
    "bad: config range": '{"type":"session.update","config":{"min_silence_ms":1}}',
}


def per_call_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", help="directory holding a `protocol/` package to time instead of hark.protocol")
    ap.add_argument("--number", type=int, default=20000, help="calls per run")
    ap.add_argument("--repeat", type=int, default=5, help="runs; the best is reported")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    p = load(args.impl)
    rows: list[dict[str, Any]] = []

    def time_event(side: str, name: str, event: Any, decode: Callable[[str], object]) -> None:
        text = p.encode(event)
        assert decode(text) == event, name  # timing a codec that does not round-trip means nothing
        rows.append(
            {
                "side": side,
                "event": name,
                "bytes": len(text.encode()),
                "encode_us": per_call_us(lambda: p.encode(event), args.number, args.repeat),
                "decode_us": per_call_us(lambda: decode(text), args.number, args.repeat),
            }
        )

    for name, event in client_events(p).items():
        time_event("client", name, event, p.decode_client)
    for name, event in server_events(p).items():
        time_event("server", name, event, p.decode_server)
    for name, text in BAD_CLIENT.items():

        def reject(text: str = text) -> None:
            try:
                p.decode_client(text)
            except p.ProtocolError:
                return
            raise AssertionError(f"{text!r} was accepted")

        reject()
        rows.append(
            {
                "side": "client",
                "event": name,
                "bytes": len(text),
                "encode_us": None,
                "decode_us": per_call_us(reject, args.number, args.repeat),
            }
        )
    if args.json:
        print(json.dumps({"impl": args.impl or "hark.protocol", "rows": rows}, indent=2))
        return
    print(f"codec: {p.__file__}  (best of {args.repeat} x {args.number} calls)")
    print(f"{'side':<7} {'event':<28} {'bytes':>6} {'encode µs':>10} {'decode µs':>10}")
    for r in rows:
        enc = "" if r["encode_us"] is None else f"{r['encode_us']:.2f}"
        print(f"{r['side']:<7} {r['event']:<28} {r['bytes']:>6} {enc:>10} {r['decode_us']:>10.2f}")


if __name__ == "__main__":
    main()
