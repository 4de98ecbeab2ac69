"""paraformer-streaming on onnxruntime (`--asr-runtime onnx|onnx-int8`, issue 17), against torch.

On the tiny random-weight model (tools/funasr_models.py), in real inference-pool worker processes
that export the ONNX files themselves at start (the two ONNX pools start together: one exports under
the file lock, the other waits and reuses): the fp32 graphs give the torch batched path's every
partial and final, token for token, for streams that start at different times, join and leave a
running batch, queue several requests at once and end on a short tail piece. int8 is only a smoke
check here: random weights have no accuracy to lose, so its agreement with fp32 is printed (-s),
not asserted; what is asserted is that it runs batched, answers text for every request and is
deterministic for a stream decoded alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from funasr_models_fixture import TinyModels, build_tiny_models, host_pool
from test_funasr_batch import _audio, _plans, _run, assert_decodes_alike

from hark.server.asr.funasr_load import ModelLoadError
from hark.server.asr.paraformer_factory import ParaformerHostFactory
from hark.server.asr.paraformer_runtime import choose_runtime
from hark.server.asr.registry import ASR_ENGINES
from hark.server.config import load_config


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return build_tiny_models(tmp_path_factory)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pools(tiny_models: TinyModels) -> Any:
    torch_pool, onnx, int8 = (host_pool(r, tiny_models, 16, runtime=r) for r in ("torch", "onnx", "onnx-int8"))
    await asyncio.gather(torch_pool.start(), onnx.start(), int8.start())
    yield torch_pool, onnx, int8
    await asyncio.gather(torch_pool.stop(), onnx.stop(), int8.stop())


def test_asr_runtime_option_reaches_the_workers_settings(tmp_path: Path) -> None:
    for name in ("config.yaml", "model.pt", "tokens.json"):  # what resolve() checks; nothing loads here
        (tmp_path / name).write_text("")
    argv = ["--asr", "funasr-paraformer-streaming", "--asr-model", str(tmp_path), "--no-2pass"]
    config = load_config([*argv, "--asr-runtime", "onnx-int8"], environ={})
    default = load_config(argv, environ={})
    assert config.asr_runtime == "onnx-int8" and default.asr_runtime == "auto"
    auto = ASR_ENGINES.create(default.asr, default)._pool._factory.factory  # type: ignore[attr-defined]
    assert auto.settings["runtime"] == "torch", "auto with no export beside the model runs torch"
    engine = ASR_ENGINES.create(config.asr, config)
    factory = engine._pool._factory.factory  # type: ignore[attr-defined]
    assert isinstance(factory, ParaformerHostFactory) and factory.settings["runtime"] == "onnx-int8"
    assert factory.batched, "an ONNX runtime always runs the batched host"
    with pytest.raises(SystemExit):
        load_config([*argv, "--asr-runtime", "tensorrt"], environ={})
    config.asr_runtime = "tensorrt"  # from a config file: the engine names the option
    with pytest.raises(ModelLoadError, match="--asr-runtime"):
        ASR_ENGINES.create(config.asr, config)


def _onnx_dir(models: TinyModels) -> Path:
    return Path(models["paraformer-streaming"]) / "hark-onnx"


@pytest.mark.asyncio(loop_scope="module")
async def test_onnx_fp32_decodes_exactly_as_torch_batched(pools: Any) -> None:
    torch_pool, onnx, _ = pools
    await assert_decodes_alike(torch_pool, onnx, _plans(_audio()))


@pytest.mark.asyncio(loop_scope="module")
async def test_auto_runs_onnx_fp32_only_while_a_current_export_is_beside_the_model(
    pools: Any, tiny_models: TinyModels, tmp_path: Path
) -> None:
    model = tiny_models["paraformer-streaming"]  # exported by the pools' first start
    choose = choose_runtime.__wrapped__  # uncached: the server decides once, this test several times
    assert choose("auto", model).runtime == "onnx", choose("auto", model)
    assert choose("torch", model).runtime == "torch" and choose("onnx-int8", model).runtime == "onnx-int8"
    assert choose("auto", "iic/some-hub-model").runtime == "torch"
    weights = Path(model) / "model.pt"
    st = weights.stat()
    try:  # the weights touched since the export: not current (auto does not hash 0.9 GB to find out)
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        decided = choose("auto", model)
        assert decided.runtime == "torch" and "model.pt changed" in decided.reason, decided
    finally:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert choose("auto", model).runtime == "onnx"
    for name in ("config.yaml", "model.pt", "tokens.json"):  # a model directory with no export
        (tmp_path / name).write_text("{}")
    decided = choose("auto", str(tmp_path))
    assert decided.runtime == "torch" and "no ONNX export" in decided.reason, decided


@pytest.mark.asyncio(loop_scope="module")
async def test_onnx_int8_runs_batched_and_deterministically(pools: Any) -> None:
    _, onnx, int8 = pools
    plans = _plans(_audio())
    fp32 = await _run(onnx, plans)
    got = await _run(int8, plans)
    for stream, results in got.items():
        assert len(results) == len(plans[stream]), stream
        for result in results:  # every request answered: a partial/final (text, ...) tuple, no error
            assert isinstance(result, tuple | list) and isinstance(result[0], str), (stream, result)
    same = sum(fp32[s][-1][0] == got[s][-1][0] for s in plans)
    print(f"\nint8 vs fp32: finals equal for {same}/{len(plans)} streams (random weights: smoke check only)")
    stats = await int8.call(int8.workers[0], "stats", "")
    assert stats["largest_batch"] > 2 and stats["utterances"] == 0 and stats["cache_bytes"] == 0, stats
    # the same stream alone twice: the same tokens (alone, because dynamic int8 quantizes activations
    # with one scale per tensor, which spans the batch: see paraformer_onnx)
    alone = {"s3": plans["s3"]}
    assert await _run(int8, alone) == await _run(int8, alone), "int8 decoding is not deterministic"


@pytest.mark.asyncio(loop_scope="module")
async def test_export_is_cached_beside_the_model_and_redone_when_the_model_changes(
    pools: Any, tiny_models: TinyModels
) -> None:
    out = _onnx_dir(tiny_models)
    weights = Path(tiny_models["paraformer-streaming"]) / "model.pt"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fingerprint"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert manifest["int8"] is True
    files = ["encoder.onnx", "decoder.onnx", "encoder.int8.onnx", "decoder.int8.onnx"]
    stamps = {name: os.stat(out / name).st_mtime_ns for name in files}

    async def start_one(runtime: str) -> None:
        pool = host_pool(runtime, tiny_models, 16, runtime=runtime)
        await pool.start()
        await pool.stop()

    await start_one("onnx-int8")  # files present and current: reused as they are
    assert {name: os.stat(out / name).st_mtime_ns for name in files} == stamps
    # a different model.pt under the same directory (the manifest's hash no longer matches)
    manifest["fingerprint"]["weights_sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    await start_one("onnx")
    assert os.stat(out / "encoder.onnx").st_mtime_ns != stamps["encoder.onnx"], "a stale export was reused"
    assert not (out / "encoder.int8.onnx").exists(), "the stale int8 files were kept"
    fresh = json.loads((out / "manifest.json").read_text())
    assert fresh["fingerprint"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
