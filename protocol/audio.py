"""Validation of binary audio frames (PCM16 little-endian mono)."""

from __future__ import annotations

from .config import SessionLimits
from .errors import ErrorCode, ProtocolError

BYTES_PER_SAMPLE = 2


def frame_duration_ms(n_bytes: int, sample_rate: int) -> float:
    return n_bytes / BYTES_PER_SAMPLE * 1000.0 / sample_rate


def validate_audio_frame(frame: bytes, sample_rate: int, limits: SessionLimits | None = None) -> float:
    """Return the frame's duration in ms, or raise ProtocolError saying what is wrong with it."""
    limits = limits or SessionLimits()
    if len(frame) > limits.max_message_bytes:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE, f"audio frame of {len(frame)} bytes exceeds {limits.max_message_bytes}"
        )
    if len(frame) % BYTES_PER_SAMPLE:
        raise ProtocolError(
            ErrorCode.AUDIO_ODD_LENGTH,
            f"audio frame has {len(frame)} bytes; PCM16 needs an even count (2 bytes per sample)",
        )
    duration = frame_duration_ms(len(frame), sample_rate)
    if duration < limits.min_frame_ms:
        raise ProtocolError(
            ErrorCode.AUDIO_FRAME_TOO_SHORT,
            f"audio frame is {duration:.1f} ms at {sample_rate} Hz; send {limits.min_frame_ms} to "
            f"{limits.max_frame_ms} ms per frame (100 ms recommended)",
        )
    if duration > limits.max_frame_ms:
        raise ProtocolError(
            ErrorCode.AUDIO_FRAME_TOO_LONG,
            f"audio frame is {duration:.1f} ms at {sample_rate} Hz; send {limits.min_frame_ms} to "
            f"{limits.max_frame_ms} ms per frame (100 ms recommended)",
        )
    return duration
