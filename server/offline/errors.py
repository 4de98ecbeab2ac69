"""What the offline pipeline refuses, with the HTTP status and stable code the routes answer with."""

from __future__ import annotations

from hark.protocol import ErrorCode


class OfflineError(ValueError):
    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.status = status
        self.code = code
        self.message = message
