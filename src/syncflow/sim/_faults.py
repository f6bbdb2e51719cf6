"""Per-request fault decisions and the fixed-window rate limiter.

Both are pure functions of (config, request number, clock) so that a run is reproducible from its seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ._model import Faults

_ERROR_CODES = ("500", "502", "503", "504")


@dataclass(frozen=True)
class FaultDecision:
    kind: str | None  # one of FAULT_KINDS except "slow", or None for a normal answer
    slow: bool


NO_FAULT = FaultDecision(None, False)


def decide(faults: Faults, seed: int, number: int) -> FaultDecision:
    """The fault (if any) for the data request with this 1-based number."""
    scheduled = faults.schedule.get(number)
    if scheduled is not None:
        return FaultDecision(None, True) if scheduled == "slow" else FaultDecision(scheduled, False)
    if not (faults.error_rate or faults.drop_rate or faults.malformed_rate or faults.slow_rate):
        return NO_FAULT  # the common case: skip building an RNG per request
    # One RNG per request number (not one shared stream) keeps the decision independent of request interleaving.
    rng = random.Random(seed * 1_000_003 + number)
    draw = rng.random()
    kind: str | None = None
    if draw < faults.error_rate:
        kind = rng.choice(_ERROR_CODES)
    elif draw < faults.error_rate + faults.drop_rate:
        kind = "drop"
    elif draw < faults.error_rate + faults.drop_rate + faults.malformed_rate:
        kind = "malformed"
    return FaultDecision(kind, rng.random() < faults.slow_rate)


class FixedWindow:
    """A fixed-window request counter; windows are aligned to the first request and last ``window`` seconds.

    Not thread-safe by itself: the simulator calls it under its lock.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._start: float | None = None
        self._used = 0

    def _roll(self, now: float) -> None:
        if self._start is None:
            self._start = now
        elif now >= self._start + self.window:
            # Skip whole idle windows so the alignment to the first request is kept.
            self._start += math.floor((now - self._start) / self.window) * self.window
            self._used = 0

    def acquire(self, now: float) -> bool:
        """Count one request; False (and nothing counted) when the window's budget is spent."""
        self._roll(now)
        if self._used >= self.limit:
            return False
        self._used += 1
        return True

    def reset_at(self, now: float) -> int:
        start = self._start if self._start is not None else now
        return math.ceil(start + self.window)

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.reset_at(now) - now))

    def headers(self, now: float) -> list[tuple[str, str]]:
        if self._start is not None and now >= self._start + self.window:
            self._roll(now)  # a peek after an idle window must not report the stale window
        return [
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(max(0, self.limit - self._used))),
            ("x-ratelimit-reset", str(self.reset_at(now))),
        ]
