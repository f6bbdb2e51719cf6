"""Progress for people: a periodic line per stream (`fivetran debug`'s log; the text form of `_notebook`'s progress)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._http import RateStatistics
from ._pipeline import Batch

__all__ = ["LogProgress"]

logger = logging.getLogger("syncflow")


@dataclass
class _StreamProgress:
    rows: int = 0
    pages: int = 0
    requests: int = 0
    total: int | None = None
    started: float = 0.0


class LogProgress:
    """Logs one line per active stream every `every_seconds`: rows, requests, requests/s and an ETA when known."""

    def __init__(self, every_seconds: float = 10.0, *, write: Callable[[str], None] | None = None) -> None:
        self._every = every_seconds
        self._write = write if write is not None else _log
        self._streams: dict[str, _StreamProgress] = {}
        self._last = time.monotonic()
        self._budgets: Callable[[], Mapping[str, RateStatistics]] = dict

    def on_start(self, budgets: Callable[[], Mapping[str, RateStatistics]]) -> None:
        self._budgets = budgets

    def on_batch(self, batch: Batch) -> None:
        progress = self._streams.get(batch.stream)
        if progress is None:
            progress = self._streams[batch.stream] = _StreamProgress(started=time.monotonic())
        progress.rows += len(batch.rows)
        progress.pages += bool(batch.rows)
        progress.requests += batch.requests
        if batch.total_rows is not None:
            progress.total = batch.total_rows
        now = time.monotonic()
        if now - self._last >= self._every:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Write the line of every stream seen so far."""
        self._last = now
        budgets = self._budgets()
        for name, p in sorted(self._streams.items()):
            self._write(f"{_line(name, p, now)}{_budget(budgets.get(name.split('.', 1)[0]))}")

    def close(self) -> None:
        return None


def _log(line: str) -> None:
    logger.info("%s", line)


def _line(name: str, p: _StreamProgress, now: float) -> str:
    elapsed = max(now - p.started, 1e-6)
    line = f"{name}: {p.rows} rows, {p.pages} pages, {p.requests} requests ({p.requests / elapsed:.1f}/s)"
    if p.total:
        done = min(1.0, p.rows / p.total)
        line += f", {done:.0%} of ~{p.total}"
        if 0 < done < 1:
            line += f", ETA {elapsed * (1 - done) / done:.0f} s"
    return line


def _budget(stats: RateStatistics | None) -> str:
    if stats is None or stats.server_remaining is None:
        return ""
    reset = (
        "" if stats.server_reset_at is None else f", resets in {max(0.0, stats.server_reset_at - time.time()):.0f} s"
    )
    return f"; {stats.api} budget: {stats.server_remaining} requests left{reset}"
