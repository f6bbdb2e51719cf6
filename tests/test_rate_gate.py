"""The rate gate on its own: Retry-After parsing, the server's remaining budget, 429s."""

from __future__ import annotations

import anyio
import pytest

import syncflow
from syncflow._http import RateGate, parse_retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_parses_seconds_and_dates() -> None:
    assert parse_retry_after("7", 0.0) == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert parse_retry_after("soon", 0.0) is None


def test_the_gate_never_sends_more_than_the_server_says_remain() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        gate = RateGate("api", requests_per_hour=10_000, max_concurrency=8, max_wait=0.5, clock=clock)
        async with gate.admit("GET /x"):
            gate.observe(200, {"x-ratelimit-remaining": "2", "x-ratelimit-reset": str(int(clock.now) + 60)})
        async with gate.admit("GET /x"), gate.admit("GET /x"):
            pass
        # Two more were allowed; the third must wait for the reset, 60 s away: more than max_wait.
        with pytest.raises(syncflow.BudgetExhausted) as caught:
            async with gate.admit("GET /x"):
                pass
        assert caught.value.reset_in > 59
        clock.now += 61  # the window rolled over: one probe goes, the rest wait for what it learns
        async with gate.admit("GET /x"):
            assert gate.statistics().server_remaining is None
            gate.observe(200, {"x-ratelimit-remaining": "99", "x-ratelimit-reset": str(int(clock.now) + 60)})
        assert gate.statistics().server_remaining == 99

    anyio.run(scenario)


def test_a_429_blocks_every_request_until_retry_after() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        gate = RateGate("api", requests_per_hour=10_000, max_concurrency=8, max_wait=5, clock=clock)
        async with gate.admit("GET /x"):
            gate.observe(429, {"retry-after": "30"})
        with pytest.raises(syncflow.BudgetExhausted):  # 30 s > max_wait 5 s
            async with gate.admit("GET /x"):
                pass
        assert gate.statistics().rate_limited == 1

    anyio.run(scenario)
