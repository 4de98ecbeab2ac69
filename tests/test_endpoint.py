"""The turn-boundary decision alone: today's silence policy and the caps every policy shares."""

from __future__ import annotations

from hark.protocol import SessionConfig, SessionLimits
from hark.server.turn.endpoint import EndReason, SilenceEndpointer, TurnEnd, create_endpointer


async def test_silence_policy_ends_the_turn_at_the_vad_pause() -> None:
    endpointer = create_endpointer(SessionConfig(min_silence_ms=500), SessionLimits())
    assert isinstance(endpointer, SilenceEndpointer) and endpointer.pause_ms == 500
    endpointer.begin(1000)
    assert await endpointer.on_progress(1000 + 16000 * 30) is None
    # speech ended where the silence began; the turn's audio runs to where the VAD became sure
    assert await endpointer.on_pause(20000) == TurnEnd(EndReason.SILENCE, 20000, 20000 + 8000)
    endpointer.reconfigure(SessionConfig(min_silence_ms=200))
    assert endpointer.pause_ms == 200
    assert await endpointer.on_pause(20000) == TurnEnd(EndReason.SILENCE, 20000, 20000 + 3200)


async def test_max_utterance_caps_any_policy_and_zero_turns_it_off() -> None:
    capped = SilenceEndpointer(500, max_utterance_s=2.0)
    capped.begin(4800)
    assert await capped.on_progress(4800 + 31999) is None
    assert await capped.on_progress(4800 + 32000) == TurnEnd(EndReason.MAX_UTTERANCE, 36800, 36800)
    uncapped = SilenceEndpointer(500, max_utterance_s=0)
    uncapped.begin(0)
    assert await uncapped.on_progress(16000 * 3600) is None


def test_commit_and_close_end_the_turn_now() -> None:
    endpointer = SilenceEndpointer(500, 60.0)
    assert endpointer.commit(123) == TurnEnd(EndReason.COMMIT, 123, 123)
    assert endpointer.close(456) == TurnEnd(EndReason.CLOSE, 456, 456)
