"""The audio token bucket: refills to its capacity, and grants for input we held back stay."""

from __future__ import annotations

from hark.server.ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_up_to_capacity_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=2000.0, capacity=3000.0, clock=clock)
    assert bucket.try_take(3000.0) and not bucket.try_take(100.0)
    clock.now = 10.0  # long idle: still no more than the capacity
    assert bucket.try_take(3000.0) and not bucket.try_take(1.0)


def test_granted_tokens_outlast_the_capacity_until_used() -> None:
    """A server that stopped reading for 5 s owes the client 5 s of real-time audio arriving at once."""
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=2000.0, capacity=3000.0, clock=clock)
    assert bucket.try_take(3000.0)
    bucket.grant(5000.0)
    clock.now = 0.5  # a refill must not clamp the grant back down to the capacity
    assert all(bucket.try_take(100.0) for _ in range(50))
    assert not bucket.try_take(1500.0)
