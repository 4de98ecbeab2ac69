"""pocketsphinx on the inference pool: decoders are held per utterance and given back (issue 12 D5),
reused decoders decode as fresh ones do, a worker that dies comes back, and the engine has the
pool's overload signal. Real decoders, real worker processes, real speech."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
from conftest import load_pcm

from hark.server.asr.base import ASRError
from hark.server.asr.pocketsphinx import DEFAULT_OPTIONS, DecoderHost, PocketsphinxEngine
from hark.server.asr.workers import ProcessWorker

CLIP = "en_librivox_sense_0870"  # 7.1 s of read speech
CHUNK = 3200  # the session's 100 ms frames


class _CountingHost(DecoderHost):
    """DecoderHost that counts the decoders it builds."""

    def __init__(self, **kwargs: Any) -> None:
        self.built = 0
        super().__init__(DEFAULT_OPTIONS, **kwargs)
        make = self.decoders._make

        def counted() -> Any:
            self.built += 1
            return make()

        self.decoders._make = counted


def _speak(host: DecoderHost, stream_id: str, pcm: bytes) -> None:
    host("begin", stream_id, None)
    host("accept", stream_id, pcm)


def _finalize(host: DecoderHost, stream_id: str) -> str:
    result = host("finalize", stream_id, None)  # (text, the speaker's cepstral mean, ...)
    host.after_reply()  # what the worker does once the reply has gone
    return str(result[0])


def test_decoders_are_held_per_utterance_and_the_idle_ones_are_bounded() -> None:
    pcm = load_pcm(CLIP)[: 2 * 32000]
    host = _CountingHost(keep_idle=2)
    built_at_start = host.built
    for burst in range(2):
        ids = [f"b{burst}-s{i}" for i in range(6)]
        for sid in ids:
            _speak(host, sid, pcm)
        assert host.decoders.in_use == 6
        texts = {_finalize(host, sid) for sid in ids}
        assert len(texts) == 1 and texts != {""}, "every stream heard the same clip"
        # nobody is speaking: only the decoders kept always remain
        assert (host.decoders.in_use, host.decoders.idle) == (0, 2)
    # each burst built the decoders beyond the idle ones; nothing is kept per closed stream
    assert host.built - built_at_start == 2 * (6 - 2)

    # a session that is not speaking holds no decoder; close and begin-again give theirs back
    host("begin", "a", None)
    host("begin", "a", None)  # begun again without finalize
    host("begin", "b", None)
    host("close", "b", None)
    host("close", "never-begun", None)
    assert host.decoders.in_use == 1
    _finalize(host, "a")
    assert host.decoders.in_use == 0


def test_a_decoder_that_decoded_a_long_utterance_is_replaced() -> None:
    pcm = load_pcm(CLIP)
    host = _CountingHost(keep_idle=1, recycle_after_s=5.0)
    built = host.built
    _speak(host, "short", pcm[: 4 * 32000])
    _finalize(host, "short")
    _speak(host, "short", pcm[: 4 * 32000])
    _finalize(host, "short")
    assert host.built == built, "a decoder that decoded short utterances is reused"
    _speak(host, "long", pcm)  # 7.1 s > 5 s: the decoder grew while it decoded, replace it
    _finalize(host, "long")  # (after the reply) the kept decoder is a new one
    assert host.built == built + 1 and host.decoders.idle == 1
    _speak(host, "next", pcm[:32000])
    assert host.built == built + 1 and host.decoders.in_use == 1


def _worker_pid(engine: PocketsphinxEngine) -> int:
    worker = engine.pool.workers[0]
    assert isinstance(worker, ProcessWorker) and worker.pid is not None
    return worker.pid


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


async def _settled_rss(pid: int, below: float) -> float:
    """The worker frees given-up decoders after its last reply has gone: give it a moment (until
    its memory is below `below` and has stopped falling, or 10 s)."""
    last = _rss_mib(pid)
    for _ in range(100):
        await asyncio.sleep(0.1)
        rss = _rss_mib(pid)
        if rss < below and abs(rss - last) < 1:
            break
        last = rss
    return rss


async def test_a_burst_of_speakers_leaves_no_memory_behind_and_reports_overload() -> None:
    pcm = load_pcm(CLIP)
    engine = PocketsphinxEngine(workers=1)
    await engine.start()
    try:
        pid = _worker_pid(engine)
        assert engine.overload_reason() is None
        before = _rss_mib(pid)
        finals: list[set[str]] = []
        for burst in range(2):
            streams = [engine.open_stream(f"burst{burst}-{i}") for i in range(6)]
            await asyncio.gather(*(s.begin() for s in streams))
            for i in range(0, len(pcm), CHUNK):  # all six speak at once, as fast as the worker goes
                await asyncio.gather(*(s.accept(pcm[i : i + CHUNK]) for s in streams))
            peak = _rss_mib(pid)
            finals.append(set(await asyncio.gather(*(s.finalize() for s in streams))))
            await asyncio.gather(*(s.close() for s in streams))
            after = await _settled_rss(pid, below=before + 150)
            print(f"burst {burst}: worker RSS {before:.0f} -> peak {peak:.0f} -> after {after:.0f} MiB")
            assert peak > before + 300, "six decoders in use at once (~90 MB each)"
            assert after < before + 150, f"the burst's decoders stayed: {before:.0f} -> {after:.0f} MiB"
        # the worker was busy the whole burst: new sessions would be refused with server_busy
        reason = engine.overload_reason()
        assert reason is not None and "capacity" in reason, reason
        assert len(finals[0]) == 1 and finals[0] == finals[1], f"reused decoders decode as fresh ones: {finals}"
        assert "dashwood" in next(iter(finals[0]))
    finally:
        await engine.aclose()


async def test_a_worker_that_dies_fails_its_utterances_and_comes_back() -> None:
    pcm = load_pcm(CLIP)[:32000]
    engine = PocketsphinxEngine(workers=1, keep_idle=1)
    await engine.start()
    try:
        stream = engine.open_stream("s")
        await stream.begin()
        await stream.accept(pcm)
        os.kill(_worker_pid(engine), signal.SIGKILL)
        with pytest.raises(ASRError, match="pocketsphinx"):
            for _ in range(50):  # the reader sees the pipe close a moment after the kill
                await stream.accept(pcm)
                await asyncio.sleep(0.05)
        await stream.close()  # nothing left to free: must not raise
        await stream.begin()  # the next utterance gets a new worker
        await stream.accept(pcm)
        assert isinstance(await stream.finalize(), str)
        await stream.close()
    finally:
        await engine.aclose()
