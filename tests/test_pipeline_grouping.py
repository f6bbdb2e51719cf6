"""The drain hands batches over a stream at a time (`_Held` in `_pipeline.py`): fewer tables between checkpoints,
and still every batch once, each stream's in order, every checkpoint covering only rows already upserted."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import ObjectSendStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.sim import RecordingSink
from syncflow._pipeline import Batch, drain_into, iterate_pipeline, run_pipeline
from syncflow._state import StateDocument

SHORT = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (stream index, rows in the page) in the order the producer sends them
Sends = list[tuple[int, int]]


def _run(
    sends: Sends, *, queue: int, hold: int, every: int, yields: list[int], row_seconds: float = 0.0
) -> tuple[RecordingSink, list[Any]]:
    """Send the pages in `sends` order (each page's rows have rising ids within its stream, its patch records the
    last id and page number), letting the event loop run `yields` steps between sends; drain into a sink."""
    state = StateDocument()
    pages: list[Any] = []

    async def produce(send: ObjectSendStream[Batch]) -> str:
        next_id: dict[int, int] = {}
        page_no: dict[int, int] = {}
        for index, (stream, count) in enumerate(sends):
            first = next_id.get(stream, 0)
            rows = [{"id": first + j, "stream": stream} for j in range(count)]
            next_id[stream] = first + count
            page_no[stream] = page_no.get(stream, -1) + 1
            patch = [(("page",), page_no[stream]), (("after",), first + count - 1 if count else None)]
            pages.append((stream, page_no[stream], rows))
            await send.send(Batch(f"src.t{stream}", "src", f"t{stream}", rows, patch))
            for _ in range(yields[index % len(yields)] if yields else 0):
                await anyio.lowlevel.checkpoint()
        return "finished"

    sink = _SlowSink(row_seconds) if row_seconds else RecordingSink()
    result, _ = run_pipeline(
        produce, sink, state, queue_pages=queue, checkpoint_every_rows=every, checkpoint_every_seconds=3600.0,
        hold_pages=hold,
    )  # fmt: skip
    assert result == "finished"
    return sink, pages


class _SlowSink(RecordingSink):
    """A destination slower than the fetchers, as the SDK's runner is."""

    def __init__(self, row_seconds: float) -> None:
        super().__init__()
        self._row_seconds = row_seconds

    def upsert(self, schema: str, table: str, row: Any) -> None:
        time.sleep(self._row_seconds)
        super().upsert(schema, table, row)


@st.composite
def _case(draw: st.DrawFn) -> tuple[Sends, int, int, int, list[int]]:
    sends = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), max_size=40))
    return (
        sends,
        draw(st.integers(1, 6)),  # queue
        draw(st.integers(0, 12)),  # hold
        draw(st.integers(1, 10)),  # checkpoint every rows
        draw(st.lists(st.integers(0, 3), max_size=5)),
    )


@SHORT
@given(_case())
def test_grouped_drain_delivers_each_stream_in_order_and_checkpoints_only_upserted_rows(
    case: tuple[Sends, int, int, int, list[int]],
) -> None:
    sends, queue, hold, every, yields = case
    sink, pages = _run(sends, queue=queue, hold=hold, every=every, yields=yields)
    expected: dict[str, set[int]] = {}
    for stream, _, rows in pages:
        expected.setdefault(f"src.t{stream}", set()).update(r["id"] for r in rows)
    assert {s: set(rows) for s, rows in sink.tables.items()} == {s: ids for s, ids in expected.items() if ids}
    assert sink.upserts == sum(count for _, count in sends), "a row delivered twice or lost"
    # Each stream's rows in the order produced (ids rise within a stream).
    by_stream: dict[str, list[int]] = {}
    for kind, value in sink.log:
        if kind == "upsert":
            by_stream.setdefault(value[0], []).append(value[1])
    assert all(ids == sorted(ids) for ids in by_stream.values())
    # Every checkpoint covers only rows upserted before it: a stream's recorded page is one whose rows are all in.
    upserted: set[tuple[str, int]] = set()
    for kind, value in sink.log:
        if kind == "upsert":
            upserted.add(value)
            continue
        for stream_key, entry in sink.checkpoints[value]["streams"].items():
            stream = int(stream_key.removeprefix("src.t"))
            covered = {
                (stream_key, r["id"]) for s, p, rows in pages if s == stream and p <= entry["page"] for r in rows
            }
            assert covered <= upserted, f"checkpoint {value} covers {stream_key} rows not yet upserted"
    if sends:
        final = sink.checkpoints[-1]["streams"]
        last_page = {f"src.t{s}": p for s, p, _ in pages}
        assert {k: v["page"] for k, v in final.items()} == last_page, "the final checkpoint covers every page"


def _tables_per_interval(sink: RecordingSink) -> list[int]:
    """How many tables had rows upserted between consecutive checkpoints: what the SDK's runner writes at each."""
    counts: list[int] = []
    tables: set[str] = set()
    for kind, value in sink.log:
        if kind == "upsert":
            tables.add(value[0])
        elif tables:
            counts.append(len(tables))
            tables = set()
    return counts


def test_a_drain_that_is_behind_hands_over_a_table_at_a_time() -> None:
    # Four streams' pages interleaved, as concurrent fetchers deliver them; the producer runs ahead of the drain
    # (a full queue), as it does in `fivetran debug`. Handed over in the order sent, every 40-row interval would
    # touch all four tables (96 table writes over 24 checkpoints).
    sends = [(page % 4, 10) for page in range(96)]
    in_send_order = 4 * (sum(count for _, count in sends) // 40)
    # The sink takes 0.5 ms a row, so the producer is always ahead whatever the threads' scheduling: without it,
    # how much is queued when the drain asks depends on the machine's load (the counts varied 31-37).
    queued_only, _ = _run(sends, queue=8, hold=0, every=40, yields=[], row_seconds=0.0005)
    held, _ = _run(sends, queue=8, hold=16, every=40, yields=[], row_seconds=0.0005)
    intervals = _tables_per_interval(held)
    assert sum(_tables_per_interval(queued_only)) < in_send_order * 0.6
    assert sum(intervals) <= 1.5 * len(intervals), intervals  # mostly one table an interval
    assert queued_only.tables == held.tables


@pytest.mark.parametrize(("queue", "hold"), [(4, 0), (4, 3), (4, 8), (8, 16), (2, 30)])
def test_a_drain_that_is_behind_holds_at_most_the_queue_and_hold_pages(queue: int, hold: int) -> None:
    # The memory bound `queue_pages` promises: pages the producer has handed over (its send returned) and the sink
    # has not finished are at most the queue, what the drain holds and the one being upserted. The drain holds at
    # most `hold_pages`, or, when it had nothing, what was queued when it asked (all of it, in one hop from the event
    # loop's thread). Taking everything queued into a hold with room for one more page let it reach
    # hold - 1 + queue beyond the queue.
    sent = [0]
    excess: list[int] = []

    async def produce(send: ObjectSendStream[Batch]) -> str:
        async with send:
            for page in range(200):
                await send.send(Batch(f"src.t{page % 3}", "src", f"t{page % 3}", [{"id": page}], [(("after",), page)]))
                sent[0] += 1
        return "finished"

    class Watching(_SlowSink):
        def upsert(self, schema: str, table: str, row: Any) -> None:
            excess.append(sent[0] - self.upserts)  # one row a page: upserts so far = pages finished
            super().upsert(schema, table, row)

    sink = Watching(0.0005)  # slower than the producer, whatever the threads' scheduling
    result, _ = run_pipeline(
        produce, sink, StateDocument(), queue_pages=queue, checkpoint_every_rows=10, checkpoint_every_seconds=3600.0,
        hold_pages=hold,
    )  # fmt: skip
    assert result == "finished" and sink.upserts == 200
    assert max(excess) <= queue + max(hold, queue + 1) + 1, (max(excess), queue, hold)
    assert max(excess) >= queue, "the producer never got ahead: nothing was bounded"


def test_a_stream_with_one_page_left_is_not_held_behind_busier_streams_until_the_end() -> None:
    # Stream 1 sends one page early; streams 0 and 2 keep sending. The held page goes out within the patience
    # (two queues' and holds' worth of arrivals), not after every other page.
    sends = [(0, 5), (1, 1)] + [(page % 2 * 2, 5) for page in range(200)]
    sink, _ = _run(sends, queue=4, hold=4, every=1000, yields=[])
    position = next(i for i, (kind, value) in enumerate(sink.log) if kind == "upsert" and value[0] == "src.t1")
    upserts_before = sum(1 for kind, _ in sink.log[:position] if kind == "upsert")
    assert upserts_before <= 5 * (2 * (4 + 4) + 4 + 4 + 2), upserts_before


def test_a_failed_producer_still_delivers_and_checkpoints_every_batch_it_sent() -> None:
    # Pages held by the drain when the producer fails (an outage that reaches the pipeline) are not dropped: the
    # stream ends after them, they are upserted, and the final checkpoint covers them and nothing else.
    sends = [(page % 3, 5) for page in range(30)]

    class _Outage(Exception):
        pass

    sink = RecordingSink()

    async def produce(send: ObjectSendStream[Batch]) -> str:
        for index, (stream, count) in enumerate(sends):
            rows = [{"id": index * 10 + j, "stream": stream} for j in range(count)]
            await send.send(Batch(f"src.t{stream}", "src", f"t{stream}", rows, [(("page",), index)]))
        raise _Outage("the API went away")

    with pytest.raises(BaseException) as failure:
        run_pipeline(
            produce, sink, StateDocument(), queue_pages=4, checkpoint_every_rows=1000, checkpoint_every_seconds=3600.0,
            hold_pages=8,
        )  # fmt: skip
    assert failure.type is _Outage or failure.group_contains(_Outage), failure.value
    assert sink.upserts == sum(count for _, count in sends)
    last = {f"src.t{stream}": index for index, (stream, _) in enumerate(sends)}
    assert {k: v["page"] for k, v in sink.checkpoints[-1]["streams"].items()} == last


def test_on_fetching_runs_once_on_the_drain_thread_while_the_producer_is_already_running() -> None:
    # The producer sends nothing until `on_fetching` has run: were the hook called only once a first batch
    # arrived, the producer would give up waiting for it and the sync would fail instead of finishing.
    called = threading.Event()
    threads: list[str] = []

    def on_fetching() -> None:
        threads.append(threading.current_thread().name)
        called.set()

    async def produce(send: ObjectSendStream[Batch]) -> str:
        async with send:
            assert await anyio.to_thread.run_sync(called.wait, 10.0), "on_fetching was not called while fetching"
            await send.send(Batch("src.t", "src", "t", [{"id": 1}], [(("after",), 1)]))
        return "finished"

    sink = RecordingSink()
    batches = iterate_pipeline(
        produce, StateDocument(), queue_pages=2, checkpoint_every_rows=10, checkpoint_every_seconds=3600.0,
        on_checkpoint=sink.checkpoint, on_fetching=on_fetching,
    )  # fmt: skip
    assert drain_into(sink, batches) == "finished"
    assert threads == [threading.current_thread().name]
    assert list(sink.tables["src.t"]) == [1]
