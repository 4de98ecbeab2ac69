"""The LLM circuit breaker: opens after repeated server faults, probes once, never sticks."""

from __future__ import annotations

import asyncio
import time

import pytest

from hark.server.http_pool import CircuitBreaker
from hark.server.llm.base import LLMUnavailable
from hark.server.llm.http import LLMRefused, llm_breaker


def _fail(breaker: CircuitBreaker, exc: BaseException) -> None:
    with pytest.raises(type(exc)), breaker.attempt():
        raise exc


def test_opens_after_failures_and_recovers_through_one_probe() -> None:
    breaker = llm_breaker(failures=2, reset_s=0.05)
    _fail(breaker, LLMUnavailable("down"))
    _fail(breaker, LLMUnavailable("down"))
    with pytest.raises(LLMUnavailable, match="failed repeatedly"), breaker.attempt():
        pass  # open: refused without trying
    time.sleep(0.06)
    with breaker.attempt():
        pass  # the probe succeeds: closed again
    assert not breaker.is_open
    with breaker.attempt():
        pass


def test_a_cancelled_probe_does_not_lock_the_breaker() -> None:
    breaker = llm_breaker(failures=1, reset_s=0.01)
    _fail(breaker, LLMUnavailable("down"))
    time.sleep(0.02)
    _fail(breaker, asyncio.CancelledError())  # the probe's user barged in
    with breaker.attempt():
        pass  # another request may probe: not stuck half-open


def test_refused_requests_do_not_count() -> None:
    breaker = llm_breaker(failures=1, reset_s=60)
    _fail(breaker, LLMRefused("HTTP 400: prompt too long"))
    with breaker.attempt():
        pass
