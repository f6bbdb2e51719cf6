"""Admission control for one API: requests in flight, the client's budget, and the server's word.

Three things decide when a request may leave, checked in this order:

1. **Requests in flight** are capped (`max_concurrency`), so a large table cannot open hundreds of sockets.
2. **The server's budget.** Responses carry `X-RateLimit-Remaining` / `X-RateLimit-Reset` (a fixed window). We keep
   an estimate of how many *new* requests the server will still accept in this window and never send more. The
   server counts each request once, so within a window its `R` only falls; the lowest `R` yet reported comes from
   the latest-counted response we have read, and every request counted after it is one still in flight. So with `f`
   requests in flight, at least `min R - f` remain for new ones (each in-flight request is counted either before or
   after that response; either way it is one of the R). That bound is recomputed from every response rather than
   only lowered: responses are read in a different order than the server counted them (they arrive together, and a
   busy loop reads them in any order), and a bound taken while many were in flight would otherwise stay too low
   for the rest of the window (measured: 2-10 of 40 requests a window left unspent). Until the first header of a
   window arrives we send one probe at a time, so a sync against a spent window cannot overshoot — except at a
   sync's opening, when the engine may say (`probe_opening=False`) that nothing suggests the window is spent: no
   earlier sync saved a view of this window with less than a burst left (`last_window`, kept in the state once it
   is that low). The opening requests then go together and save a round trip; the worst a wrong guess costs (a
   window another client spent) is up to `max_concurrency` 429s once, each retried after its `Retry-After`. A
   `429` + `Retry-After` blocks all sends until then.
3. **The client's budget** (`requests_per_hour`) through an `aiolimiter` token bucket, for servers that send no
   headers.

`X-RateLimit-Reset` is a unix timestamp on the *server's* clock, which may be minutes away from ours. `ServerClock`
measures the offset from every response's `Date` header and the reset is converted with it: a fast server clock
would otherwise look like a reset far away (the sync would stop early), a slow one like a reset already past (every
request a one-at-a-time probe).

When the wait for budget is longer than `max_wait`, `BudgetExhausted` is raised instead of sleeping: the sync
checkpoints and ends cleanly, and the next scheduled sync carries on.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from aiolimiter import AsyncLimiter

from .._exceptions import BudgetExhausted

__all__ = ["RateGate", "RateStatistics", "ServerClock", "opening_needs_probe", "parse_retry_after"]

# After a window's reset time passes, wait this much longer before probing, so a server clock a little behind ours
# does not answer the probe with a 429.
_RESET_MARGIN_SECONDS = 0.25
# `Date` has one-second resolution and arrives after some latency, so samples of the offset scatter by about a
# second; a sample this far below the estimate means the server's clock really went back.
_CLOCK_STEP_SECONDS = 2.0
# Reset values below this are "seconds from now", above it unix timestamps (servers differ).
_UNIX_TS_THRESHOLD = 1_000_000_000


@dataclass(frozen=True)
class RateStatistics:
    """One API's rate gate, live (what `Progress.on_start`'s `budgets()` returns per API)."""

    api: str
    requests_sent: int
    responses: int
    in_flight: int
    peak_in_flight: int
    server_remaining: int | None
    server_reset_at: float | None
    rate_limited: int
    seconds_waited_for_budget: float


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        seconds = when - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class ServerClock:
    """The server's clock as its `Date` headers show it: an offset from ours, and the lowest time it reported.

    Each sample `Date - our clock at receipt` is at most the true offset (`Date` is floored to the second and was
    stamped before we read it), so the estimate is the highest sample: conversions with it put server times a little
    *later* on our clock, never earlier (a reset is never probed too soon). A sample well below the estimate is a step
    back and replaces it.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.offset: float | None = None  # server minus ours, seconds; None until a response had a Date
        self.lowest: float | None = None  # the lowest server time any response reported

    def __repr__(self) -> str:
        return f"ServerClock(offset={self.offset}, lowest={self.lowest})"

    def observe(self, headers: Mapping[str, str]) -> None:
        value = headers.get("date")
        if not value:
            return
        try:
            stamped = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return
        sample = stamped - self._clock()
        self.lowest = stamped if self.lowest is None else min(self.lowest, stamped)
        if self.offset is None or sample > self.offset or sample < self.offset - _CLOCK_STEP_SECONDS:
            self.offset = sample

    def now(self) -> float | None:
        """The server's time now, or None when no response has said."""
        return None if self.offset is None else self._clock() + self.offset

    def to_local(self, server_time: float) -> float:
        """A server timestamp on our clock (unchanged while the offset is unknown)."""
        return server_time - (self.offset or 0.0)


class RateGate:
    """Decides when the next request to one API may be sent. One per API per sync, built inside the event loop."""

    def __init__(
        self,
        api: str,
        *,
        requests_per_hour: int,
        max_concurrency: int,
        max_wait: float,
        clock: Callable[[], float] = time.time,
        probe_opening: bool = True,
    ) -> None:
        self.api = api
        self._clock = clock
        self.server_clock = ServerClock(clock)
        self._max_wait = max_wait
        self._slots = anyio.Semaphore(max_concurrency)
        self._bucket = AsyncLimiter(requests_per_hour, time_period=3600)
        self._remaining: float | None = None  # new requests the server will still accept (inf: no headers)
        self._lowest: int | None = None  # the lowest X-RateLimit-Remaining this window has reported
        self._reset_at: float | None = None
        self._blocked_until = 0.0
        self._probing = False
        # Until the first response: requests need no probe (the engine found no sign of a spent window).
        self._opening = not probe_opening
        self._changed = anyio.Event()
        self._in_flight = 0
        self._peak_in_flight = 0
        self._requests_sent = 0
        self._responses = 0
        self._rate_limited = 0
        self._waited = 0.0

    def __repr__(self) -> str:
        return (
            f"<RateGate {self.api} in_flight={self._in_flight} remaining={self._remaining} "
            f"reset_in={self._reset_in():.1f}s blocked_for={max(0.0, self._blocked_until - self._clock()):.1f}s>"
        )

    def _reset_in(self) -> float:
        return 0.0 if self._reset_at is None else max(0.0, self._reset_at - self._clock())

    def statistics(self) -> RateStatistics:
        return RateStatistics(
            api=self.api,
            requests_sent=self._requests_sent,
            responses=self._responses,
            in_flight=self._in_flight,
            peak_in_flight=self._peak_in_flight,
            server_remaining=None if self._remaining in (None, math.inf) else int(self._remaining),
            server_reset_at=self._reset_at,
            rate_limited=self._rate_limited,
            seconds_waited_for_budget=self._waited,
        )

    def last_window(self) -> dict[str, float] | None:
        """What this gate last knew of the server's window, for the state (the next sync's `opening_needs_probe`):
        `remaining`, its estimate of what new requests the server still accepts (requests admitted but never
        answered, say cancelled when the sync stopped, count as spent: the server may have counted them), and
        `reset_at` on this machine's clock. None when no header said. While a 429's `Retry-After` holds every
        request back, none remain until it ends (whatever an earlier header said)."""
        if self._blocked_until > self._clock():
            return {"remaining": 0, "reset_at": round(self._blocked_until, 3)}
        if self._reset_at is None or self._remaining is None or math.isinf(self._remaining):
            return None
        return {"remaining": int(self._remaining), "reset_at": round(self._reset_at, 3)}

    @asynccontextmanager
    async def admit(self, endpoint: str) -> AsyncIterator[None]:
        """Hold a send slot for one request; the caller must call `observe` with the response headers."""
        async with self._slots:
            probe = await self._wait_for_budget(endpoint)
            # Counted in flight from the moment its budget is taken: a response read meanwhile must leave room for
            # it (`observe` recomputes what remains from the requests in flight).
            self._in_flight += 1
            try:
                await self._bucket.acquire()
                self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
                self._requests_sent += 1
                yield
            finally:
                self._in_flight -= 1
                if probe:
                    self._probing = False
                self._notify()

    async def _wait_for_budget(self, endpoint: str) -> bool:
        """Wait until the server's budget allows one more request; returns whether it is a probe."""
        while True:
            now = self._clock()
            if self._reset_at is not None and now >= self._reset_at + _RESET_MARGIN_SECONDS:
                # The window rolled over: what we knew of it is void; probe the new one.
                self._remaining = None
                self._reset_at = None
                self._lowest = None
            if now < self._blocked_until:
                await self._sleep(self._blocked_until - now, endpoint, "Retry-After")
                continue
            if self._remaining is None:
                if self._opening:
                    return False
                if self._probing:
                    await self._changed.wait()
                    continue
                self._probing = True
                return True
            if self._remaining <= 0:
                until = (self._reset_at or now) + _RESET_MARGIN_SECONDS
                await self._sleep(until - now, endpoint, "X-RateLimit-Reset")
                continue
            self._remaining -= 1
            return False

    async def _sleep(self, seconds: float, endpoint: str, reason: str) -> None:
        if seconds > self._max_wait:
            raise BudgetExhausted(
                f"rate budget spent; it resets in {seconds:.0f} s ({reason}), more than the allowed wait of "
                f"{self._max_wait:.0f} s (max_rate_limit_wait_seconds); stopping cleanly",
                api=self.api,
                endpoint=endpoint,
                reset_in=seconds,
            )
        self._waited += seconds
        await anyio.sleep(seconds)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def observe(self, status_code: int, headers: Mapping[str, str]) -> None:
        """Learn from a response (any status): the server's remaining budget, its reset time, Retry-After."""
        self._responses += 1
        opening, self._opening = self._opening, False
        self.server_clock.observe(headers)
        now = self._clock()
        if status_code == 429:
            self._rate_limited += 1
            # An HTTP-date Retry-After is on the server's clock too.
            server_now = self.server_clock.now()
            retry_after = parse_retry_after(headers.get("retry-after"), now if server_now is None else server_now)
            reset = self._parse_reset(headers.get("x-ratelimit-reset"), now)
            if retry_after is not None:
                # The server said when to come back; after that, probe rather than trust our (wrong) estimate.
                self._blocked_until = max(self._blocked_until, now + retry_after)
                self._remaining = None
                self._lowest = None
            else:
                wait = reset - now if reset is not None else 1.0
                self._blocked_until = max(self._blocked_until, now + max(wait, 0.0))
                self._remaining = 0
                self._lowest = 0
                if reset is not None:
                    self._reset_at = reset
            self._notify()
            return
        remaining = _parse_int(headers.get("x-ratelimit-remaining"))
        reset = self._parse_reset(headers.get("x-ratelimit-reset"), now)
        if remaining is None:
            if self._remaining is None and (self._probing or opening):
                # This server sends no budget headers: only the client bucket applies.
                self._remaining = math.inf
                self._reset_at = None
            return
        if reset is not None and self._reset_at is not None and reset < self._reset_at - 1:
            return  # a late answer from the previous window
        new_window = (
            self._remaining is None
            or self._remaining == math.inf
            or (reset is not None and self._reset_at is not None and reset > self._reset_at + 1)
        )
        if new_window or self._lowest is None:
            self._lowest = remaining
        else:
            self._lowest = min(self._lowest, remaining)
        # In-flight requests other than this one: each may still be counted against the lowest R reported.
        others = max(0, self._in_flight - 1)
        self._remaining = max(0, self._lowest - others)
        if reset is not None:
            self._reset_at = reset
        self._notify()

    def _parse_reset(self, value: str | None, now: float) -> float | None:
        """The reset on our clock: a unix timestamp is the server's, converted with the measured offset."""
        number = _parse_float(value)
        if number is None:
            return None
        return self.server_clock.to_local(number) if number >= _UNIX_TS_THRESHOLD else now + number


def opening_needs_probe(saved: object, *, now: float, burst: int) -> bool:
    """Whether a sync's first requests to an API must wait for a probe: only when `saved` (a `last_window` the
    previous sync kept) says this window, still current at `now`, had fewer than `burst` requests left. Anything
    else, including nothing saved or a malformed entry, lets the opening requests go together."""
    if not isinstance(saved, Mapping):
        return False
    remaining, reset_at = saved.get("remaining"), saved.get("reset_at")
    numbers = [v for v in (remaining, reset_at) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != 2 or not all(math.isfinite(v) for v in numbers):
        return False
    remaining, reset_at = numbers
    return now < reset_at + _RESET_MARGIN_SECONDS and remaining < burst


def _parse_int(value: str | None) -> int | None:
    number = _parse_float(value)
    return None if number is None else int(number)


def _parse_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
