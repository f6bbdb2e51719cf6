"""The native async API: `extract_async`, `sync_async`, `to_duckdb_async` on the caller's event loop (no thread),
with the blocking pipeline's guarantees (order per stream, checkpoint safety, resume) and real cancellation."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

import syncflow
from support.helpers import assert_checkpoints_safe, covered_keys, durable_sink
from support.sim import CLASSIC_STREAMS, RecordingSink, assert_matches_truth, sim_configuration, truth_keys
from syncflow.sim import Outage, SimConfig, Simulator

INVOICES_ONLY = {"invoices": 450, "companies": 1, "payments": 1, "prospects": 1, "jobs": 1, "staff": 1}


class CountingTransport(httpx.AsyncBaseTransport):
    """The simulator's transport, counting requests started and in flight; `hook` runs as each request starts."""

    def __init__(
        self,
        sim: Simulator,
        *,
        delay: float = 0.0,
        hook: Callable[[int], None] | None = None,
        hang_after: int | None = None,
    ) -> None:
        self._inner = sim.transport()
        self._delay = delay
        self._hook = hook
        self._hang_after = hang_after
        self.started = 0
        self.in_flight = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.started += 1
        self.in_flight += 1
        try:
            if self._hook is not None:
                self._hook(self.started)
            if self._hang_after is not None and self.started > self._hang_after:
                await asyncio.Event().wait()  # an API that stops answering: only a cancellation ends this
            if self._delay:
                await asyncio.sleep(self._delay)  # a slow API, so the sync is still running when it is cancelled
            return await self._inner.handle_async_request(request)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_async_for_yields_pages_in_order_per_stream_and_no_thread_is_started(make_sim: Any) -> None:
    sim = make_sim(latency=0.002, jitter=0.002, awardco_users=650)
    threads = set(threading.enumerate())
    orders: dict[str, list[Any]] = {}
    async with syncflow.extract_async(sim_configuration(), ["awardco.user", "accelo.staff"],
                                      transport=sim.transport()) as pages:  # fmt: skip
        async for page in pages:
            key = "employeeId" if page.stream == "awardco.user" else "id"
            orders.setdefault(page.stream, []).extend(row[key] for row in page.rows)
            assert set(threading.enumerate()) == threads, "the fetching runs on this loop, not on a thread"
    assert orders["awardco.user"] == sorted(orders["awardco.user"]) and len(orders["awardco.user"]) == 650
    assert set(orders["accelo.staff"]) == truth_keys(sim)["accelo.staff"]
    assert pages.result is not None and pages.result.rows["awardco.user"] == 650


async def test_sync_async_checkpoints_cover_only_rows_upserted_and_reach_the_truth(make_sim: Any) -> None:
    sim = make_sim(seed=11, latency=0.002, jitter=0.002,
                   accelo_counts={"companies": 900, "invoices": 500, "payments": 50, "prospects": 10, "jobs": 0,
                                  "staff": 3}, awardco_users=420)  # fmt: skip
    sink = RecordingSink()
    result = await syncflow.sync_async(sim_configuration(checkpoint_every_rows="150"), sink, transport=sim.transport())
    assert assert_checkpoints_safe(sink, sim) > 5
    assert_matches_truth(sink, sim)
    assert result.checkpoints == len(sink.checkpoints)


async def test_a_saved_async_extraction_state_does_not_change_as_iteration_continues() -> None:
    sim = Simulator(SimConfig(accelo_counts=INVOICES_ONLY))
    async with syncflow.extract_async(sim_configuration(), "accelo.invoices", transport=sim.transport()) as pages:
        iterator = aiter(pages)
        await anext(iterator)
        await anext(iterator)  # the first page is finished now, so the state moves past it
        saved = pages.state
        frozen = json.dumps(saved, sort_keys=True)
        async for _ in pages:
            pass
        assert json.dumps(saved, sort_keys=True) == frozen, "a state handed out is a snapshot, not a live view"
        assert json.dumps(pages.state, sort_keys=True) != frozen, "the live state moved on"


async def test_breaking_out_stops_every_fetch_and_the_state_resumes_the_rest() -> None:
    sim = Simulator(SimConfig(accelo_counts=INVOICES_ONLY))
    transport = CountingTransport(sim, delay=0.005)
    taken: set[int] = set()
    async with syncflow.extract_async(sim_configuration(max_concurrency="4"), "accelo.invoices",
                                      transport=transport) as pages:  # fmt: skip
        async for page in pages:
            taken |= {row["id"] for row in page.rows}
            break
    assert transport.in_flight == 0, "leaving the `async with` cancelled the fetches before it returned"
    started = transport.started
    await asyncio.sleep(0.05)
    assert transport.started == started, "nothing fetches after the `async with`"
    assert pages.result is None
    async with syncflow.extract_async(sim_configuration(), "accelo.invoices", state=pages.state,
                                      transport=sim.transport()) as rest:  # fmt: skip
        async for page in rest:
            taken |= {row["id"] for row in page.rows}
    assert taken == truth_keys(sim)["accelo.invoices"]


async def test_an_error_in_the_body_comes_out_as_itself_after_a_final_checkpoint() -> None:
    sim = Simulator(SimConfig(accelo_counts=INVOICES_ONLY))

    class Stop(Exception):
        pass

    with pytest.raises(Stop):  # not wrapped in the task group's ExceptionGroup
        async with syncflow.extract_async(sim_configuration(), "accelo.invoices", transport=sim.transport()) as pages:
            seen = 0
            async for _page in pages:
                seen += 1
                if seen == 3:
                    raise Stop
    assert pages.state["streams"]["accelo.invoices"], "the state covers the two pages finished before the error"


async def test_cancelling_to_duckdb_async_stops_within_a_second_and_releases_the_file(
    make_sim: Any, tmp_path: Path
) -> None:
    sim = make_sim(seed=3, accelo_counts={"companies": 2000, "invoices": 1500, "payments": 300, "prospects": 50,
                                          "jobs": 400, "staff": 20}, awardco_users=1200)  # fmt: skip
    path = tmp_path / "out.duckdb"
    threads = set(threading.enumerate())
    cancel_at = asyncio.Event()
    # Requests after the 80th hang, so the sync cannot finish before the cancel however fast the machine is.
    transport = CountingTransport(
        sim, delay=0.01, hook=lambda started: cancel_at.set() if started == 40 else None, hang_after=80
    )
    configuration = sim_configuration(checkpoint_every_rows="100", max_concurrency="4")
    task = asyncio.create_task(syncflow.to_duckdb_async(configuration, path, transport=transport, progress=False))
    await cancel_at.wait()
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped_after = time.monotonic() - cancelled_at
    assert stopped_after < 1.0, f"took {stopped_after:.2f}s to stop"
    assert transport.in_flight == 0, "every fetch was stopped before the cancellation returned"
    started = transport.started
    await asyncio.sleep(0.05)
    assert transport.started == started, "nothing fetches after the cancellation"
    assert set(threading.enumerate()) == threads, "no thread left behind"

    # The file is released (opened read-write at once) and its state covers only rows it holds.
    truth = sim.ground_truth()
    with duckdb.connect(str(path)) as db:
        (raw,) = db.sql("select state from _syncflow.state where id = 1").fetchone() or (None,)
        assert raw is not None, "the cancel left a final checkpoint"
        written = {
            f"accelo.{entity}": {row[0] for row in db.sql(f"select id from accelo.{entity}").fetchall()}
            for entity in truth["accelo"]
            if f"accelo.{entity}" in CLASSIC_STREAMS  # the tables sim_configuration syncs
        }
        written["awardco.user"] = {row[0] for row in db.sql("select employee_id from awardco.user").fetchall()}
    covered = covered_keys(json.loads(raw), truth)
    assert any(covered.values()), "the check is not vacuous: the state covers some rows"
    for stream, keys in covered.items():
        assert keys <= written.get(stream, set()), f"{stream}: the state claims rows the file does not hold"
    assert sum(len(keys) for keys in written.values()) < sum(len(keys) for keys in truth_keys(sim).values())

    # Resuming from the file's state reaches the ground truth.
    await syncflow.to_duckdb_async(sim_configuration(), path, transport=sim.transport(), progress=False)
    with duckdb.connect(str(path), read_only=True) as db:
        for stream, keys in truth_keys(sim).items():
            column = "employee_id" if stream == "awardco.user" else "id"
            assert {row[0] for row in db.sql(f"select {column} from {stream}").fetchall()} == keys, stream


async def test_wait_for_on_sync_async_leaves_checkpoints_that_resume_to_the_truth(make_sim: Any) -> None:
    sim = make_sim(seed=4)
    sink = RecordingSink()
    transport = CountingTransport(sim, hang_after=25)  # so the sync cannot finish before the timeout, however fast
    configuration = sim_configuration(checkpoint_every_rows="50", max_concurrency="2")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(syncflow.sync_async(configuration, sink, transport=transport), 0.5)
    assert transport.in_flight == 0, "the hanging requests were cancelled too"
    assert sink.checkpoints, "the cancellation took a final checkpoint"
    assert assert_checkpoints_safe(sink, sim) >= 1
    upserts = sink.upserts
    await asyncio.sleep(0.05)
    assert sink.upserts == upserts, "nothing is written after the cancellation"
    await syncflow.sync_async(sim_configuration(), sink, state=sink.checkpoints[-1], transport=sim.transport())
    assert_matches_truth(sink, sim)


def test_the_async_api_names_asyncio_when_run_without_an_asyncio_loop() -> None:
    # Driven by hand, as another event loop (trio) would drive it: no asyncio loop is running.
    entering = syncflow.extract_async({"use_mock": "true"}, "accelo.staff", progress=False).__aenter__()
    with pytest.raises(RuntimeError, match=r"runs on asyncio .* not an asyncio event loop"):
        entering.send(None)


def test_iterating_outside_async_with_says_how_to_use_it() -> None:
    async def misuse() -> None:
        pages = syncflow.extract_async({"use_mock": "true"}, "accelo.staff", progress=False)
        async for _ in pages:
            pass

    with pytest.raises(RuntimeError, match="inside `async with`"):
        asyncio.run(misuse())


class KeepingSink:
    """A sink that keeps the state objects it is handed instead of serialising them at once."""

    def __init__(self) -> None:
        self.kept: list[tuple[Any, str]] = []

    def upsert(self, schema: str, table: str, row: Any) -> None:
        pass

    def checkpoint(self, state: Any) -> None:
        self.kept.append((state, json.dumps(state, sort_keys=True)))


async def test_every_checkpoint_a_sink_gets_is_a_snapshot_in_both_apis() -> None:
    sim = Simulator(SimConfig(accelo_counts=INVOICES_ONLY))
    blocking, awaited = KeepingSink(), KeepingSink()
    configuration = sim_configuration(checkpoint_every_rows="100")
    await asyncio.to_thread(syncflow.sync, configuration, blocking, "accelo.invoices", transport=sim.transport())
    await syncflow.sync_async(configuration, awaited, "accelo.invoices", transport=sim.transport())
    for sink in (blocking, awaited):
        assert len(sink.kept) > 3
        assert [json.dumps(state, sort_keys=True) for state, _ in sink.kept] == [text for _, text in sink.kept]


async def test_a_failing_stream_fails_alone_as_streams_failed_after_the_others_are_checkpointed(
    make_sim: Any,
) -> None:
    sim = make_sim(seed=6, outages=[Outage(api="awardco", start_after_requests=1, seconds=600.0)])
    sink = RecordingSink()
    configuration = sim_configuration(max_retry_seconds="1", checkpoint_every_rows="100000")
    with pytest.raises(syncflow.StreamsFailed) as failure:  # the syncflow error, not the task group's group
        await syncflow.sync_async(configuration, sink, transport=sim.transport())
    assert list(failure.value.failures) == ["awardco.user"]
    accelo = [key for key in truth_keys(sim) if key.startswith("accelo.")]
    assert sorted(failure.value.result.completed) == sorted(accelo)
    assert assert_checkpoints_safe(sink, sim) >= 1
    assert_matches_truth(durable_sink(sink), sim, streams=accelo)


async def test_a_sink_error_comes_out_as_itself_after_a_final_checkpoint_of_the_finished_batches(
    make_sim: Any,
) -> None:
    sim = make_sim(seed=15)

    class Full(Exception):
        pass

    class FillingSink(RecordingSink):
        def upsert(self, schema: str, table: str, row: Any) -> None:
            if self.upserts == 450:
                raise Full("the destination is full")
            super().upsert(schema, table, row)

    sink = FillingSink()
    configuration = sim_configuration(checkpoint_every_rows="100000", checkpoint_every_seconds="3600")
    with pytest.raises(Full):
        await syncflow.sync_async(configuration, sink, transport=sim.transport())
    assert sink.log[-1][0] == "checkpoint", "the final checkpoint came after the last upsert"
    assert assert_checkpoints_safe(sink, sim) >= 1
    durable = durable_sink(sink)
    await syncflow.sync_async(sim_configuration(), durable, state=sink.checkpoints[-1], transport=sim.transport())
    assert_matches_truth(durable, sim)
