"""The engine end to end against the in-process simulator: exact rows, order, checkpoint safety, resume."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest

from support.helpers import assert_checkpoints_safe, durable_sink
from support.sim import CLASSIC_STREAMS, RecordingSink, assert_matches_truth, sim_configuration, sync_once
from syncflow import HTTPStatusError, Settings, StreamsFailed
from syncflow._state import StateDocument
from syncflow._sync import run_sync
from syncflow.sim import Faults, Mutation, Simulator
from syncflow.sources.accelo import SLICES_PER_SLOT


def test_full_sync_equals_ground_truth_for_all_seven_tables(make_sim: Any) -> None:
    sim = make_sim(seed=3)
    sink = RecordingSink()
    result, state = sync_once(sim, sink)
    assert_matches_truth(sink, sim)
    assert set(result.completed) == set(sink.tables)
    assert sim.stats().rate_limited == 0
    streams = state.as_dict()["streams"]
    assert all("run" not in entry for entry in streams.values()), "a finished sync leaves no in-progress runs"
    assert isinstance(streams["accelo.companies"]["cursor"], int)
    assert "cursor" not in streams["accelo.staff"]  # full refresh: no cursor (its known keys, for deletes)


def test_requests_stay_within_a_few_per_stream_of_the_pages_needed(make_sim: Any) -> None:
    sim = make_sim(seed=4)
    sync_once(sim, RecordingSink())
    stats = sim.stats()
    truth = sim.ground_truth()
    for entity, records in truth["accelo"].items():
        pages = -(-len(records) // 100)
        made = stats.by_endpoint.get(f"GET /api/v0/{entity}", 0) + stats.by_endpoint.get(
            f"GET /api/v0/{entity}/count", 0
        )
        # count + pages + at most one request per slice to learn that it ended (max_concurrency 8: 8 x
        # SLICES_PER_SLOT slices at most)
        assert made <= pages + 1 + 8 * SLICES_PER_SLOT, (entity, made, pages)
    users_pages = -(-len(truth["awardco"]["user"]) // 100)
    assert stats.by_endpoint["GET /api/users"] == users_pages
    assert stats.token_requests == 1


def test_more_slices_than_request_slots_read_every_page_once_within_the_cap(make_sim: Any) -> None:
    # One large table cut into more slices than there are request slots (SLICES_PER_SLOT per slot), so slices
    # queue for the gate: every row once, no page asked twice, never more in flight than max_concurrency.
    counts = {"companies": 4000, "invoices": 0, "payments": 0, "prospects": 0, "jobs": 0, "staff": 0}
    sim = make_sim(seed=21, latency=0.002, jitter=0.002, accelo_counts=counts, awardco_users=0)
    sink = RecordingSink()
    _, state = sync_once(sim, sink, checkpoint_every_rows="300", max_concurrency="4")
    assert_matches_truth(sink, sim)
    assert assert_checkpoints_safe(sink, sim) > 5
    slices = max(
        len(checkpoint["streams"].get("accelo.companies", {}).get("run", {}).get("slices") or {})
        for checkpoint in sink.checkpoints
    )
    assert slices == 4 * SLICES_PER_SLOT > 4, "more slices than request slots"
    upserts = [entry for kind, entry in sink.log if kind == "upsert"]
    upserted = [key for stream, key in upserts if stream == "accelo.companies"]
    assert len(upserted) == len(set(upserted)) == 4000, "no row (so no page) delivered twice"
    stats = sim.stats()
    # 40 pages, the count, and the empty page that ends the last slice (it has no upper bound and its last page is
    # full); the ids are dense, so every other slice's last page reaches the next slice's start and ends it.
    assert stats.by_endpoint["GET /api/v0/companies"] + stats.by_endpoint["GET /api/v0/companies/count"] == 42
    assert stats.peak_in_flight_by_api["accelo"] <= 4
    assert "run" not in state.as_dict()["streams"]["accelo.companies"]


def test_tiny_tables_cost_one_or_two_requests(make_sim: Any) -> None:
    sim = make_sim(accelo_counts={"companies": 7, "invoices": 0, "payments": 1, "prospects": 2, "jobs": 3, "staff": 4})
    sink = RecordingSink()
    result, _ = sync_once(sim, sink)
    assert_matches_truth(sink, sim)  # a stream that was skipped (no request at all) fails here
    for entity in ("companies", "invoices", "payments", "prospects", "jobs", "staff"):
        made = sim.stats().by_endpoint.get(f"GET /api/v0/{entity}", 0)
        counted = sim.stats().by_endpoint.get(f"GET /api/v0/{entity}/count", 0)
        assert result.streams[f"accelo.{entity}"].status == "completed", entity
        assert 1 <= made + counted <= 2, (entity, made, counted)


def test_second_sync_is_incremental_and_fetches_only_what_changed(make_sim: Any) -> None:
    sim = make_sim(seed=5)
    sink = RecordingSink()
    _, state = sync_once(sim, sink)
    sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="companies", modify=3, create=2))
    sim.apply_mutation(Mutation(after_requests=1, source="awardco", entity="user", modify=4, create=1))
    sim.reset_stats()
    before = sink.upserts
    anyio.run(anyio.sleep, 1.05)  # the next sync's window must end after the mutation's second
    result, state = sync_once(sim, sink, state)
    assert_matches_truth(sink, sim)
    # Only the changed records (plus the re-read cursor second and the full-refresh staff table) are fetched again.
    assert result.rows["accelo.companies"] == 5
    assert 5 <= result.rows["awardco.user"] <= 5 + 10
    assert result.rows.get("accelo.invoices", 0) == 0
    assert sink.upserts - before == sum(result.rows.values())
    # At most two requests a stream (count + first page; one where an empty first page answers alone), plus AwardCo.
    assert sim.stats().data_requests <= 2 * len(CLASSIC_STREAMS)


def test_rows_arrive_in_page_order_per_slice_despite_out_of_order_completion(make_sim: Any) -> None:
    # Jittered latency makes concurrently fetched AwardCo pages complete out of order; they must land in order.
    sim = make_sim(latency=0.01, jitter=0.009, awardco_users=950)
    sink = RecordingSink()
    sync_once(sim, sink, streams=["awardco.user"])
    order = [key for kind, (stream, key) in ((k, v) for k, v in sink.log if k == "upsert") if stream == "awardco.user"]
    assert order == sorted(order)
    assert sim.stats().peak_in_flight_by_api["awardco"] > 1, "pages were fetched concurrently"


def test_every_checkpoint_covers_only_rows_already_upserted(make_sim: Any) -> None:
    # Several slices per table, completing out of order (jitter), with frequent checkpoints.
    sim = make_sim(
        seed=11,
        latency=0.004,
        jitter=0.004,
        accelo_counts={"companies": 1630, "invoices": 980, "payments": 50, "prospects": 10, "jobs": 0, "staff": 3},
        awardco_users=720,
    )
    sink = RecordingSink()
    sync_once(sim, sink, checkpoint_every_rows="150")
    assert assert_checkpoints_safe(sink, sim) > 5
    slices = max(
        len(checkpoint["streams"].get("accelo.companies", {}).get("run", {}).get("slices") or {})
        for checkpoint in sink.checkpoints
    )
    assert slices > 1, "the large table was cut into parallel slices"


def test_resume_from_every_checkpoint_reaches_the_same_final_tables(make_sim: Any) -> None:
    sim = make_sim(seed=12, accelo_counts={"companies": 870, "invoices": 400, "payments": 120, "prospects": 5,
                                           "jobs": 260, "staff": 12}, awardco_users=410)  # fmt: skip
    first = RecordingSink()
    sync_once(sim, first, checkpoint_every_rows="100")
    assert len(first.checkpoints) >= 10
    for index, checkpoint in enumerate(first.checkpoints):
        # The destination as it was when this checkpoint was taken, then a new sync from that state.
        resumed = durable_sink(first, index)
        sync_once(sim, resumed, StateDocument.load(checkpoint), checkpoint_every_rows="100")
        assert_matches_truth(resumed, sim)


def test_a_slow_drain_bounds_what_is_fetched_ahead(make_sim: Any) -> None:
    sim = make_sim(accelo_counts={"companies": 3000, "invoices": 0, "payments": 0, "prospects": 0, "jobs": 0,
                                  "staff": 0}, awardco_users=0)  # fmt: skip
    fetched_ahead: list[int] = []

    class SlowSink(RecordingSink):
        pages = 0

        def upsert(self, schema: str, table: str, row: Any) -> None:
            super().upsert(schema, table, row)
            if self.upserts % 100 == 0:
                self.pages += 1
                # Pages served by the API minus pages the drain has written: what sits in memory.
                fetched_ahead.append(sim.stats().by_endpoint.get("GET /api/v0/companies", 0) - self.pages)
                time.sleep(0.01)

    sink = SlowSink()
    sync_once(sim, sink, streams=["accelo.companies"], queue_pages="2", max_concurrency="4")
    assert_matches_truth(sink, sim, streams=["accelo.companies"])
    # queue (2) + what the drain holds to hand over a table at a time (2 x queue) + one batch being handed over +
    # pages in flight (4) + slices' first pages held by the planner (4 x SLICES_PER_SLOT)
    assert max(fetched_ahead) <= 2 + 2 * 2 + 1 + 4 + 4 * SLICES_PER_SLOT, max(fetched_ahead)


@pytest.mark.parametrize("fault", ["500", "502", "503", "504", "429", "drop", "malformed", "html", "slow"])
def test_each_transient_failure_is_retried_and_nothing_is_lost(make_sim: Any, fault: str) -> None:
    sim = make_sim(faults=Faults(schedule={2: fault, 5: fault, 9: fault}, slow_seconds=0.05))
    sink = RecordingSink()
    result, _ = sync_once(sim, sink)
    assert_matches_truth(sink, sim)
    retries = sum(stats.retries for stats in result.requests.values())
    assert retries == (0 if fault == "slow" else 3)


def test_retries_run_out_and_the_sync_fails_without_moving_the_cursor(make_sim: Any) -> None:
    sim = make_sim(faults=Faults(error_rate=1.0))
    sink = RecordingSink()
    state = StateDocument({"accelo.companies": {"cursor": 1_600_000_000}})
    with pytest.raises(StreamsFailed) as caught:
        sync_once(sim, sink, state, max_retry_seconds="1")
    assert "retries exhausted" in str(caught.value)
    assert set(caught.value.failures) == set(CLASSIC_STREAMS)
    assert all(isinstance(error, HTTPStatusError) for error in caught.value.failures.values())
    assert sink.upserts == 0
    assert state.stream("accelo.companies") == {"cursor": 1_600_000_000}


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_4xx_fail_fast_with_one_clear_line(status: int) -> None:
    """A 4xx other than 401/429 is not retried; a 403 skips its stream (a warning), the others fail it."""
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(status, json={"error": f"nope {status}"})

    settings = Settings.from_mapping(sim_configuration(sources="awardco"))
    if status == 403:
        result = run_sync(settings, RecordingSink(), StateDocument(), transport=httpx.MockTransport(answer))
        assert len(calls) == 1, "a 403 is not retried"
        assert result.streams["awardco.user"].status == "skipped"
        assert f"nope {status}" in result.skipped["awardco.user"]
        return
    with pytest.raises(StreamsFailed) as caught:
        run_sync(settings, RecordingSink(), StateDocument(), transport=httpx.MockTransport(answer))
    assert len(calls) == 1, "a 4xx other than 429 is not retried"
    error = caught.value.failures["awardco.user"]
    assert isinstance(error, HTTPStatusError) and error.status_code == status
    message = str(caught.value)
    assert message.startswith("awardco.user failed: awardco GET /api/users: answered") and f"nope {status}" in message
    assert "\n" not in message


def test_zero_429s_when_the_server_window_binds(make_sim: Any) -> None:
    # 25 data requests per 1-second window: the sync needs several windows and must never be refused.
    sim = make_sim(accelo_rate_limit=25, awardco_rate_limit=10, rate_window=1.0,
                   accelo_counts={"companies": 900, "invoices": 700, "payments": 90, "prospects": 40, "jobs": 80,
                                  "staff": 10}, awardco_users=420)  # fmt: skip
    sink = RecordingSink()
    sync_once(sim, sink)
    assert_matches_truth(sink, sim)
    assert sim.stats().rate_limited == 0


def test_an_exhausted_budget_ends_cleanly_and_the_next_sync_completes(make_sim: Any) -> None:
    sim = make_sim(accelo_rate_limit=12, rate_window=3600)
    sink = RecordingSink()
    result, _ = sync_once(sim, sink, max_rate_limit_wait_seconds="5")
    assert result.stopped_early
    assert any("rate budget spent" in warning for warning in result.warnings)
    assert "awardco.user" in result.completed, "the other API carries on"
    assert sink.checkpoints, "what was delivered is checkpointed"
    # A new window: the same data behind a fresh budget.
    fresh = Simulator(sim.config.__class__(**{**sim.config.__dict__, "accelo_rate_limit": 5000}))
    result, _ = sync_once(fresh, sink, StateDocument.load(sink.checkpoints[-1]))
    assert not result.stopped_early
    assert_matches_truth(sink, fresh)


def test_a_record_modified_mid_sync_is_present_after_the_next_sync(make_sim: Any) -> None:
    mutations = [
        Mutation(after_requests=6, source="accelo", entity="invoices", modify=5, create=3),
        Mutation(after_requests=9, source="accelo", entity="companies", modify=4, create=0),
        Mutation(after_requests=4, source="awardco", entity="user", modify=6, create=2),
    ]
    sim = make_sim(seed=21, mutations=mutations, latency=0.002)
    sink = RecordingSink()
    _, state = sync_once(sim, sink)
    anyio.run(anyio.sleep, 1.05)
    sync_once(sim, sink, state)
    assert_matches_truth(sink, sim)


def test_ties_on_one_second_are_never_lost_at_the_cursor(make_sim: Any) -> None:
    sim = make_sim(seed=8)
    records = sim.ground_truth()["accelo"]["companies"]
    seconds: dict[str, int] = {}
    for record in records:
        seconds[record["date_modified"]] = seconds.get(record["date_modified"], 0) + 1
    tied_second, tied = max(seconds.items(), key=lambda item: item[1])
    assert tied >= 5, "the simulator clusters many records on one second"
    # A previous sync ended exactly at that second: everything at or after it must come back.
    state = StateDocument({"accelo.companies": {"cursor": int(tied_second)}})
    sink = RecordingSink()
    sync_once(sim, sink, state, streams=["accelo.companies"])
    expected = {int(r["id"]) for r in records if int(r["date_modified"]) >= int(tied_second)}
    assert set(sink.tables["accelo.companies"]) == expected


def test_token_expiry_mid_sync_refreshes_and_loses_nothing(make_sim: Any) -> None:
    # Tokens live 1 s; the sync takes several: the client renews before expiry (and on a 401 if it misjudged).
    sim = make_sim(token_ttl=1, latency=0.06)
    sink = RecordingSink()
    sync_once(sim, sink, max_concurrency="2")
    assert_matches_truth(sink, sim)
    assert sim.stats().token_requests >= 2


def test_concurrent_401s_share_one_token_refresh(make_sim: Any) -> None:
    sim = make_sim(latency=0.01, faults=Faults(schedule={3: "401", 4: "401", 5: "401", 6: "401"}))
    sink = RecordingSink()
    result, _ = sync_once(sim, sink, sources="accelo")
    assert_matches_truth(sink, sim, streams=[f"accelo.{e}" for e in ("companies", "invoices", "jobs")])
    assert sim.stats().token_requests == 2, "one refresh for all the refused requests"
    assert result.requests["accelo"].token_refreshes == 4


def test_bad_credentials_fail_with_one_clear_line(make_sim: Any) -> None:
    sim = make_sim()
    with pytest.raises(Exception) as caught:
        sync_once(sim, RecordingSink(), accelo_client_secret="wrong-secret-value", sources="accelo")
    message = str(caught.value)
    assert "accelo POST /oauth2/v0/token: credentials refused (401" in message
    assert "wrong-secret-value" not in message


def test_without_total_awardco_reads_a_few_pages_ahead_and_wastes_at_most_three(make_sim: Any) -> None:
    from syncflow.sources.awardco import SPECULATIVE_PAGES

    sim = make_sim(awardco_include_total=False, awardco_users=1234, latency=0.005, jitter=0.004)
    sink = RecordingSink()
    sync_once(sim, sink, streams=["awardco.user"])
    assert_matches_truth(sink, sim, streams=["awardco.user"])
    pages = -(-1234 // 100)
    made = sim.stats().by_endpoint["GET /api/users"]
    # Without `total` a first pass cannot prove it skipped no one (awardco.py): a confirming pass reads it again.
    assert 2 * pages <= made <= 2 * (pages + SPECULATIVE_PAGES - 1)
    assert sim.stats().peak_in_flight_by_api["awardco"] > 1, "pages were fetched ahead"


class _PagesAskedBeforePageOne(httpx.AsyncBaseTransport):
    """Notes which AwardCo pages were asked while page 1 was still unanswered."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.page_one_answered = False
        self.asked_before: set[int] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "0"))
        if request.url.path == "/api/users" and not self.page_one_answered:
            self.asked_before.add(page)
        response = await self._inner.handle_async_request(request)
        if request.url.path == "/api/users" and page == 1:
            self.page_one_answered = True
        return response


@pytest.mark.parametrize("users", [950, 120, 30])
def test_a_first_awardco_sync_asks_its_first_pages_together(make_sim: Any, users: int) -> None:
    """A first sync reads every user: pages 2-4 are asked with page 1, before its answer says how many there are. A
    list shorter than that costs at most SPECULATIVE_PAGES - 1 requests more, once; the next (incremental) sync asks
    page 1 alone."""
    from syncflow.sources.awardco import SPECULATIVE_PAGES

    sim = make_sim(seed=6, awardco_users=users, latency=0.02)
    sink = RecordingSink()
    watch = _PagesAskedBeforePageOne(sim.transport())
    settings = Settings.from_mapping(sim_configuration(streams="awardco.user"))
    state = StateDocument()
    run_sync(settings, sink, state, transport=watch)
    assert_matches_truth(sink, sim, streams=["awardco.user"])
    assert watch.asked_before == set(range(1, SPECULATIVE_PAGES + 1))
    pages = max(1, -(-users // 100))
    assert sim.stats().by_endpoint["GET /api/users"] == max(pages, SPECULATIVE_PAGES)

    sim.reset_stats()
    watch = _PagesAskedBeforePageOne(sim.transport())
    run_sync(settings, sink, state, transport=watch)
    assert watch.asked_before == {1}
    assert sim.stats().by_endpoint["GET /api/users"] == 1


def test_a_page_past_the_end_that_errors_does_not_fail_a_finished_sync(make_sim: Any) -> None:
    # An API that answers 404 beyond its last page: the pages fetched ahead fail, but delivery never reaches them.
    sim = make_sim(awardco_include_total=False, awardco_users=250)

    def past_the_end(request: httpx.Request, count: int) -> httpx.Response | None:
        page = int(request.url.params.get("page", "1"))
        return httpx.Response(404, json={"error": "no such page"}) if page > 3 else None

    from support.helpers import RuleTransport

    sink = RecordingSink()
    settings = Settings.from_mapping(sim_configuration(sources="awardco"))
    transport = RuleTransport(sim, past_the_end)
    run_sync(settings, sink, StateDocument(), transport=transport)
    assert_matches_truth(sink, sim, streams=["awardco.user"])
    assert transport.overridden["/api/users"] >= 1, "pages past the end were asked for, and answered 404"
