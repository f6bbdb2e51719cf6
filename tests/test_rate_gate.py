"""The rate gate on its own: Retry-After parsing, the server's remaining budget, 429s."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

import syncflow
from syncflow._http import RateGate, parse_retry_after
from syncflow._http._limits import opening_needs_probe


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


def test_responses_read_out_of_order_leave_no_budget_unspent() -> None:
    """Three requests counted a, b, c by the server (9, 8, 7 left) but read c, a, b: once all are read, the lowest
    R is exact, and all 7 are spent (a bound taken while others were in flight must not stick)."""
    clock = FakeClock()
    reset = str(int(clock.now) + 60)

    async def scenario() -> None:
        gate = RateGate("api", requests_per_hour=10_000, max_concurrency=8, max_wait=0.5, clock=clock)
        async with gate.admit("GET /x"):
            gate.observe(200, {"x-ratelimit-remaining": "10", "x-ratelimit-reset": reset})
        requests = [gate.admit("GET /x") for _ in range(3)]
        for request in requests:
            await request.__aenter__()
        for index, left in ((2, 7), (0, 9), (1, 8)):
            gate.observe(200, {"x-ratelimit-remaining": str(left), "x-ratelimit-reset": reset})
            await requests[index].__aexit__(None, None, None)
        assert gate.statistics().server_remaining == 7
        for _ in range(7):
            async with gate.admit("GET /x"):
                pass
        with pytest.raises(syncflow.BudgetExhausted):
            async with gate.admit("GET /x"):
                pass

    anyio.run(scenario)


@pytest.mark.parametrize("seed", range(40))
def test_the_gate_never_overspends_whatever_order_the_server_counts_and_answers_in(seed: int) -> None:
    """A fixed window of 25 requests; the server counts each request it received at a random moment and the answers
    are read in a random order. The gate never lets more than 25 go (a 26th would be a 429), and it spends them all:
    once every answer is read, what remains is known exactly."""
    rng = random.Random(seed)
    clock = FakeClock()
    limit = 25
    reset = str(int(clock.now) + 60)

    async def scenario() -> None:
        gate = RateGate("api", requests_per_hour=10_000, max_concurrency=8, max_wait=0.5, clock=clock)
        async with gate.admit("GET /x"):  # the probe: alone, until its answer says what the window holds
            gate.observe(200, {"x-ratelimit-remaining": str(limit - 1), "x-ratelimit-reset": reset})
        sent: list[Any] = []  # admitted, not yet counted by the server
        answered: list[tuple[Any, int]] = []  # counted (with the R its answer carries), not yet read
        counted = admitted = 1
        exhausted = False
        while not (exhausted and not sent and not answered):
            move = rng.random()
            if move < 0.4 and not exhausted and len(sent) + len(answered) < 8:
                request = gate.admit("GET /x")
                try:
                    await request.__aenter__()
                except syncflow.BudgetExhausted:
                    exhausted = not sent and not answered  # nothing can teach it more: the budget is spent
                    continue
                admitted += 1
                assert admitted <= limit
                sent.append(request)
            elif move < 0.7 and sent:
                request = sent.pop(rng.randrange(len(sent)))
                counted += 1
                assert counted <= limit  # the server would answer 429
                answered.append((request, limit - counted))
            elif answered:
                request, left = answered.pop(rng.randrange(len(answered)))
                gate.observe(200, {"x-ratelimit-remaining": str(left), "x-ratelimit-reset": reset})
                await request.__aexit__(None, None, None)
        assert admitted == limit

    anyio.run(scenario)


def test_an_opening_burst_goes_together_then_spends_exactly_what_the_server_says() -> None:
    """`probe_opening=False` (the engine found no sign of a spent window): the first requests leave together, with no
    probe; the first answer then bounds what remains, counting the others still in flight."""
    clock = FakeClock()
    reset = str(int(clock.now) + 60)

    async def scenario() -> None:
        gate = RateGate("api", requests_per_hour=10_000, max_concurrency=4, max_wait=0.5, clock=clock,
                        probe_opening=False)  # fmt: skip
        opening = [gate.admit("GET /x") for _ in range(4)]
        with anyio.fail_after(1):
            for request in opening:
                await request.__aenter__()  # none waits for another's answer
        assert gate.statistics().in_flight == 4 and gate.last_window() is None
        # The server counted all four (its answers say 9, 8, 7, 6 remain), read here in another order.
        for request, left in zip(opening, ("7", "9", "6", "8"), strict=True):
            gate.observe(200, {"x-ratelimit-remaining": left, "x-ratelimit-reset": reset})
            await request.__aexit__(None, None, None)
        assert gate.last_window() == {"remaining": 6, "reset_at": float(reset)}
        admitted = 0
        with pytest.raises(syncflow.BudgetExhausted):
            while True:
                async with gate.admit("GET /x"):
                    admitted += 1
        assert admitted == 6
        assert gate.last_window() == {"remaining": 0, "reset_at": float(reset)}

    anyio.run(scenario)


def test_by_default_the_opening_request_is_a_probe() -> None:
    async def scenario() -> None:
        gate = RateGate("api", requests_per_hour=10_000, max_concurrency=4, max_wait=0.5, clock=FakeClock())
        async with gate.admit("GET /x"):
            with anyio.move_on_after(0.2) as waited:
                async with gate.admit("GET /x"):
                    pass
            assert waited.cancelled_caught, "a second request left before the probe's answer"

    anyio.run(scenario)


@pytest.mark.parametrize(
    ("saved", "probe"),
    [
        (None, False),  # a first sync: nothing suggests a spent window
        ({"remaining": 0, "reset_at": 1_700_000_060.0}, True),  # the last sync spent this window
        ({"remaining": 3, "reset_at": 1_700_000_060.0}, True),  # fewer left than a burst
        ({"remaining": 16, "reset_at": 1_700_000_060.0}, False),  # a burst's worth left
        ({"remaining": 0, "reset_at": 1_699_999_000.0}, False),  # that window has rolled over
        ({"remaining": "0", "reset_at": 1_700_000_060.0}, False),  # malformed: as if nothing were saved
        ({"remaining": True, "reset_at": 1_700_000_060.0}, False),
        ({"remaining": 0, "reset_at": float("inf")}, False),
        ([0, 1_700_000_060.0], False),
    ],
)
def test_whether_the_opening_probes_follows_the_last_syncs_view_of_the_window(saved: object, probe: bool) -> None:
    assert opening_needs_probe(saved, now=1_700_000_000.0, burst=16) is probe


def test_while_a_retry_after_holds_requests_back_the_saved_view_says_none_remain() -> None:
    """A 429 with Retry-After (another client spent the window) voids what earlier headers said: the view the state
    keeps for the next sync is "none left until then", not the stale remainder."""
    clock = FakeClock()

    async def scenario() -> None:
        gate = RateGate("api", requests_per_hour=10_000, max_concurrency=4, max_wait=0.5, clock=clock)
        async with gate.admit("GET /x"):
            gate.observe(200, {"x-ratelimit-remaining": "40", "x-ratelimit-reset": str(int(clock.now) + 600)})
        assert gate.last_window() == {"remaining": 40, "reset_at": float(int(clock.now) + 600)}
        async with gate.admit("GET /x"):
            gate.observe(429, {"retry-after": "30"})
        assert gate.last_window() == {"remaining": 0, "reset_at": clock.now + 30}
        clock.now += 31  # the block is over: nothing is known until the next answer
        assert gate.last_window() is None

    anyio.run(scenario)
