"""Token buckets for input floods, and a throttle so repeated errors do not become a flood themselves."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate_per_s: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.capacity = capacity
        self._tokens = capacity
        self._clock = clock
        self._last = self._clock()

    def try_take(self, amount: float) -> bool:
        now = self._clock()
        refilled = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._tokens = max(self._tokens, refilled)  # granted tokens above capacity stay until used
        self._last = now
        if amount > self._tokens:
            return False
        self._tokens -= amount
        return True

    def grant(self, amount: float) -> None:
        """Allow `amount` more, past the capacity: for input that piled up while *we* stopped reading."""
        self._tokens += amount


class ErrorThrottle:
    """At most one error event per code per `interval_s`; the next one says how many were folded in."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, code: str) -> tuple[bool, int]:
        now = time.monotonic()
        if now - self._last.get(code, -1e9) < self._interval:
            self._suppressed[code] = self._suppressed.get(code, 0) + 1
            return False, 0
        self._last[code] = now
        return True, self._suppressed.pop(code, 0)
