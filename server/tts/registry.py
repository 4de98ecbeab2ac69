"""The speech synthesizers `--tts` can name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry
from .base import TTSEngine

if TYPE_CHECKING:
    from ..config import ServerConfig
    from .http_stream import TTSHttpSettings

TTS_ENGINES: Registry[TTSEngine] = Registry("speech synthesizer", "--tts")


def _espeak(config: ServerConfig) -> TTSEngine:
    # imported when chosen, so that listing the engines does not need the espeak-ng wheel
    from .espeak import EspeakEngine

    return EspeakEngine()


def _http_settings(config: ServerConfig) -> TTSHttpSettings:
    from .http_stream import TTSHttpSettings

    if not config.tts_url:
        raise ValueError(f"--tts {config.tts} needs --tts-url (the speech server's base URL)")
    return TTSHttpSettings(url=config.tts_url, model=config.tts_model, api_key=config.tts_api_key)


def _openai(config: ServerConfig) -> TTSEngine:
    from .openai_speech import OpenAISpeechEngine

    return OpenAISpeechEngine(_http_settings(config))


def _fish(config: ServerConfig) -> TTSEngine:
    from .fish import FishSpeechEngine
    from .voices import VoiceStore

    return FishSpeechEngine(_http_settings(config), VoiceStore(config.voices_dir))


def _cosyvoice(config: ServerConfig) -> TTSEngine:
    from .cosyvoice import CosyVoiceEngine
    from .voices import VoiceStore

    return CosyVoiceEngine(_http_settings(config), VoiceStore(config.voices_dir))


TTS_ENGINES.register(
    "espeak", _espeak, "espeak-ng (library and voices from the `espeakng-loader` wheel) on one dedicated thread"
)
TTS_ENGINES.register(
    "openai",
    _openai,
    "OpenAI's `/v1/audio/speech` as Kokoro-FastAPI, openedai-speech, LocalAI serve it (`--tts-url`): 24 kHz PCM",
)
TTS_ENGINES.register(
    "fish",
    _fish,
    "Fish Speech's `/v1/tts` (`--tts-url`): streamed WAV, cloned voices sent as `references`",
)
TTS_ENGINES.register(
    "cosyvoice",
    _cosyvoice,
    "CosyVoice's FastAPI server (`--tts-url`): `/inference_sft` speakers, cloned voices by `/inference_zero_shot`",
)
