"""Faults: 5xx, dropped connections, malformed bodies and slow answers are retried (bounded, logged); a sync under
them equals the ground truth; an endpoint that never recovers fails the sync with one clear error naming the API
and endpoint, within the retry budget; and a failed page is never taken for an empty one (resuming from the last
checkpoint still yields the ground truth)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import httpx
import pytest

from support.helpers import RuleTransport, assert_checkpoints_safe, durable_sink
from support.sim import RecordingSink, assert_matches_truth, sync_once
from syncflow import HTTPStatusError, Settings, StreamsFailed
from syncflow._state import StateDocument
from syncflow._sync import run_sync
from syncflow.sim import Faults, Simulator

from support.sim import sim_configuration  # isort: skip

FAULTS = dict(error_rate=0.05, drop_rate=0.02, malformed_rate=0.01, slow_rate=0.03, slow_seconds=0.15)
# The rates alone may not draw every kind in a small sync: force one of each early on, so every kind is exercised.
SCHEDULE = {2: "503", 4: "drop", 6: "malformed", 8: "500", 10: "html", 12: "slow", 14: "502", 16: "504"}

MakeSim = Callable[..., Simulator]


def _sync_under_faults(make_sim: MakeSim, caplog: pytest.LogCaptureFixture, seed: int, **sim: object) -> None:
    faults = Faults(**FAULTS, schedule=SCHEDULE)  # type: ignore[arg-type]
    simulator = make_sim(seed=seed, faults=faults, **sim)
    sink = RecordingSink()
    caplog.set_level(logging.WARNING, logger="syncflow")
    result, _state = sync_once(simulator, sink, max_retry_seconds="60", checkpoint_every_rows="150")
    stats = simulator.stats()

    assert_matches_truth(sink, simulator)
    assert not result.stopped_early
    assert sorted(result.completed) == sorted(sink.tables)
    assert len(result.completed) == 7
    # Every kind of fault really happened...
    for kind in ("500", "502", "503", "504", "drop", "malformed", "slow"):
        assert stats.faults_by_kind.get(kind, 0) >= 1, f"no {kind} fault was injected: {stats.faults_by_kind}"
    # ... each failed request was retried exactly once (a slow answer is not a failure), and each retry was logged.
    failures = stats.faults_injected - stats.faults_by_kind.get("slow", 0)
    retries = sum(r.retries for r in result.requests.values())
    assert retries == failures, f"{retries} retries for {failures} failed requests ({stats.faults_by_kind})"
    retry_line = re.compile(r"; retry \d+ in [\d.]+ s \(gives up at ")
    logged = [r for r in caplog.records if r.name == "syncflow" and retry_line.search(r.getMessage())]
    assert len(logged) == retries
    assert all(r.levelno == logging.WARNING for r in logged)
    # Each logged retry names the API and the endpoint.
    assert all(re.search(r"(accelo GET /api/v0/\w+|awardco GET /api/users)", r.getMessage()) for r in logged)
    assert assert_checkpoints_safe(sink, simulator) >= 5


def test_full_sync_under_faults_equals_ground_truth(make_sim: MakeSim, caplog: pytest.LogCaptureFixture) -> None:
    _sync_under_faults(make_sim, caplog, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_fault_soak_larger_data(make_sim: MakeSim, caplog: pytest.LogCaptureFixture, seed: int) -> None:
    counts = {"companies": 2300, "invoices": 3100, "payments": 1700, "prospects": 900, "jobs": 2600, "staff": 120}
    _sync_under_faults(make_sim, caplog, seed=seed, accelo_counts=counts, awardco_users=1650)


def _always(status: int, path: str) -> Callable[[httpx.Request, int], httpx.Response | None]:
    def rule(request: httpx.Request, _n: int) -> httpx.Response | None:
        if request.url.path == path:
            return httpx.Response(status, json={"meta": {"status": "service_unavailable"}, "response": []})
        return None

    return rule


@pytest.mark.parametrize(
    ("api", "path", "streams"),
    [("accelo", "/api/v0/invoices", None), ("awardco", "/api/users", ["awardco.user"])],
)
def test_permanently_failing_endpoint_fails_within_retry_budget(
    make_sim: MakeSim, caplog: pytest.LogCaptureFixture, api: str, path: str, streams: list[str] | None
) -> None:
    simulator = make_sim(seed=5)
    transport = RuleTransport(simulator, _always(503, path))
    settings = Settings.from_mapping(sim_configuration(max_retry_seconds="2"))
    caplog.set_level(logging.WARNING, logger="syncflow")
    started = time.monotonic()
    # AwardCo's state says it was read before: a first sync also asks pages 2-4 with page 1, each its own chain of
    # retries, and this test follows one.
    prior = {"awardco.user": {"cursor": "2020-01-01T00:00:00Z"}} if api == "awardco" else {}
    with pytest.raises(StreamsFailed) as failure:
        run_sync(settings, RecordingSink(), StateDocument(prior), streams=streams, transport=transport)
    elapsed = time.monotonic() - started

    stream = "awardco.user" if api == "awardco" else "accelo.invoices"
    assert list(failure.value.failures) == [stream], "only the failing stream failed"
    error = failure.value.failures[stream]
    assert isinstance(error, HTTPStatusError) and error.status_code == 503
    assert error.api == api and error.endpoint == f"GET {path}"
    message = str(failure.value)
    assert "\n" not in message
    assert f"{stream} failed: {api} GET {path}" in message and "503" in message and "retries exhausted" in message
    # Bounded by time (2 s after the first failure, plus the last try), not by a count of tries.
    assert transport.overridden[path] >= 3
    assert elapsed < 10
    retries = [r for r in caplog.records if path in r.getMessage() and "; retry " in r.getMessage()]
    assert len(retries) == transport.overridden[path] - 1
    assert all("gives up at" in r.getMessage() and "max_retry_seconds=2" in r.getMessage() for r in retries)
    assert any(f"giving up on {path} after {len(retries) + 1} tries" in r.getMessage() for r in caplog.records)


def test_retry_time_budget_bounds_a_failing_endpoint(make_sim: MakeSim) -> None:
    """A 2 s time budget: the sync gives up after about 2 s (max_retries, deprecated, no longer counts)."""
    simulator = make_sim(seed=5)
    transport = RuleTransport(simulator, _always(502, "/api/v0/jobs"))
    settings = Settings.from_mapping(sim_configuration(max_retries="100", max_retry_seconds="2"))
    started = time.monotonic()
    with pytest.raises(StreamsFailed, match=r"accelo.jobs failed: accelo GET /api/v0/jobs: answered 502"):
        run_sync(settings, RecordingSink(), StateDocument(), streams=["jobs"], transport=transport)
    assert time.monotonic() - started < 6
    assert 2 <= transport.overridden["/api/v0/jobs"] < 100


Rule = Callable[[httpx.Request, int], httpx.Response | None]


def _fail_after(path: str, ok_requests: int, status: int = 500) -> Rule:
    def rule(request: httpx.Request, n: int) -> httpx.Response | None:
        if request.url.path == path and n > ok_requests:
            return httpx.Response(status, json={"meta": {"status": "internal_error"}, "response": []})
        return None

    return rule


@pytest.mark.parametrize(
    ("stream", "path", "ok_requests"),
    [
        ("accelo.companies", "/api/v0/companies", 2),
        ("accelo.invoices", "/api/v0/invoices", 3),
        ("awardco.user", "/api/users", 2),
    ],
)
def test_failed_page_is_never_treated_as_empty(make_sim: MakeSim, stream: str, path: str, ok_requests: int) -> None:
    simulator = make_sim(seed=9)
    transport = RuleTransport(simulator, _fail_after(path, ok_requests))
    configuration = sim_configuration(max_retry_seconds="1", checkpoint_every_rows="50")
    settings = Settings.from_mapping(configuration)
    sink = RecordingSink()
    with pytest.raises(StreamsFailed, match=re.escape(f"GET {path}")):
        run_sync(settings, sink, StateDocument(), transport=transport)

    # Some of the stream was delivered, not all of it, and the saved state does not claim it complete.
    truth_count = {"accelo.companies": 230, "accelo.invoices": 410, "awardco.user": 330}[stream]
    assert 0 < len(sink.tables.get(stream, {})) < truth_count
    assert sink.checkpoints, "no checkpoint before the failure"
    last = sink.checkpoints[-1]["streams"].get(stream, {})
    assert "cursor" not in last, f"{stream}'s cursor advanced past rows it never delivered: {last}"
    assert assert_checkpoints_safe(sink, simulator) >= 1

    # The destination as of the last checkpoint, resumed from that checkpoint's state, ends equal to the truth.
    durable = durable_sink(sink)
    state = StateDocument.load(sink.checkpoints[-1])
    result, _ = sync_once(simulator, durable, state)
    assert not result.stopped_early
    assert_matches_truth(durable, simulator)
