"""The HTTP audio routes on FunASR paraformer-streaming (with its 2-pass final and punctuation),
through FunASR's own code on generated random-weight models (tests/funasr_models_fixture.py): the
words are gibberish, so this checks the pipeline (segments, the engine's stream per request, Chinese
joined without spaces, no network), not accuracy; bench/http_api.py measures its speed."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import aiohttp
import pytest
from conftest import RunningServer, corpus_path, metric, start_server, stop_server
from funasr_models_fixture import TinyModels, build_tiny_models


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return build_tiny_models(tmp_path_factory)


@pytest.fixture(scope="module")
def funasr_server(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels) -> Iterator[RunningServer]:
    args = (
        "--asr", "funasr-paraformer-streaming",
        "--asr-model", tiny_models["paraformer-streaming"],
        "--asr-model-offline", tiny_models["paraformer"],
        "--punc-model", tiny_models["ct-punc"],
        "--asr-workers", "1",
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("http-funasr")
    running = start_server(directory, *args, env=tiny_models.env)
    yield running
    running.assert_alive()
    stop_server(running)
    tiny_models.assert_no_network()


async def test_mandarin_70s_transcription_on_funasr(funasr_server: RunningServer) -> None:
    form = aiohttp.FormData()
    form.add_field("file", corpus_path("zh_vad_example_70s").read_bytes(), filename="zh.wav")
    form.add_field("response_format", "verbose_json")
    form.add_field("language", "zh")
    async with (
        aiohttp.ClientSession() as http,
        http.post(funasr_server.http + "/v1/audio/transcriptions", data=form) as r,
    ):
        body = await r.json()
        assert r.status == 200, body
        assert r.headers["X-Hark-ASR"] == "funasr-paraformer-streaming"
    segments = body["segments"]
    assert len(segments) >= 8 and body["language"] == "zh" and abs(body["duration"] - 70.47) < 0.1
    assert all(s["text"] and s["start"] < s["end"] for s in segments)
    cjk = all("\u4e00" <= c <= "\u9fff" or not c.isalnum() for c in body["text"])
    if cjk:  # the tiny vocabulary is CJK characters: segments join without spaces
        assert body["text"] == "".join(s["text"] for s in segments)
    assert metric(funasr_server, "hark_http_audio_segments_total") >= len(segments)


async def test_seed_voice_turn_on_funasr(funasr_server: RunningServer) -> None:
    audio = base64.b64encode(corpus_path("zh_funasr_asr_example").read_bytes()).decode()
    body = {"audio_base64": audio, "prompt_template": "请回答：{asr_text}"}  # noqa: RUF001
    async with aiohttp.ClientSession() as http, http.post(funasr_server.http + "/v1/voice/turn", json=body) as r:
        answer = await r.json()
    assert r.status == 200, answer  # the generated model is deterministic (seeded): it writes some characters
    assert answer["transcript"] and answer["metrics"]["segments"] >= 1
    assert answer["reply"] == f"You said: 请回答：{answer['cleaned_transcript']}."  # noqa: RUF001
