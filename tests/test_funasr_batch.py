"""paraformer-streaming streams batched into one forward pass (issue 17).

The batching workers without models (order, failures, the meter), then the batched host on a tiny
random-weight model (tools/funasr_models.py, FunASR's own classes) against FunASR's single-stream
`generate`, both in real inference-pool worker processes: every partial and final equal, for
streams that start at different times, join and leave a running batch, queue several requests at
once, fail (bad audio) or are cancelled; and the worker holds nothing once they end.
"""

from __future__ import annotations

import asyncio
import threading
import time
import wave
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from conftest import CORPUS
from funasr_models_fixture import TinyModels, build_tiny_models, host_pool

from hark.server.asr.inference_pool import InferencePool


class _Recorder:
    """A batching handler: answers `stream:op:payload`, fails op "fail", records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.release = threading.Event()

    def __call__(self, op: str, stream_id: str, payload: Any) -> Any:
        return next(self.handle_batch([(op, stream_id, payload)]))[2]

    def handle_batch(self, requests: list[tuple[str, str, Any]]) -> Iterator[tuple[int, bool, Any]]:
        self.release.wait(10)  # the test lets the first batch go once the rest have queued
        self.batches.append(len(requests))
        time.sleep(0.05)
        for i, (op, stream_id, payload) in enumerate(requests):
            if op == "slow":  # answered last, after a while: the others' replies must not wait for it
                continue
            yield (i, False, ValueError("bad chunk")) if op == "fail" else (i, True, f"{stream_id}:{op}:{payload}")
        for i, (op, stream_id, payload) in enumerate(requests):
            if op == "slow":
                time.sleep(1.0)
                yield i, True, f"{stream_id}:{op}:{payload}"


class _RecorderFactory:
    batched = True

    def __init__(self) -> None:
        self.handler = _Recorder()

    def __call__(self) -> _Recorder:
        return self.handler


async def test_batching_worker_answers_each_request_and_fails_only_the_bad_one() -> None:
    factory = _RecorderFactory()
    pool = InferencePool("batch", factory, workers=1, kind="thread")
    await pool.start()
    try:
        worker = await pool.acquire()
        ops = {3: "fail", 0: "slow"}
        calls = [pool.call(worker, ops.get(i, "accept"), f"s{i}", i) for i in range(8)]
        tasks = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0.2)  # all eight queued behind a held worker
        factory.handler.release.set()
        started = time.perf_counter()
        quick = await asyncio.gather(*tasks[1:], return_exceptions=True)
        assert time.perf_counter() - started < 0.9, "the quick answers waited for the slow one"
        assert isinstance(quick[2], RuntimeError) and "bad chunk" in str(quick[2])
        assert [r for i, r in enumerate(quick, 1) if i != 3] == [f"s{i}:accept:{i}" for i in range(1, 8) if i != 3]
        assert await tasks[0] == "s0:slow:0"
        assert factory.handler.batches == [8]
        # the requests together made the worker busy for the batch (0.2 s held + 0.05 + 1 s), not
        # each for all of it (8 x 1.25 s)
        busy = pool.meter.busy_fraction(worker.name) * 5.0
        assert 1.0 < busy < 1.6, busy
    finally:
        await pool.stop()


# the models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return build_tiny_models(tmp_path_factory)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pools(tiny_models: TinyModels) -> Any:
    """FunASR's one-stream-per-call host and the batched one, one worker process each."""
    single, batched = host_pool("single", tiny_models, 1), host_pool("batched", tiny_models, 16)
    await asyncio.gather(single.start(), batched.start())
    yield single, batched
    await asyncio.gather(single.stop(), batched.stop())


def _audio() -> bytes:
    with wave.open(str(CORPUS / "audio" / "zh_vad_example_70s.wav")) as wav:
        return bytes(wav.readframes(wav.getnframes()))


CHUNK_BYTES = 9600 * 2  # 600 ms


Plans = dict[str, list[tuple[int, str, bytes]]]  # per stream: (tick, op, payload)


def _plans(pcm: bytes) -> Plans:
    """stream -> [(tick, op, payload)]: starts at different ticks and offsets, whole and odd-sized
    pieces (the host buffers to 600 ms), a final piece shorter than FunASR's 960-sample tail and
    longer ones, and a stream that sends three requests in one tick."""
    plans: dict[str, list[tuple[int, str, bytes]]] = {}
    for s in range(6):
        at = s * 3 * 32000 + s * 246  # a different place in the recording, not frame-aligned
        pieces = [CHUNK_BYTES] * (4 + s) + [CHUNK_BYTES * 2 // 3, CHUNK_BYTES // 3 + 2 * 250 * s]
        plan, tick = [], s  # stream s joins at tick s, while the earlier ones are mid-utterance
        for size in pieces:
            plan.append((tick, "accept", pcm[at : at + size]))
            at, tick = at + size, tick + 1
        plan.append((tick if s != 4 else tick - 1, "finalize", b""))  # stream 4: last piece + end at once
        plans[f"s{s}"] = plan
    plans["s5"][-3:] = [(plans["s5"][-3][0], op, payload) for _, op, payload in plans["s5"][-3:]]
    return plans


Call = Callable[[str, str, Any], Awaitable[Any]]


async def _run(pool: InferencePool, plans: Plans) -> dict[str, list[Any]]:
    """Every stream's requests, tick by tick, all streams of a tick at once; each result or error."""
    workers = {stream: await pool.acquire() for stream in plans}
    for stream, worker in workers.items():
        await pool.call(worker, "begin", stream)
    results: dict[str, list[Any]] = {stream: [] for stream in plans}

    async def one(stream: str, op: str, payload: bytes) -> None:
        try:
            results[stream].append(await pool.call(workers[stream], op, stream, payload))
        except Exception as exc:
            results[stream].append(f"error: {exc}")

    last = max(tick for plan in plans.values() for tick, _, _ in plan)
    for tick in range(last + 1):
        await asyncio.gather(*(one(s, op, p) for s, plan in plans.items() for t, op, p in plan if t == tick))
    for worker in workers.values():
        pool.release(worker)
    return results


@pytest.mark.asyncio(loop_scope="module")
async def test_batched_streams_decode_exactly_as_one_stream_per_call(pools: Any) -> None:
    single, batched = pools
    plans = _plans(_audio())
    await assert_decodes_alike(single, batched, plans)


async def assert_decodes_alike(reference: InferencePool, batched: InferencePool, plans: Plans) -> None:
    """`batched` answers every request of `plans` as `reference` does, its streams shared forward
    passes, and it holds nothing afterwards."""
    expected = await _run(reference, plans)
    got = await _run(batched, plans)
    for stream in plans:
        assert got[stream] == expected[stream], stream
    assert all(isinstance(r, str) and r for r in (expected["s0"][-1][0], expected["s3"][-2][0])), expected
    stats = await batched.call(batched.workers[0], "stats", "")
    assert stats["largest_batch"] > 2, f"the streams never shared a forward pass: {stats}"
    assert stats["utterances"] == 0 and stats["cache_bytes"] == 0, stats


@pytest.mark.asyncio(loop_scope="module")
async def test_a_failing_or_cancelled_stream_does_not_disturb_its_batch(pools: Any) -> None:
    single, batched = pools
    pcm = _audio()
    plans = _plans(pcm)
    expected = await _run(single, plans)
    # s1 sends half a sample in the middle of its utterance; s2 is cancelled (closed) mid-utterance
    broken = {stream: list(plan) for stream, plan in plans.items()}
    tick, _, payload = broken["s1"][3]
    broken["s1"][3] = (tick, "accept", payload[:-1])
    broken["s2"] = [step for step in broken["s2"][:4]] + [(broken["s2"][4][0], "close", b"")]
    got = await _run(batched, broken)
    assert "error" in str(got["s1"][3]) and "whole 16-bit samples" in str(got["s1"][3]), got["s1"]
    assert got["s2"][:4] == expected["s2"][:4] and got["s2"][4] is None
    for stream in ("s0", "s3", "s4", "s5"):
        assert got[stream] == expected[stream], stream
    stats = await batched.call(batched.workers[0], "stats", "")
    # s1's later requests found no utterance (a session would have begun a new one): nothing is left
    assert stats["utterances"] == 0 and stats["cache_bytes"] == 0, stats


@pytest.mark.asyncio(loop_scope="module")
async def test_worker_memory_is_returned_when_streams_end(pools: Any) -> None:
    _, batched = pools
    plans = _plans(_audio())
    worker = batched.workers[0]

    def rss() -> float:
        with open(f"/proc/{worker.pid}/status") as fh:  # type: ignore[attr-defined]
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024

    await _run(batched, plans)
    settled = rss()
    for _ in range(4):
        await _run(batched, plans)
    grown = rss() - settled
    stats = await batched.call(worker, "stats", "")
    assert stats["utterances"] == 0 and stats["cache_bytes"] == 0, stats
    assert grown < 64, f"the worker grew {grown:.0f} MiB over 4 more rounds of 6 streams"
