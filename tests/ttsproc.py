"""The TTS stand-ins' process helper, under the name the tests import it by."""

from standins.tts.process import TTSStandin, tts_standin

__all__ = ["TTSStandin", "tts_standin"]
