"""The 2-pass final batched (issue 17 item 4): utterances ending in one tick share an offline pass.

On the tiny random-weight models (tools/funasr_models.py): streams of different lengths end in the
same tick on the batched host (2-pass: offline paraformer + ct-punc), in a real inference-pool
worker process, and every final equals the one-`generate`-per-utterance host's; an utterance whose
offline decode fails (100 samples: too short for FunASR's fbank) gets its error and the others
their finals; utterances that end apart (batches of one) equal too. FunASR's own padded batch is
not equal (server/asr/paraformer_offline_batch.py says why): the equality here is what zeroing the
encoder's padded frames buys.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from conftest import load_pcm
from funasr_models_fixture import TinyModels, build_tiny_models, host_pool

from hark.server.asr.inference_pool import InferencePool
from hark.server.asr.paraformer_offline_batch import MAX_PADDED_RATIO, OfflineJob, _passes

PIECE = 9600 * 2  # bytes: 600 ms pieces, one a tick
# samples of each utterance: different lengths, not chunk-aligned; "tiny" fails its offline decode
# (b, c, f, g are about one length: they share a pass; a, d and e each go in one of their own)
LENGTHS = {"a": 20800, "b": 65600, "c": 60800, "d": 112800, "e": 8960, "tiny": 100, "f": 57600, "g": 62400}


def test_passes_keep_the_cap_and_bound_the_padding() -> None:
    frames = [100, 90, 80, 40, 39, 10, 9, 8, 7, 6, 5]
    jobs = [OfflineJob(np.zeros(1, np.float32), _feats=np.zeros((n, 1))) for n in frames]
    passes = _passes(jobs, cap=3)
    assert sorted(len(j._feats) for p in passes for j in p) == sorted(frames)  # each job exactly once
    for p in passes:
        lengths = [len(j._feats) for j in p]
        assert len(p) <= 3 and lengths == sorted(lengths, reverse=True)
        assert len(p) * lengths[0] <= MAX_PADDED_RATIO * sum(lengths), lengths
    assert [len(j._feats) for j in passes[0]] == [100, 90, 80]
    # 5 x 100 frames for 395 real ones would be more than a fifth padding: 50 starts the next pass
    jobs = [OfflineJob(np.zeros(1, np.float32), _feats=np.zeros((n, 1))) for n in (45, 100, 60, 95, 50, 90)]
    assert [[len(j._feats) for j in p] for p in _passes(jobs, cap=8)] == [[100, 95, 90, 60], [50, 45]]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return build_tiny_models(tmp_path_factory)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pools(tiny_models: TinyModels) -> Any:
    """The one-`generate`-per-call host and the batched one, with 2-pass, one worker process each."""
    single = host_pool("single", tiny_models, 1, two_pass=True)
    batched = host_pool("batched", tiny_models, 8, two_pass=True)
    await asyncio.gather(single.start(), batched.start())
    yield single, batched
    await asyncio.gather(single.stop(), batched.stop())


async def _end(pool: InferencePool, pcm: bytes, together: bool = True) -> dict[str, Any]:
    """Every utterance streamed in 600 ms pieces, then all finalized in one tick, queued behind a
    long accept of another stream (so the worker takes them as one batch), or (`together=False`)
    one after another; each final or error."""
    workers = {stream: await pool.acquire() for stream in [*LENGTHS, "busy"]}
    for stream, worker in workers.items():
        await pool.call(worker, "begin", stream)
    audio = {stream: pcm[i * 96000 : i * 96000 + 2 * n] for i, (stream, n) in enumerate(LENGTHS.items())}
    for tick in range(max(len(a) for a in audio.values()) // PIECE + 1):
        pieces = {s: a[tick * PIECE : (tick + 1) * PIECE] for s, a in audio.items()}
        await asyncio.gather(*(pool.call(workers[s], "accept", s, p) for s, p in pieces.items() if p))
    busy = asyncio.ensure_future(pool.call(workers["busy"], "accept", "busy", pcm[: 60 * 32000]))
    await asyncio.sleep(0.1)

    async def final(stream: str) -> Any:
        try:
            return await pool.call(workers[stream], "finalize", stream)
        except Exception as exc:
            return f"error: {exc}"

    if together:
        finals = await asyncio.gather(*(final(s) for s in LENGTHS))
    else:
        finals = [await final(s) for s in LENGTHS]
    await busy
    await pool.call(workers["busy"], "close", "busy")
    for worker in workers.values():
        pool.release(worker)
    return dict(zip(LENGTHS, finals, strict=True))


@pytest.mark.asyncio(loop_scope="module")
async def test_finals_ending_together_equal_one_at_a_time_and_a_failure_stays_alone(pools: Any) -> None:
    single, batched = pools
    pcm = load_pcm("zh_vad_example_70s")
    expected = await _end(single, pcm)
    got = await _end(batched, pcm)
    assert got == expected
    assert "error" in str(got["tiny"]) and "num_mel_bins" in str(got["tiny"]), got["tiny"]
    texts = [final[0] for stream, final in got.items() if stream != "tiny"]
    assert all(isinstance(t, str) and t for t in texts), got
    # ct-punc ran: random weights punctuate too, with its own marks
    assert any(mark in "".join(texts) for mark in "，。？、"), texts  # noqa: RUF001
    stats = await batched.call(batched.workers[0], "stats", "")
    assert stats["largest_final_batch"] >= 3, f"the finals never shared an offline pass: {stats}"
    assert stats["utterances"] == 0 and stats["cache_bytes"] == 0, stats


@pytest.mark.asyncio(loop_scope="module")
async def test_finals_ending_apart_go_alone_and_equal_one_at_a_time(pools: Any) -> None:
    single, batched = pools
    pcm = load_pcm("zh_vad_example_70s")
    assert await _end(batched, pcm, together=False) == await _end(single, pcm, together=False)
    stats = await batched.call(batched.workers[0], "stats", "")
    assert stats["utterances"] == 0 and stats["cache_bytes"] == 0, stats
