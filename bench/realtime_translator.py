"""CPU the OpenAI Realtime translation costs per 100 ms of audio, each way, per wire format.

    python -m bench.realtime_translator [--number 2000] [--repeat 5]

In: one `input_audio_buffer.append` of 100 ms (JSON parse, base64 decode, G.711 decode, framing into
hark.v1 frames). Out: one 100 ms reply frame to a `response.output_audio.delta` JSON text (G.711
encode, base64, JSON encode). Also the G.711 codec (PyAV) alone. Each figure is the best of --repeat
runs of --number calls (the machine is shared: the minimum is the least disturbed). The last column
is the share of one core a session streaming both ways at real time spends on it.
"""

from __future__ import annotations

import argparse
import base64
import json
import timeit
from collections.abc import Callable

import numpy as np

from hark.protocol import ResponseAudioStarted, ResponseStarted
from hark.protocol.realtime import AudioFormat, RealtimeTranslator, encode
from hark.protocol.realtime.g711 import G711Codec


def tone(ms: int, rate: int) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def translator_for(fmt: AudioFormat) -> RealtimeTranslator:
    tr = RealtimeTranslator("ga")
    spec = {"type": fmt.value}
    tr.receive_text(
        json.dumps(
            {"type": "session.update", "session": {"audio": {"input": {"format": spec}, "output": {"format": spec}}}}
        )
    )
    tr.on_server_event(ResponseStarted(1, "r1"))
    tr.on_server_event(ResponseAudioStarted("r1", fmt.sample_rate))
    return tr


def measure(fmt: AudioFormat, n: int, r: int) -> tuple[float, float, float, float]:
    """(in, out, codec encode, codec decode) in us per 100 ms of audio."""
    pcm = tone(100, fmt.sample_rate)
    tr = translator_for(fmt)
    codec_enc = codec_dec = float("nan")
    wire = pcm
    if fmt is not AudioFormat.PCM:
        encoder, decoder = G711Codec(fmt, "w"), G711Codec(fmt, "r")
        wire = encoder.encode(pcm)
        codec_enc = best_us(lambda: encoder.encode(pcm), n, r)
        codec_dec = best_us(lambda: decoder.decode(wire), n, r)
    append = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(wire).decode()})
    inbound = best_us(lambda: tr.receive_text(append), n, r)
    outbound = best_us(lambda: [encode(e) for e in tr.on_reply_audio(pcm)], n, r)
    return inbound, outbound, codec_enc, codec_dec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'format':<12}{'in us/100ms':>13}{'out us/100ms':>14}{'codec enc':>11}{'codec dec':>11}{'core %':>9}")
    for fmt in AudioFormat:
        inbound, outbound, codec_enc, codec_dec = measure(fmt, args.number, args.repeat)
        share = (inbound + outbound) / 100_000 * 100  # us per 100 ms of real time, as a share of one core
        print(f"{fmt.value:<12}{inbound:>13.1f}{outbound:>14.1f}{codec_enc:>11.1f}{codec_dec:>11.1f}{share:>8.3f}%")


if __name__ == "__main__":
    main()
