"""Exhausted budget: when Accelo's rate budget runs out mid-sync and its reset is further away than
max_rate_limit_wait_seconds, the sync ends cleanly (no exception, stopped_early, a warning) with a checkpoint that
covers what was delivered; the next sync, in a new rate window, completes; nothing is lost and nothing is
duplicated in the final tables (a DuckDB file with primary keys, and a recording sink)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import duckdb
import httpx
import pytest

import syncflow
from support.helpers import assert_checkpoints_safe, durable_sink
from support.sim import (
    CLASSIC_STREAMS,
    RecordingSink,
    assert_matches_truth,
    sim_configuration,
    sync_once,
    truth_keys,
)
from syncflow._state import StateDocument
from syncflow.sim import Simulator

MakeSim = Callable[..., Simulator]


def _clocked_sim(make_sim: MakeSim, offset: list[float], **config: object) -> Simulator:
    config.setdefault("accelo_rate_limit", 15)
    return make_sim(seed=4, rate_window=3600, clock=lambda: time.time() + offset[0], **config)


def test_budget_runs_out_mid_sync_then_next_window_completes(
    make_sim: MakeSim, caplog: pytest.LogCaptureFixture
) -> None:
    offset = [0.0]
    simulator = _clocked_sim(make_sim, offset)
    sink = RecordingSink()
    caplog.set_level(logging.WARNING, logger="syncflow")
    started = time.monotonic()
    result, _ = sync_once(simulator, sink, max_rate_limit_wait_seconds="2", max_concurrency="4")
    assert time.monotonic() - started < 10

    assert result.stopped_early
    assert any("rate budget" in w and "accelo" in w for w in result.warnings), result.warnings
    assert any(r.levelno == logging.WARNING and "rate budget" in r.getMessage() for r in caplog.records)
    assert simulator.stats().rate_limited == 0, "a well-configured client never receives a 429"
    truth = truth_keys(simulator)
    delivered = sum(len(sink.tables.get(s, {})) for s in truth if s.startswith("accelo."))
    assert 0 < delivered < sum(len(v) for s, v in truth.items() if s.startswith("accelo."))
    # AwardCo has its own budget and completes regardless.
    assert set(sink.tables["awardco.user"]) == truth["awardco.user"]
    # The sync ended with a checkpoint, and every checkpoint is safe.
    assert sink.log[-1][0] == "checkpoint"
    assert assert_checkpoints_safe(sink, simulator) >= 1
    unfinished = [s for s, entry in sink.checkpoints[-1]["streams"].items() if "cursor" not in entry and entry]
    assert unfinished, "the budget ran out, yet every Accelo stream claims to be complete"

    # The next scheduled sync, an hour later (a new window), from the durable state.
    offset[0] = 3700.0
    durable = durable_sink(sink)
    state = StateDocument.load(sink.checkpoints[-1])
    second, _ = sync_once(simulator, durable, state, max_rate_limit_wait_seconds="2", max_concurrency="4")
    assert not second.stopped_early and not second.warnings
    assert_matches_truth(durable, simulator)


def _duckdb_counts(path: Path) -> dict[str, tuple[int, int]]:
    connection = duckdb.connect(str(path), read_only=True)
    try:
        counts: dict[str, tuple[int, int]] = {}
        for schema, table in connection.sql(
            "select table_schema, table_name from information_schema.tables where table_schema in ('accelo','awardco')"
        ).fetchall():
            key = "employee_id" if schema == "awardco" else "id"  # Fivetran's names, as in to_duckdb
            total, distinct = connection.sql(
                f'select count(*), count(distinct {key}) from "{schema}"."{table}"'
            ).fetchone() or (0, 0)
            counts[f"{schema}.{table}"] = (int(total), int(distinct))
        return counts
    finally:
        connection.close()


def test_budget_exhaustion_into_duckdb_loses_and_duplicates_nothing(make_sim: MakeSim, tmp_path: Path) -> None:
    offset = [0.0]
    simulator = _clocked_sim(make_sim, offset)
    path = tmp_path / "out.duckdb"
    configuration = sim_configuration(max_rate_limit_wait_seconds="1", max_concurrency="4")
    first = syncflow.to_duckdb(configuration, path, transport=simulator.transport(), progress=False)
    assert first.stopped_early
    partial = _duckdb_counts(path)
    truth = {stream: len(keys) for stream, keys in truth_keys(simulator).items()}
    assert sum(partial.get(s, (0, 0))[0] for s in truth) < sum(truth.values())

    offset[0] = 3700.0
    second = syncflow.to_duckdb(configuration, path, transport=simulator.transport(), progress=False)
    assert not second.stopped_early
    final = _duckdb_counts(path)
    for stream, expected in truth.items():
        assert final.get(stream) == (expected, expected), f"{stream}: (rows, distinct keys) {final.get(stream)}"


def test_a_sync_in_the_window_the_last_one_spent_asks_once_not_with_a_burst(make_sim: MakeSim) -> None:
    """The last sync's view of Accelo's window is kept in the state: a sync started while that window is still spent
    (every scheduled sync of a first load the budget cuts short) sends one probe and stops, instead of opening with a
    burst of 429s. A sync with nothing saved (a first sync) opens with its counts and first pages together: against
    this spent window, that burst is what it draws."""
    # With latency, requests sent together are in flight together (the simulator counts each as it answers).
    simulator = _clocked_sim(make_sim, [0.0], latency=0.05)
    sink = RecordingSink()
    first, _ = sync_once(simulator, sink, max_rate_limit_wait_seconds="2", max_concurrency="4")
    assert first.stopped_early and simulator.stats().rate_limited == 0
    saved = sink.checkpoints[-1]
    views = [entry["rate_window"] for key, entry in saved["streams"].items() if key.startswith("accelo.")
             and "rate_window" in entry]  # fmt: skip
    assert views and all(view["remaining"] < 4 for view in views), saved["streams"]
    # Another client spends what the window has left (one request at a time, so it stops at exactly none left).
    other, _ = sync_once(simulator, RecordingSink(), streams=["accelo.companies"], max_rate_limit_wait_seconds="2",
                         max_concurrency="1")  # fmt: skip
    assert other.stopped_early and simulator.stats().rate_limited == 0
    drawn: dict[bool, int] = {}
    for kept in (True, False):
        state: dict[str, Any] = copy.deepcopy(saved) if kept else {}
        before = simulator.stats().rate_limited
        again_sink = RecordingSink()
        again, _ = sync_once(simulator, again_sink, StateDocument.load(state), max_rate_limit_wait_seconds="2",
                             max_concurrency="4")  # fmt: skip
        assert again.stopped_early
        drawn[kept] = simulator.stats().rate_limited - before
        if kept:
            # Its probe's 429 said so (Retry-After): the streams it would resume keep a spent view for the next sync.
            resumed = {key: entry for key, entry in again_sink.checkpoints[-1]["streams"].items()
                       if key.startswith("accelo.") and "cursor" not in entry}  # fmt: skip
            assert resumed and all(entry["rate_window"]["remaining"] == 0 for entry in resumed.values()), resumed
    assert drawn == {True: 1, False: 4}


class _OpeningWatch(httpx.AsyncBaseTransport):
    """Holds the first Accelo list requests until `want` of them are in flight, or a second has passed: `opening` is
    how many the sync sent before any of them was answered."""

    def __init__(self, inner: httpx.AsyncBaseTransport, want: int) -> None:
        self._inner, self._want = inner, want
        self._in_flight = 0
        self._enough: anyio.Event | None = None  # made on the sync's event loop
        self.opening: int | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith("/api/v0/") or self.opening is not None:
            return await self._inner.handle_async_request(request)
        self._enough = self._enough or anyio.Event()
        self._in_flight += 1
        if self._in_flight >= self._want:
            self._enough.set()
        with anyio.move_on_after(1.0):
            await self._enough.wait()
        if self.opening is None:
            self.opening = self._in_flight
            self._enough.set()
        self._in_flight -= 1
        return await self._inner.handle_async_request(request)


def test_the_opening_requests_go_together_unless_the_saved_view_says_this_window_is_spent(make_sim: MakeSim) -> None:
    """A first sync (nothing saved) sends its counts and first pages together, and so does a later sync whose saved
    view of the window left a burst's worth or is from an earlier window: no round trip spent on a probe. A saved
    view of this window with less than a burst left makes the opening one probe."""
    offset = [0.0]
    simulator = _clocked_sim(make_sim, offset, accelo_rate_limit=80)
    # The six classic tables: a burst of their opening requests fits the window.
    configuration = sim_configuration(max_concurrency="16", streams=",".join(CLASSIC_STREAMS[:-1]))

    def opening(state: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
        # Two minutes later each time (in the same window): every stream has a new window to read, so none waits
        # for the server's clock to leave its cursor's second before its first request.
        offset[0] += 120.0
        watch = _OpeningWatch(simulator.transport(), want=6)
        sink = RecordingSink()
        result = syncflow.sync(configuration, sink, state=state, transport=watch, progress=False)
        assert not result.stopped_early and not result.warnings, result.warnings
        return watch.opening, sink.checkpoints[-1]

    first, saved = opening({})
    assert first is not None and first >= 6  # the counts and first pages, together
    # A window that kept a burst's worth is not written down: nothing there for the next opening to heed.
    assert not [key for key, entry in saved["streams"].items() if "rate_window" in entry]

    def with_views(remaining: int, reset_in: float) -> dict[str, Any]:
        state = copy.deepcopy(saved)
        for key, entry in state["streams"].items():
            if key.startswith("accelo."):
                entry["rate_window"] = {"remaining": remaining, "reset_at": time.time() + reset_in}
        return state

    ample, _ = opening(copy.deepcopy(saved))  # incremental: each stream's first page
    earlier, _ = opening(with_views(0, -3600.0))  # spent, but an hour ago: that window rolled over
    spent, _ = opening(with_views(3, 3000.0))  # this window, fewer left than a burst: one probe first
    assert (ample, earlier, spent) == (6, 6, 1)
    assert simulator.stats().rate_limited == 0
