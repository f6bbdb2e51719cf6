"""One failure does not cost the rest: an outage shorter than `max_retry_seconds` is survived (token endpoint
included); a stream that fails for good leaves every other stream of both APIs to complete and be checkpointed, and
the next sync does not fetch them again; a 403 skips its stream with a dashboard warning; a 401 ends only its API;
and a failure or interruption at any moment never loses a page whose rows were delivered."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import httpx
import pytest

from support.helpers import RuleTransport, assert_checkpoints_safe, durable_sink
from support.sim import CLASSIC_STREAMS, RecordingSink, assert_matches_truth, sim_configuration, sync_once
from syncflow import AuthenticationError, HTTPStatusError, PermissionDenied, Settings, StreamsFailed
from syncflow._http import RetryPolicy
from syncflow._http._client import RetryWindow
from syncflow._state import StateDocument
from syncflow._sync import run_sync
from syncflow.sim import Outage, SimConfig, Simulator
from syncflow.sources import ACCELO_STREAMS

MakeSim = Callable[..., Simulator]
ACCELO = [key for key in CLASSIC_STREAMS if key.startswith("accelo.")]  # what sim_configuration syncs
ALL = [*ACCELO, "awardco.user"]


# ------------------------------------------------------------------------------------------------------------------
# Retries bounded by time.


class StepClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _drive(window: RetryWindow, clock: StepClock, failures: list[BaseException]) -> list[float]:
    """Feed `failures` to the window's wait generator the way backoff does, advancing the clock by each wait."""
    waits = window.waits()
    waits.send(None)
    seen: list[float] = []
    for failure in failures:
        try:
            wait = waits.send(failure)
        except StopIteration:
            break
        seen.append(wait)
        clock.now += wait
    return seen


def test_retries_last_until_the_time_bound_not_an_attempt_count() -> None:
    clock = StepClock()
    policy = RetryPolicy(max_time=300.0, base=0.5, max_delay=30.0)
    window = RetryWindow(policy, clock)
    error = HTTPStatusError("answered 502", api="awardco", endpoint="GET /api/users", status_code=502)
    waits = _drive(window, clock, [error] * 1000)
    # Every wait is capped, the waits add up to exactly the bound (the last is cut to the time left), and the retrying
    # went on far past the 9 tries the old attempt bound allowed.
    assert all(0 <= wait <= 30.0 for wait in waits)
    assert sum(waits) == pytest.approx(300.0)
    assert len(waits) >= 10
    assert window.deadline == pytest.approx(1_300.0)


def test_a_429_waits_at_least_its_retry_after() -> None:
    clock = StepClock()
    window = RetryWindow(RetryPolicy(max_time=60.0, base=0.01, max_delay=30.0), clock)
    limited = HTTPStatusError("answered 429", api="accelo", endpoint="GET /x", status_code=429, retry_after=7.0)
    assert all(wait >= 7.0 for wait in _drive(window, clock, [limited] * 5))
    # A Retry-After beyond the cap is left to the rate gate (which holds every request until then, or stops cleanly).
    far = HTTPStatusError("answered 429", api="accelo", endpoint="GET /x", status_code=429, retry_after=900.0)
    window = RetryWindow(RetryPolicy(max_time=60.0, base=0.01, max_delay=30.0), StepClock())
    assert _drive(window, StepClock(), [far])[0] == pytest.approx(30.0)


def test_max_retries_is_accepted_but_deprecated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="syncflow")
    settings = Settings.from_mapping(sim_configuration(max_retries="3"))
    assert not hasattr(settings, "max_retries")
    assert any("max_retries: deprecated and ignored" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "outage",
    [
        Outage(api="awardco", start_after_requests=2, seconds=3.0),
        # From the first request on: the token request that reads the server's clock at sync start fails too.
        Outage(api="accelo", start_after_requests=0, seconds=3.0, include_token=True),
    ],
    ids=["awardco mid-sync", "accelo from its token request on"],
)
def test_an_outage_shorter_than_max_retry_seconds_is_survived(
    make_sim: MakeSim, caplog: pytest.LogCaptureFixture, outage: Outage
) -> None:
    simulator = make_sim(seed=4, outages=[outage])
    sink = RecordingSink()
    caplog.set_level(logging.WARNING, logger="syncflow")
    # max_retries=2 used to end this 3 s outage after ~1.5 s of waits; it is ignored now.
    result, _ = sync_once(simulator, sink, max_retries="2", max_retry_seconds="20")
    assert_matches_truth(sink, simulator)
    assert sorted(result.completed) == sorted(ALL)
    assert all(summary.status == "completed" for summary in result.streams.values())
    assert simulator.stats().faults_by_kind["outage"] >= 2
    assert result.requests[outage.api].retries >= 2
    logged = [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]
    assert logged and all("gives up at" in line and "max_retry_seconds=20" in line for line in logged)
    if outage.api == "accelo":
        assert any("POST /oauth2/v0/token" in line for line in logged), "the token request was retried"


def test_a_longer_outage_fails_its_api_alone_and_the_next_sync_does_not_refetch_the_other(make_sim: MakeSim) -> None:
    config: dict[str, Any] = {"seed": 6, "outages": [Outage(api="awardco", start_after_requests=1, seconds=600.0)]}
    simulator = make_sim(**config)
    sink = RecordingSink()
    with pytest.raises(StreamsFailed) as failure:
        sync_once(simulator, sink, max_retry_seconds="1", checkpoint_every_rows="100000")
    error = failure.value
    assert list(error.failures) == ["awardco.user"]
    assert isinstance(error.failures["awardco.user"], HTTPStatusError)
    message = str(error)
    assert "\n" not in message
    assert message.startswith("awardco.user failed: awardco GET /api/users: answered 502")
    assert "the other streams completed and are checkpointed" in message
    assert error.result.streams["awardco.user"].status == "failed"
    assert all(error.result.streams[key].status == "completed" for key in ACCELO)

    # What the destination keeps (rows up to the last checkpoint): every Accelo table, whole.
    durable = durable_sink(sink)
    assert_matches_truth(durable, simulator, streams=ACCELO)
    assert assert_checkpoints_safe(sink, simulator) >= 1
    last = sink.checkpoints[-1]["streams"]
    assert all("cursor" in last[key] for key in ACCELO if ACCELO_STREAMS[key.split(".")[1]].cursor)
    assert "cursor" not in last.get("awardco.user", {}), "the failed stream's cursor did not move"

    # The API is back: the next sync reads AwardCo, and Accelo only for what changed since (nothing).
    healthy = Simulator(replace(simulator.config, outages=()))
    result, _ = sync_once(healthy, durable, StateDocument.load(sink.checkpoints[-1]))
    assert_matches_truth(durable, healthy)
    refetched = {key: rows for key, rows in result.rows.items() if key in ACCELO and key != "accelo.staff"}
    assert sum(refetched.values()) == 0, refetched
    accelo_requests = sum(n for endpoint, n in healthy.stats().by_endpoint.items() if "/api/v0/" in endpoint)
    assert accelo_requests <= 2 * len(ACCELO) + 1, healthy.stats().by_endpoint  # a count and a page each, at most


# ------------------------------------------------------------------------------------------------------------------
# 403: skipped loudly; 401: fatal for its API.


@pytest.mark.parametrize("forbidden", ["accelo.prospects", "awardco.user"])
def test_a_resource_answering_403_is_skipped_with_a_warning(
    make_sim: MakeSim, caplog: pytest.LogCaptureFixture, forbidden: str
) -> None:
    simulator = make_sim(seed=12, forbidden=[forbidden])
    sink = RecordingSink()
    prior = {"cursor": 1_600_000_000} if forbidden.startswith("accelo") else {"cursor": "2020-09-13T12:26:40Z"}
    caplog.set_level(logging.WARNING, logger="syncflow")
    result, state = sync_once(simulator, sink, StateDocument({forbidden: prior}))

    assert result.skipped.keys() == {forbidden} and not result.failed
    summary = result.streams[forbidden]
    assert summary.status == "skipped" and "403" in (summary.reason or "")
    warning = next(w for w in result.warnings if w.startswith(f"{forbidden} skipped:"))
    table = forbidden.split(".")[1]
    if forbidden.startswith("accelo"):
        assert "invalid_permission" in warning and f"read (view) access to {table}" in warning
    assert '"streams"' in warning and '"sources"' in warning, "says how to leave the stream out"
    assert any(r.getMessage() == warning and r.levelno == logging.WARNING for r in caplog.records)
    assert state.stream(forbidden) == prior, "the skipped stream's state is untouched"
    assert_matches_truth(sink, simulator, streams=[key for key in ALL if key != forbidden])
    assert forbidden not in sink.tables


@pytest.mark.parametrize("wrong", ["awardco_api_key", "accelo_client_secret"])
def test_refused_credentials_end_their_api_only(make_sim: MakeSim, wrong: str) -> None:
    simulator = make_sim(seed=13)
    sink = RecordingSink()
    with pytest.raises(StreamsFailed) as failure:
        sync_once(simulator, sink, **{wrong: "not-the-right-one"})
    api = wrong.split("_")[0]
    mine = [key for key in ALL if key.startswith(api)]
    assert sorted(failure.value.failures) == sorted(mine)
    assert all(
        isinstance(e, AuthenticationError) and not isinstance(e, PermissionDenied)
        for e in failure.value.failures.values()
    )
    assert "not-the-right-one" not in str(failure.value)
    others = [key for key in ALL if key not in mine]
    assert_matches_truth(durable_sink(sink), simulator, streams=others)


# ------------------------------------------------------------------------------------------------------------------
# A failure at any moment never loses completed pages.


def _fail_from(path: str, ok_requests: int, status: int = 400) -> Callable[[httpx.Request, int], httpx.Response | None]:
    def rule(request: httpx.Request, n: int) -> httpx.Response | None:
        if request.url.path == path and n > ok_requests:
            return httpx.Response(status, json={"meta": {"status": "invalid_request"}, "error": "refused"})
        return None

    return rule


@pytest.mark.parametrize(
    ("path", "ok_requests", "failed"),
    [
        ("/api/v0/jobs", 0, "accelo.jobs"),  # at its first request: every other stream is mid-page
        ("/api/v0/invoices", 3, "accelo.invoices"),  # mid-stream, its own pages partly delivered
        ("/api/users", 3, "awardco.user"),  # late: Accelo's small tables are already complete
    ],
    ids=["at the start", "mid-stream", "late"],
)
def test_a_failure_at_any_moment_never_loses_completed_pages(
    make_sim: MakeSim, path: str, ok_requests: int, failed: str
) -> None:
    simulator = make_sim(seed=14, latency=0.002)
    transport = RuleTransport(simulator, _fail_from(path, ok_requests))
    # No periodic checkpoints: only the final one (taken before the failure is reported) can keep the rows.
    settings = Settings.from_mapping(sim_configuration(checkpoint_every_rows="100000", checkpoint_every_seconds="3600"))
    sink = RecordingSink()
    with pytest.raises(StreamsFailed) as failure:
        run_sync(settings, sink, StateDocument(), transport=transport)
    assert list(failure.value.failures) == [failed]
    completed = [key for key in ALL if key != failed]
    assert sorted(failure.value.result.completed) == sorted(completed)
    assert assert_checkpoints_safe(sink, simulator) >= 1
    durable = durable_sink(sink)
    assert_matches_truth(durable, simulator, streams=completed)
    # Resumed against a healthy API: the failed stream finishes, and nothing else is read again.
    simulator.reset_stats()
    result, _ = sync_once(simulator, durable, StateDocument.load(sink.checkpoints[-1]))
    assert_matches_truth(durable, simulator)
    again = {key: n for key, n in result.rows.items() if key not in (failed, "accelo.staff") and n}
    assert not again, f"completed streams were fetched again: {again}"


class InterruptingSink(RecordingSink):
    """A destination whose process is interrupted (Ctrl-C) while it writes row number `at`."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        if self.upserts + 1 == self.at:
            raise KeyboardInterrupt
        super().upsert(schema, table, row)


@pytest.mark.parametrize("at", [150, 900])
def test_an_interrupted_drain_checkpoints_every_batch_it_finished(make_sim: MakeSim, at: int) -> None:
    simulator = make_sim(seed=15)
    sink = InterruptingSink(at)
    settings = Settings.from_mapping(sim_configuration(checkpoint_every_rows="100000", checkpoint_every_seconds="3600"))
    with pytest.raises(KeyboardInterrupt):
        run_sync(settings, sink, StateDocument(), transport=simulator.transport())
    assert sink.checkpoints, "the interrupted sync took a final checkpoint"
    assert sink.log[-1][0] == "checkpoint"
    assert assert_checkpoints_safe(sink, simulator) >= 1
    durable = durable_sink(sink)
    kept = sum(len(rows) for rows in durable.tables.values())
    assert kept > 0 and kept <= at - 1
    sync_once(simulator, durable, StateDocument.load(sink.checkpoints[-1]))
    assert_matches_truth(durable, simulator)


def test_the_simulator_outage_and_403_knobs_are_validated() -> None:
    with pytest.raises(ValueError, match=r"Outage\.api"):
        Outage(api="nope", start_after_requests=0, seconds=1)
    with pytest.raises(ValueError, match=r"SimConfig\.forbidden"):
        SimConfig(forbidden=["accelo.widgets"])


class Recorder:
    """Stands in for the SDK's `Logging` and `Operations` in `fivetran._summarise`: records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Callable[[str], None]:
        return lambda message: self.calls.append((name, message))


def test_the_end_of_sync_summary_says_per_stream_completed_skipped_or_failed(
    make_sim: MakeSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncflow import fivetran

    simulator = make_sim(seed=16, forbidden=["accelo.payments"])
    transport = RuleTransport(simulator, _fail_from("/api/v0/jobs", 0))
    settings = Settings.from_mapping(sim_configuration())
    with pytest.raises(StreamsFailed) as failure:
        run_sync(settings, RecordingSink(), StateDocument(), transport=transport)
    log, op = Recorder(), Recorder()
    monkeypatch.setattr(fivetran, "log", log)
    monkeypatch.setattr(fivetran, "op", op)
    fivetran._summarise(failure.value.result)

    lines = {message.split(":")[0]: (level, message) for level, message in log.calls}
    assert lines["accelo.companies"][0] == "info" and lines["accelo.companies"][1].endswith(" s; completed")
    assert lines["accelo.payments"][0] == "warning"
    assert "s; skipped (accelo GET /api/v0/payments" in lines["accelo.payments"][1]
    assert "s; failed (accelo GET /api/v0/jobs: answered 400" in lines["accelo.jobs"][1]
    # The skip reaches the dashboard through the SDK's warning channel (Operations.warning), naming the fix.
    assert [kind for kind, message in op.calls if message.startswith("accelo.payments skipped:")] == ["warning"]
    assert log.calls[-1][1].startswith("sync failed for accelo.jobs; everything else is checkpointed")


@pytest.mark.slow
def test_the_reported_40_second_awardco_outage_is_survived_with_the_default_bound(make_sim: MakeSim) -> None:
    """The issue's case: AwardCo answered 502 for 40 s mid-sync; the old attempt bound gave up after ~37 s."""
    simulator = make_sim(seed=17, outages=[Outage(api="awardco", start_after_requests=2, seconds=40.0)])
    sink = RecordingSink()
    result, _ = sync_once(simulator, sink, max_retry_seconds="300")
    assert_matches_truth(sink, simulator)
    assert result.streams["awardco.user"].status == "completed"
    assert result.streams["awardco.user"].seconds >= 40.0


def test_a_caller_that_stops_iterating_gets_a_final_checkpoint_of_what_it_consumed(make_sim: MakeSim) -> None:
    from syncflow._sync import iterate_sync

    simulator = make_sim(seed=18)
    settings = Settings.from_mapping(sim_configuration(checkpoint_every_rows="100000", checkpoint_every_seconds="3600"))
    sink = RecordingSink()
    batches = iterate_sync(settings, StateDocument(), transport=simulator.transport(), on_checkpoint=sink.checkpoint)
    for _ in range(12):
        batch = next(batches)
        for row in batch.rows:
            sink.upsert(batch.schema, batch.table, row)
    next(batches)  # handed out, never written: the final checkpoint must not cover it
    batches.close()  # the caller stops (a notebook's break, a cancelled task)
    assert len(sink.checkpoints) == 1
    assert assert_checkpoints_safe(sink, simulator) == 1
    assert covered_rows(sink.checkpoints[-1], simulator) > 0


def covered_rows(state: Mapping[str, Any], simulator: Simulator) -> int:
    from support.helpers import covered_keys

    return sum(len(keys) for keys in covered_keys(state, simulator.ground_truth()).values())


class InterruptingProgress:
    """A progress display interrupted (Ctrl-C) while the drain reports batch number `at`: inside the pipeline."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.batches = 0

    def on_start(self, budgets: Callable[[], Mapping[str, Any]]) -> None:
        return None

    def on_batch(self, batch: Any) -> None:
        self.batches += 1
        if self.batches == self.at:
            raise KeyboardInterrupt

    def close(self) -> None:
        return None


def test_an_interrupt_inside_the_pipeline_checkpoints_every_batch_it_finished(make_sim: MakeSim) -> None:
    simulator = make_sim(seed=19)
    sink = RecordingSink()
    settings = Settings.from_mapping(sim_configuration(checkpoint_every_rows="100000", checkpoint_every_seconds="3600"))
    with pytest.raises(KeyboardInterrupt):
        run_sync(settings, sink, StateDocument(), transport=simulator.transport(), progress=InterruptingProgress(20))
    assert len(sink.checkpoints) == 1 and sink.log[-1] == ("checkpoint", 0)
    assert assert_checkpoints_safe(sink, simulator) == 1
    assert covered_rows(sink.checkpoints[0], simulator) > 0
