"""Accelo as it really behaves (issue 10): late commits, server clocks that are off, step back or go unreported,
deployments that serve short pages, a token endpoint that fails, a state from another source, and retry log lines
that say what happens. Each test runs against `syncflow.sim` with the knob for its case."""

from __future__ import annotations

import logging
import re
import socket
import time
import types
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

import syncflow
import syncflow._sync
from support.sim import SIM_URL, RecordingSink, assert_matches_truth, sim_configuration, sync_once
from syncflow import AcceloSettings, Settings, SyncflowError
from syncflow._http import RateGate
from syncflow._state import StateDocument
from syncflow._sync import run_sync
from syncflow.sim import Faults, Mutation, Simulator

MakeSim = Callable[..., Simulator]
COMPANIES = ["accelo.companies"]


def _clock(offset: list[float]) -> Callable[[], float]:
    return lambda: time.time() + offset[0]


def _stale(sink: RecordingSink, simulator: Simulator, entity: str) -> list[int]:
    """Ids whose date_modified in the sink is not the simulator's (or that are missing)."""
    got = sink.tables.get(f"accelo.{entity}", {})
    stale = []
    for record in simulator.ground_truth()["accelo"][entity]:
        row = got.get(int(record["id"]))
        if row is None or int(row["date_modified"].timestamp()) != int(record["date_modified"]):
            stale.append(int(record["id"]))
    return stale


# ---------------------------------------------------------------------------------------------------------------
# 1. Late commits.


def test_a_record_committed_late_is_present_after_the_next_sync(make_sim: MakeSim) -> None:
    """Records become visible after their page was read, stamped 60 s before the server's clock (a long
    transaction that began before the window's upper bound): the next window overlaps by the lookback."""
    offset = [0.0]
    late = [Mutation(after_requests=3, source="accelo", entity="companies", modify=40, late_by=60)]
    simulator = make_sim(seed=3, mutations=late, clock=_clock(offset))
    sink = RecordingSink()
    _, state = sync_once(simulator, sink, streams=COMPANIES)
    # The late commits really were missed by the first sync (their ids had already been read).
    assert _stale(sink, simulator, "companies"), "the knob did not produce a late commit"
    offset[0] += 5
    simulator.reset_stats()
    second, _ = sync_once(simulator, sink, state, streams=COMPANIES)
    assert_matches_truth(sink, simulator, streams=COMPANIES)
    # The overlap costs no extra request: the 40 late records come in one short first page, which ends the window
    # (the first sync saw this deployment serve full pages, so a short page is the last), and no /count is asked.
    assert simulator.stats().data_requests == 1
    assert second.rows["accelo.companies"] == 40


def test_lookback_zero_is_allowed_and_bad_values_name_the_key() -> None:
    for value, expected in (("0", 0), (None, 300)):
        options = {} if value is None else {"accelo_lookback_seconds": value}
        accelo = Settings.from_mapping(sim_configuration(**options)).sources["accelo"]
        assert isinstance(accelo, AcceloSettings) and accelo.lookback_seconds == expected
    with pytest.raises(syncflow.ConfigurationError, match="accelo_lookback_seconds"):
        Settings.from_mapping(sim_configuration(accelo_lookback_seconds="-5"))


# ---------------------------------------------------------------------------------------------------------------
# 2. Clocks.


def test_a_fast_server_clock_does_not_make_a_short_reset_look_far_away(make_sim: MakeSim) -> None:
    """The server's clock runs 10 minutes ahead; its window resets in 2 s. Read on our clock, X-RateLimit-Reset
    would be 602 s away, past max_rate_limit_wait_seconds, and the sync would stop early."""
    simulator = make_sim(seed=4, clock_offset=600.0, accelo_rate_limit=3, rate_window=2.0)
    sink = RecordingSink()
    result, _ = sync_once(simulator, sink, streams=COMPANIES, max_rate_limit_wait_seconds="30", max_concurrency="2")
    assert not result.stopped_early, result.warnings
    assert_matches_truth(sink, simulator, streams=COMPANIES)
    assert simulator.stats().rate_limited == 0


def test_a_slow_server_clock_does_not_turn_every_request_into_a_probe(make_sim: MakeSim) -> None:
    """The server's clock is 10 minutes behind ours and its window resets within 2 minutes: on our clock every reset
    would look already past, and each request would be sent alone as a probe of a "new" window."""
    counts = {"invoices": 2000, "companies": 1, "payments": 1, "prospects": 1, "jobs": 1, "staff": 1}
    simulator = make_sim(seed=5, clock_offset=-600.0, rate_window=120.0, latency=0.01, accelo_counts=counts)
    sink = RecordingSink()
    sync_once(simulator, sink, streams=["accelo.invoices"], max_concurrency="8")
    assert_matches_truth(sink, simulator, streams=["accelo.invoices"])
    assert simulator.stats().peak_in_flight > 1
    assert simulator.stats().rate_limited == 0


@pytest.mark.parametrize("offset", [-600.0, 600.0, 0.0])
def test_rate_limit_reset_is_converted_from_the_server_clock(offset: float) -> None:
    """A reset 30 s away on the server's clock is 30 s away on ours, whichever way the clocks differ (a slow server
    clock would otherwise put every reset in the past and make each request a one-at-a-time probe)."""
    now = [1_800_000_000.25]
    gate = RateGate("accelo", requests_per_hour=5000, max_concurrency=4, max_wait=60, clock=lambda: now[0])
    server = now[0] + offset
    headers = {"date": formatdate(server, usegmt=True), "x-ratelimit-remaining": "40",
               "x-ratelimit-reset": str(int(server) + 30)}  # fmt: skip
    gate.observe(200, headers)
    reset_at = gate.statistics().server_reset_at
    assert reset_at is not None
    assert 29.0 <= reset_at - now[0] <= 31.0
    # Never earlier than the server meant (Date is floored to the second): a probe must not arrive before the reset.
    assert reset_at >= now[0] + 30 - 0.25 - 1e-9
    assert gate.server_clock.offset is not None and abs(gate.server_clock.offset - offset) <= 1.0


def test_the_server_clock_offset_follows_a_step_back() -> None:
    now = [1_800_000_000.5]
    gate = RateGate("accelo", requests_per_hour=5000, max_concurrency=4, max_wait=60, clock=lambda: now[0])
    gate.observe(200, {"date": formatdate(now[0] + 120, usegmt=True)})
    gate.observe(200, {"date": formatdate(now[0] + 119.6, usegmt=True)})  # jitter of the floored Date: kept
    assert gate.server_clock.offset is not None and 119 <= gate.server_clock.offset <= 120
    gate.observe(200, {"date": formatdate(now[0] - 30, usegmt=True)})  # the server's clock went back
    assert gate.server_clock.offset is not None and -31 <= gate.server_clock.offset <= -30
    assert gate.server_clock.lowest is not None and gate.server_clock.lowest <= now[0] - 30


def test_no_date_header_and_a_slow_server_clock_lose_nothing(
    make_sim: MakeSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No response says the server's time and its clock is 2 minutes behind ours: records it stamps during the sync
    are below our clock. A window ending at our clock would skip them for good; it must end behind it."""
    offset = [-120.0]
    edits = [Mutation(after_requests=3, source="accelo", entity="companies", modify=30)]
    simulator = make_sim(seed=6, mutations=edits, send_date=False, clock=_clock(offset))
    sink = RecordingSink()
    first, state = sync_once(simulator, sink, streams=COMPANIES)
    assert _stale(sink, simulator, "companies"), "the edits were read by the first sync; the test proves nothing"
    # The next sync runs 20 minutes later (both clocks move on).
    real_time = time.time
    monkeypatch.setattr(syncflow._sync, "time", types.SimpleNamespace(time=lambda: real_time() + 1200))
    offset[0] += 1200
    sync_once(simulator, sink, state, streams=COMPANIES)
    assert_matches_truth(sink, simulator, streams=COMPANIES)
    assert any("no Date header" in w for w in first.warnings)


def test_a_server_clock_stepping_back_mid_sync_loses_nothing(make_sim: MakeSim) -> None:
    """From the third data request on, the server's clock is 2 minutes behind where it was at sync start, and it
    stamps edits there. No lookback helps here (0): the cursor must follow the lowest time the server reported."""
    offset = [0.0]
    edits = [Mutation(after_requests=4, source="accelo", entity="companies", modify=30)]
    simulator = make_sim(seed=9, mutations=edits, clock_step_back=(3, 120.0), clock=_clock(offset))
    sink = RecordingSink()
    _, state = sync_once(simulator, sink, streams=COMPANIES, accelo_lookback_seconds="0")
    assert _stale(sink, simulator, "companies"), "the edits were read by the first sync; the test proves nothing"
    offset[0] += 5
    sync_once(simulator, sink, state, streams=COMPANIES, accelo_lookback_seconds="0")
    assert_matches_truth(sink, simulator, streams=COMPANIES)


def test_a_saved_cursor_far_ahead_of_the_server_clock_rereads_instead_of_waiting(make_sim: MakeSim) -> None:
    """A state whose cursor is an hour ahead of the server's clock (a clock that ran ahead, then was corrected):
    what the server stamps now is below the cursor, so the sync must read up to the server's time, not skip."""
    offset = [0.0]
    simulator = make_sim(seed=10, clock=_clock(offset))
    sink = RecordingSink()
    sync_once(simulator, sink, streams=COMPANIES)
    ahead = StateDocument({"accelo.companies": {"cursor": int(time.time()) + 3600}})
    simulator.apply_mutation(Mutation(1, "accelo", "companies", modify=10))
    offset[0] += 3
    result, ahead = sync_once(simulator, sink, ahead, streams=COMPANIES)
    assert_matches_truth(sink, simulator, streams=COMPANIES)
    assert any("ahead of the server's clock" in w for w in result.warnings)
    assert ahead.stream("accelo.companies")["cursor"] <= int(time.time() + offset[0]) + 1, (
        "the cursor follows the server"
    )


def test_a_start_date_ahead_of_the_server_clock_reads_nothing_yet(make_sim: MakeSim) -> None:
    """Unlike a saved cursor, a start date is the user's bound: a window never reaches back before it."""
    simulator = make_sim(seed=11)
    sink = RecordingSink()
    result, state = sync_once(simulator, sink, streams=COMPANIES, start_date="2099-01-01T00:00:00Z")
    assert sink.tables.get("accelo.companies", {}) == {}
    assert state.stream("accelo.companies") == {}
    assert not any("ahead of the server's clock" in w for w in result.warnings)


# ---------------------------------------------------------------------------------------------------------------
# 3. Short pages.


def test_a_deployment_serving_short_pages_loses_nothing_and_warns_once(make_sim: MakeSim) -> None:
    """The server serves at most 50 rows whatever `_limit` asks: a short page is not the end while /count says
    more remain (a sliced table and a one-slice table)."""
    simulator = make_sim(seed=12, accelo_page_size_max=50)
    sink = RecordingSink()
    streams = ["accelo.companies", "accelo.invoices", "accelo.staff"]
    result, _ = sync_once(simulator, sink, streams=streams)
    assert_matches_truth(sink, simulator, streams=streams)
    short = [w for w in result.warnings if "served 50 rows" in w]
    assert len(short) == 1, result.warnings


def test_short_pages_in_an_incremental_window_continue_by_keyset(make_sim: MakeSim) -> None:
    offset = [0.0]
    simulator = make_sim(seed=13, accelo_page_size_max=30, clock=_clock(offset))
    sink = RecordingSink()
    _, state = sync_once(simulator, sink, streams=COMPANIES)
    simulator.apply_mutation(Mutation(1, "accelo", "companies", modify=70, create=5))
    offset[0] += 3
    simulator.reset_stats()
    second, _ = sync_once(simulator, sink, state, streams=COMPANIES)
    assert second.rows["accelo.companies"] == 75
    assert_matches_truth(sink, simulator, streams=COMPANIES)
    # Count + three pages of 30, 30, 15: once the rows reach the count, the short page ends the window by itself.
    assert simulator.stats().data_requests == 4


# ---------------------------------------------------------------------------------------------------------------
# 4. Token endpoint failures.


@pytest.mark.parametrize("kinds", [{1: "503"}, {1: "drop", 2: "malformed", 3: "502"}])
def test_token_endpoint_failures_are_retried(make_sim: MakeSim, kinds: dict[int, str]) -> None:
    simulator = make_sim(seed=14, token_faults=Faults(schedule=kinds))
    sink = RecordingSink()
    result, _ = sync_once(simulator, sink)
    assert_matches_truth(sink, simulator)
    assert len(result.completed) == 7
    assert simulator.stats().token_requests == len(kinds) + 1


def _closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
    return port


def test_a_refused_connection_names_the_host_and_the_cause() -> None:
    port = _closed_port()
    configuration = {
        "accelo_deployment": "acme",
        "accelo_client_id": "id",
        "accelo_client_secret": "s3cr3t-value",
        "accelo_base_url": f"http://127.0.0.1:{port}",
        "max_retry_seconds": "2",
    }
    with pytest.raises(SyncflowError) as caught:
        run_sync(Settings.from_mapping(configuration), RecordingSink(), StateDocument())
    message = str(caught.value)
    assert "127.0.0.1" in message and "connection refused" in message, message
    assert "token" in message and "retries exhausted" in message
    assert "\n" not in message and "s3cr3t" not in message


# ---------------------------------------------------------------------------------------------------------------
# 5. A different source.


def test_a_state_from_another_source_is_not_applied(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The mock (seed 7), then another source (seed 8) into the same DuckDB file: everything syncs again, with one
    warning line per changed source."""
    path = tmp_path / "warehouse.duckdb"
    first = syncflow.to_duckdb({"use_mock": "true", "mock_scale": "0.2"}, path, progress=False)
    again = syncflow.to_duckdb({"use_mock": "true", "mock_scale": "0.2"}, path, progress=False)
    assert again.rows.get("accelo.companies", 0) == 0, "same source: incremental"
    caplog.set_level(logging.WARNING, logger="syncflow")
    other = syncflow.to_duckdb({"use_mock": "true", "mock_scale": "0.2", "mock_seed": "8"}, path, progress=False)
    for stream in ("accelo.companies", "accelo.invoices", "awardco.user"):
        assert other.rows[stream] == first.rows[stream], stream
    changed = [w for w in other.warnings if "source changed" in w]
    assert len(changed) == 2 and any("seed=7" in w and "seed=8" in w for w in changed), other.warnings
    assert sum("source changed" in r.getMessage() for r in caplog.records) == 2


def test_changing_one_source_does_not_reset_the_other(make_sim: MakeSim) -> None:
    simulator = make_sim(seed=15)
    sink = RecordingSink()
    first, state = sync_once(simulator, sink)
    second, state = sync_once(simulator, sink, state, awardco_base_url="http://127.0.0.2:9")
    assert second.rows["awardco.user"] == first.rows["awardco.user"]
    assert second.rows.get("accelo.companies", 0) == 0
    assert state.source("awardco") == "http://127.0.0.2:9"
    assert state.as_dict()["sources"] == {
        "accelo": f"deployment syncflow-sim at {SIM_URL}",
        "awardco": "http://127.0.0.2:9",
    }


def test_a_state_without_a_recorded_source_is_kept(make_sim: MakeSim) -> None:
    """States written before sources were recorded stay incremental (nothing says they came from elsewhere)."""
    simulator = make_sim(seed=16)
    sink = RecordingSink()
    _, state = sync_once(simulator, sink, streams=COMPANIES)
    old: dict[str, Any] = state.as_dict()
    old.pop("sources")
    second, _ = sync_once(simulator, sink, StateDocument.load(old), streams=COMPANIES)
    assert second.rows.get("accelo.companies", 0) == 0


# ---------------------------------------------------------------------------------------------------------------
# 6. Log wording.


def test_a_retry_log_line_says_what_happens_not_that_retries_ran_out(
    make_sim: MakeSim, caplog: pytest.LogCaptureFixture
) -> None:
    simulator = make_sim(seed=17, faults=Faults(schedule={1: "429", 2: "503"}))
    caplog.set_level(logging.WARNING, logger="syncflow")
    sync_once(simulator, RecordingSink(), streams=COMPANIES)
    lines = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(lines) == 2, lines
    assert not any("exhausted" in line for line in lines), lines
    pattern = (
        r"^accelo GET /api/v0/companies(/count)?: answered (429|503) \(\w+: .+\); retry \d in [\d.]+ s "
        r"\(gives up at \d\d:\d\d:\d\d UTC, \d+ s from now: max_retry_seconds=\d+\)$"
    )
    assert all(re.match(pattern, line) for line in lines), lines
