"""Exhausted budget: when Accelo's rate budget runs out mid-sync and its reset is further away than
max_rate_limit_wait_seconds, the sync ends cleanly (no exception, stopped_early, a warning) with a checkpoint that
covers what was delivered; the next sync, in a new rate window, completes; nothing is lost and nothing is
duplicated in the final tables (a DuckDB file with primary keys, and a recording sink)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

import syncflow
from support.helpers import assert_checkpoints_safe, durable_sink
from support.sim import RecordingSink, assert_matches_truth, sim_configuration, sync_once, truth_keys
from syncflow._state import StateDocument
from syncflow.sim import Simulator

MakeSim = Callable[..., Simulator]


def _clocked_sim(make_sim: MakeSim, offset: list[float], **config: object) -> Simulator:
    return make_sim(seed=4, accelo_rate_limit=15, rate_window=3600, clock=lambda: time.time() + offset[0], **config)


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
