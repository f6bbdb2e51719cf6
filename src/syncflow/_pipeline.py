"""The ordered pipeline: fetch concurrently on an event-loop thread, write each stream in order on the caller's thread.

    event-loop thread (anyio, asyncio backend)          caller's thread (the SDK's update())
    producers ──send(Batch)──▶ bounded memory stream ──▶ drain: sink.upsert(row) for each row,
                                (back-pressure)                 then sink.delete(keys) if any,
                                                                 then state.apply(batch.patch),
                                                                 sink.checkpoint(state) now and then

Invariants, each relied on by the resume guarantee:
- Only the drain calls the sink, so `op.*` runs on the thread that called `update()`.
- A batch's state patch is applied after all of its rows are upserted and its deletes sent; a checkpoint is the
  state as of the last applied patch, so it never covers a row that was not upserted.
- Producers send a stream's (or a slice's) batches in order, so patches arrive in order per slice; the drain keeps
  that order per stream and may reorder only across streams (`_Held`: a table at a time), whose state entries are
  independent.
- The stream is bounded (`queue_pages`): a slow drain stalls the fetchers, memory does not grow with the data.
- Streams fail alone (their sources contain a stream's failure); an error that reaches the pipeline cancels every
  fetch, and on every exit path (an error, cancellation, KeyboardInterrupt, the consumer closing the generator) a
  final checkpoint records the state as of the last batch whose rows were all upserted.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import anyio
from anyio.abc import ObjectSendStream, TaskGroup
from anyio.from_thread import start_blocking_portal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._state import StateDocument, StatePatch

__all__ = [
    "AsyncPipeline",
    "Batch",
    "DrainStatistics",
    "Progress",
    "Sink",
    "deliver",
    "drain_into",
    "fetch_in_order",
    "iterate_pipeline",
    "require_asyncio",
    "run_pipeline",
]

logger = logging.getLogger("syncflow")

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """A unit of delivery: rows for one table, and the state change they complete."""

    stream: str  # "source.table"
    schema: str
    table: str
    rows: Sequence[Mapping[str, Any]]
    patch: StatePatch = ()
    requests: int = 0  # requests this batch cost (for progress)
    total_rows: int | None = None  # the stream's expected rows when known (for progress and ETA)
    # Primary keys ({column: value}) of records gone at the source, soft-deleted after this batch's upserts and
    # before its patch is applied (a completed reconciliation sweep or full refresh).
    deletes: Sequence[Mapping[str, Any]] = ()


class Sink(Protocol):
    """Where `sync`/`sync_async` write: rows upserted by primary key, then now and then the state covering them.

    Both are called on the caller's thread, in order; `checkpoint` gets a snapshot (a deep copy) each time."""

    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None: ...

    def delete(self, schema: str, table: str, keys: Sequence[Mapping[str, Any]]) -> None:
        """Soft-delete the rows with these primary keys (each a {column: value} mapping)."""

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        """Persist `state` (a snapshot: the sink may keep it): it covers exactly the rows upserted so far."""


class Progress(Protocol):
    """Reports a sync as it runs (`progress=` of every public call): called on the drain's (the caller's) thread."""

    def on_start(self, budgets: Callable[[], Mapping[str, Any]]) -> None:
        """`budgets()` returns each API's live `RateStatistics` (safe to call from the drain thread)."""

    def on_batch(self, batch: Batch) -> None: ...

    def close(self) -> None: ...


@dataclass
class DrainStatistics:
    rows: dict[str, int] = field(default_factory=dict)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # stream -> (first, last batch), monotonic
    batches: int = 0
    checkpoints: int = 0
    seconds: float = 0.0


Producer = Callable[[ObjectSendStream[Batch]], Awaitable[T]]


class _Drain:
    """What every consumer of the pipeline does with a batch once it has finished with it (upserted its rows, or
    taken the page): apply its state patch, count it, report progress, checkpoint on cadence, and the last
    checkpoint on the way out. The blocking generator and the async iterator both drive this one object, so they
    keep the same invariant: a checkpoint never covers a batch the consumer has not finished."""

    def __init__(
        self,
        state: StateDocument,
        *,
        checkpoint_every_rows: int,
        checkpoint_every_seconds: float,
        on_checkpoint: Callable[[Mapping[str, Any]], None] | None,
        progress: Progress | None,
        stats: DrainStatistics,
    ) -> None:
        self._state = state
        self._every_rows = checkpoint_every_rows
        self._every_seconds = checkpoint_every_seconds
        self._on_checkpoint = on_checkpoint
        self._progress = progress
        self.stats = stats
        self._started = time.monotonic()
        self._last_checkpoint = self._started
        self._rows_since = 0
        self._applied_since_checkpoint = False

    def finished(self, batch: Batch) -> bool:
        """The consumer is done with `batch`: its patch now counts, and a checkpoint may be due (True: taken)."""
        self._state.apply(batch.stream, batch.patch)
        self._applied_since_checkpoint = True
        stats = self.stats
        stats.batches += 1
        stats.rows[batch.stream] = stats.rows.get(batch.stream, 0) + len(batch.rows)
        self._rows_since += len(batch.rows)
        if self._progress is not None:
            self._progress.on_batch(batch)
        now = time.monotonic()
        stats.spans[batch.stream] = (stats.spans.get(batch.stream, (self._started, now))[0], now)
        due = self._rows_since >= self._every_rows or now - self._last_checkpoint >= self._every_seconds
        if self._on_checkpoint is not None and due:
            self._checkpoint()
            self._rows_since = 0
            self._last_checkpoint = now
            return True
        return False

    def completed(self) -> None:
        """Everything drained and the producers succeeded: the final checkpoint covers every row."""
        if self._on_checkpoint is not None:
            self._checkpoint()

    def failed(self, cause: BaseException) -> None:
        """Whatever ended the sync (a failed producer, a cancelled or interrupted drain, the consumer stopping
        mid-batch), `state` holds only patches of batches the consumer finished: checkpoint it, so the destination
        keeps those rows instead of dropping everything after the last periodic checkpoint. The failure that ended
        the sync stays the one raised: if this checkpoint fails too (a sink that broke), that is logged, and the
        previous checkpoint still holds."""
        if self._on_checkpoint is None or not self._applied_since_checkpoint:
            return
        try:
            self._checkpoint()
        except Exception as exc:
            logger.error("could not checkpoint on the way out (%s: %s) after: %s", type(exc).__name__, exc, cause)

    def stopped(self) -> None:
        self.stats.seconds = time.monotonic() - self._started

    def _checkpoint(self) -> None:
        assert self._on_checkpoint is not None
        # A snapshot: the sink may keep the object it is handed, and the drain goes on changing the live state.
        self._on_checkpoint(copy.deepcopy(self._state.as_dict()))
        self.stats.checkpoints += 1
        self._applied_since_checkpoint = False


def iterate_pipeline(
    produce: Producer[T],
    state: StateDocument,
    *,
    queue_pages: int,
    checkpoint_every_rows: int,
    checkpoint_every_seconds: float,
    on_checkpoint: Callable[[Mapping[str, Any]], None] | None = None,
    progress: Progress | None = None,
    stats: DrainStatistics | None = None,
    hold_pages: int = 0,
    on_fetching: Callable[[], None] | None = None,
) -> Generator[Batch, None, T]:
    """Run `produce` on a new event-loop thread; yield its batches here, each stream's in order; return its result.

    The consumer handles a batch (upserts its rows) before asking for the next one; only then is the batch's state
    patch applied, so `state` (and every `on_checkpoint`) covers exactly the batches the consumer has finished.
    Batches of different streams may be yielded in another order than they were produced: a stream at a time
    (`_Held`), from what is queued and up to `hold_pages` more batches taken off the queue to make the runs longer
    (0: only what is queued when the consumer asks). Closing the generator early cancels every fetch; on that and
    every other way out (an error, an interrupt) a final checkpoint records the state as of the last batch the
    consumer finished. `on_fetching` is called here once `produce` is started: slow set-up of the consumer's (a
    sink's imports) overlaps the first round trips instead of delaying them.
    """
    drain = _Drain(
        state, checkpoint_every_rows=checkpoint_every_rows, checkpoint_every_seconds=checkpoint_every_seconds,
        on_checkpoint=on_checkpoint, progress=progress, stats=stats if stats is not None else DrainStatistics(),
    )  # fmt: skip
    with start_blocking_portal(backend="asyncio") as portal:
        send, receive = portal.call(_open_stream, queue_pages)
        future = portal.start_task_soon(_produce_then_close, produce, send)
        # Patience: two queues and holds' worth of arrivals, about as many as it takes the busiest stream to fill them.
        held = _Held(hold_pages=hold_pages, patience=2 * (queue_pages + hold_pages))
        try:
            if on_fetching is not None:
                on_fetching()
            while True:
                if not held:
                    arrived = portal.call(_receive_available, receive)
                    if not arrived:
                        break  # the producers are done (or failed: future.result() below says which)
                    held.extend(arrived)
                elif held.run_ended() and held.room():
                    held.extend(portal.call(_take_queued, receive, held.room()))
                batch = held.next_batch()
                yield batch
                if drain.finished(batch):
                    held.checkpointed()
            result = future.result()
        except BaseException as exc:
            future.cancel()
            drain.failed(exc)
            raise
        finally:
            portal.call(receive.aclose)
            drain.stopped()
    drain.completed()
    return result


class AsyncPipeline(Generic[T]):
    """`iterate_pipeline` on the caller's event loop: `async with` runs `produce` in a task group it owns, `async
    for` yields the batches in order, and a batch's patch is applied when the consumer asks for the next one.

    Leaving the `async with` early (a `break`, an error, a cancellation) cancels every fetch before it returns and
    takes the final checkpoint of the batches finished. `result` is the producers' result once iteration ends.
    Requires the asyncio backend (the rate gate and retries use aiolimiter and backoff).
    """

    def __init__(
        self,
        produce: Producer[T],
        state: StateDocument,
        *,
        queue_pages: int,
        checkpoint_every_rows: int,
        checkpoint_every_seconds: float,
        on_checkpoint: Callable[[Mapping[str, Any]], None] | None = None,
        progress: Progress | None = None,
        stats: DrainStatistics | None = None,
    ) -> None:
        self._produce = produce
        self._queue_pages = queue_pages
        self._drain = _Drain(
            state, checkpoint_every_rows=checkpoint_every_rows, checkpoint_every_seconds=checkpoint_every_seconds,
            on_checkpoint=on_checkpoint, progress=progress, stats=stats if stats is not None else DrainStatistics(),
        )  # fmt: skip
        self._streams: tuple[MemoryObjectSendStream[Batch], MemoryObjectReceiveStream[Batch]] | None = None
        self._tasks: TaskGroup | None = None
        self._pending: Batch | None = None
        self._results: list[T] = []
        self._done = False
        self._entered = False

    @property
    def result(self) -> T:
        if not self._results:
            raise RuntimeError("the pipeline has not finished")
        return self._results[0]

    async def __aenter__(self) -> AsyncPipeline[T]:
        if self._entered:
            raise RuntimeError("an async pipeline runs once: open a new one")
        require_asyncio()
        self._entered = True
        self._streams = anyio.create_memory_object_stream[Batch](max_buffer_size=self._queue_pages)
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._run, self._streams[0])
        return self

    async def _run(self, send: ObjectSendStream[Batch]) -> None:
        # The send side is closed only on success: then the end of the stream means "all delivered". On a failure
        # the consumer keeps waiting until the task group cancels it with the failure, never sees a clean end.
        result = await self._produce(send)
        self._results.append(result)
        await send.aclose()

    def __aiter__(self) -> AsyncPipeline[T]:
        return self

    async def __anext__(self) -> Batch:
        if self._streams is None:
            raise RuntimeError("iterate inside `async with`: the pipeline's fetchers live in its context")
        if self._pending is not None:
            batch, self._pending = self._pending, None
            self._drain.finished(batch)
        if self._done:
            raise StopAsyncIteration
        # FIFO, not `_Held`: on the caller's loop the fetchers run only while the consumer awaits, so about a batch
        # is queued at each receive and there is nothing to group (tried: holding changed no order in a test).
        try:
            batch = await self._streams[1].receive()
        except anyio.EndOfStream:
            self._done = True
            self._drain.completed()
            raise StopAsyncIteration from None
        self._pending = batch
        return batch

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        assert self._tasks is not None and self._streams is not None
        if not self._done:
            self._tasks.cancel_scope.cancel()  # stopped early: no fetch outlives the `async with`
        try:
            await self._tasks.__aexit__(exc_type, exc, traceback)
        except BaseException as failure:
            self._drain.failed(failure)
            if exc is not None and _leaves(failure) == [exc]:
                return False  # the body's own error, which the task group wrapped: let it through as it was raised
            raise
        finally:
            self._streams[0].close()
            self._streams[1].close()
            self._drain.stopped()
        if exc is not None or not self._done:
            self._drain.failed(exc if exc is not None else anyio.get_cancelled_exc_class()())
        return False


def _leaves(exc: BaseException) -> list[BaseException]:
    nested = getattr(exc, "exceptions", None)
    if nested is None:
        return [exc]
    return [leaf for inner in nested for leaf in _leaves(inner)]


def require_asyncio() -> None:
    """The engine's rate gate and retries (aiolimiter, backoff) run on asyncio only: say so instead of failing
    deep inside a request under trio."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "syncflow's async API runs on asyncio (its rate limiting uses aiolimiter) and this is not an asyncio "
            "event loop (trio?): run it under asyncio (anyio.run(..., backend='asyncio')), or call the blocking "
            "syncflow API (extract, sync, to_duckdb) from a thread"
        ) from None


def run_pipeline(
    produce: Producer[T],
    sink: Sink,
    state: StateDocument,
    *,
    queue_pages: int,
    checkpoint_every_rows: int,
    checkpoint_every_seconds: float,
    progress: Progress | None = None,
    hold_pages: int = 0,
) -> tuple[T, DrainStatistics]:
    """Drain `produce`'s batches into `sink` on this thread; return the producers' result and drain figures."""
    stats = DrainStatistics()
    batches = iterate_pipeline(
        produce,
        state,
        queue_pages=queue_pages,
        checkpoint_every_rows=checkpoint_every_rows,
        checkpoint_every_seconds=checkpoint_every_seconds,
        on_checkpoint=sink.checkpoint,
        progress=progress,
        stats=stats,
        hold_pages=hold_pages,
    )
    return drain_into(sink, batches), stats


def deliver(sink: Sink, batch: Batch) -> None:
    """Hand one batch to `sink`: upsert its rows, then send its deletes (the blocking and the async drain both)."""
    schema, table = batch.schema, batch.table
    upsert = sink.upsert
    for row in batch.rows:
        upsert(schema, table, row)
    if batch.deletes:
        delete = getattr(sink, "delete", None)
        if delete is None:
            # A sink written before deletes existed: say what it misses and how to receive it, once per batch.
            logger.warning(
                "%s.%s: %d rows were deleted at the source, but the sink has no delete(schema, table, keys) "
                "method; add one to receive deletes", schema, table, len(batch.deletes),
            )  # fmt: skip
        else:
            delete(schema, table, batch.deletes)


def drain_into(sink: Sink, batches: Generator[Batch, None, T]) -> T:
    """Hand every batch to `sink` (`deliver`), in order, on this thread; return the generator's result.

    The generator applies each batch's state patch (and checkpoints into the sink) when asked for the next one, i.e.
    only after this loop has upserted the batch's rows and deleted its keys.
    """
    while True:
        try:
            batch = next(batches)
        except StopIteration as done:
            result: T = done.value
            return result
        try:
            deliver(sink, batch)
        except BaseException:
            # Close now, not when the traceback is freed: the generator takes its final checkpoint (of the batches
            # before this one) and stops the fetchers while the sink is still ours to call.
            batches.close()
            raise


async def _open_stream(size: int) -> tuple[ObjectSendStream[Batch], MemoryObjectReceiveStream[Batch]]:
    send, receive = anyio.create_memory_object_stream[Batch](max_buffer_size=size)
    return send, receive


async def _produce_then_close(produce: Producer[T], send: ObjectSendStream[Batch]) -> T:
    async with send:
        return await produce(send)


class _Held:
    """Batches taken off the queue and not yet handed to the consumer, by stream, each stream's in arrival order.

    The drain hands them over a stream at a time (a *run*): the one with the most rows waiting, continued while
    more of it arrives. Why: a checkpoint makes the SDK's runner write every table that has rows waiting, each write
    a dozen DuckDB statements (~40 ms) whatever its size, and the fetchers deliver every table's pages interleaved;
    runs of one table make a checkpoint interval touch two or three tables instead of all seven (scale 20: 40 table
    writes in FIFO order against the bare loop's 12). Only the order *across* streams changes: each stream's (and
    so each slice's) batches keep their order, and a batch's patch is still applied after its rows, so every
    checkpoint covers exactly the batches finished. A drain that keeps up holds one or two batches and changes
    nothing; a drain that is behind holds at most `hold_pages` batches beyond the queue, or, having held none, what
    was queued when it asked (taken in one hop from the event loop's thread): at most max(hold_pages, queue + 1).
    """

    __slots__ = ("_arrived", "_current", "_hold_pages", "_pages", "_patience", "_streams", "_written")

    def __init__(self, *, hold_pages: int, patience: int) -> None:
        self._hold_pages = hold_pages
        self._patience = patience
        self._streams: dict[str, deque[tuple[int, Batch]]] = {}
        self._pages = 0
        self._arrived = 0  # batches taken off the queue so far: each held batch's arrival number orders its age
        self._current: str | None = None
        # Streams handed over since the last checkpoint: the runner writes their tables at the next one anyway, so
        # going back to one of them costs no extra table write; a new stream does.
        self._written: set[str] = set()

    def __bool__(self) -> bool:
        return self._pages > 0

    def __repr__(self) -> str:
        waiting = {stream: len(batches) for stream, batches in self._streams.items() if batches}
        return f"<_Held current={self._current!r} pages={self._pages} waiting={waiting}>"

    def extend(self, batches: Iterable[Batch]) -> None:
        for batch in batches:
            self._streams.setdefault(batch.stream, deque()).append((self._arrived, batch))
            self._arrived += 1
            self._pages += 1

    def run_ended(self) -> bool:
        """The current stream has nothing more waiting: time to look at what arrived before choosing the next."""
        current = self._current
        return current is None or not self._streams.get(current)

    def checkpointed(self) -> None:
        self._written.clear()

    def room(self) -> int:
        """How many more batches may be taken off the queue (0: none)."""
        return max(0, self._hold_pages - self._pages)

    def next_batch(self) -> Batch:
        if self.run_ended():
            self._current = self._choose()
        assert self._current is not None
        self._written.add(self._current)
        _, batch = self._streams[self._current].popleft()
        self._pages -= 1
        return batch

    def _choose(self) -> str:
        waiting = [(stream, batches) for stream, batches in self._streams.items() if batches]
        # A batch held while more than `patience` others arrived goes first, so a stream with one last page is not
        # kept waiting behind busier ones for the rest of the sync.
        stream, oldest = min(((s, b[0][0]) for s, b in waiting), key=lambda pair: pair[1])
        if self._arrived - oldest > self._patience:
            return stream
        written = [pair for pair in waiting if pair[0] in self._written]
        return max(written or waiting, key=lambda pair: sum(len(b.rows) for _, b in pair[1]))[0]


async def _take_queued(receive: MemoryObjectReceiveStream[Batch], limit: int | None = None) -> list[Batch]:
    """Whatever is already queued (at most `limit` batches), without waiting (the end of the stream shows in the
    next waiting receive)."""
    batches: list[Batch] = []
    while limit is None or len(batches) < limit:
        try:
            batches.append(receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return batches


async def _receive_available(receive: MemoryObjectReceiveStream[Batch]) -> list[Batch]:
    """Wait for one batch, then take whatever else is already queued: one thread hop for many batches."""
    try:
        first = await receive.receive()
    except anyio.EndOfStream:
        return []
    return [first, *await _take_queued(receive)]


class _Slot(Generic[T]):
    __slots__ = ("done", "index", "result")

    def __init__(self, index: int) -> None:
        self.index = index
        self.done = anyio.Event()
        self.result: T | None = None


async def fetch_in_order(
    indices: Iterable[int],
    fetch: Callable[[int], Awaitable[T]],
    deliver: Callable[[int, T], Awaitable[bool]],
    *,
    window: int,
) -> None:
    """Fetch `indices` concurrently, at most `window` ahead of delivery, and deliver results in index order.

    `deliver` returns False to stop (e.g. the last page said has_more: false); fetches started beyond that point are
    cancelled. A failed fetch raises here and cancels the rest.
    """
    iterator = iter(indices)
    pending: deque[_Slot[T]] = deque()

    async def run(slot: _Slot[T]) -> None:
        slot.result = await fetch(slot.index)
        slot.done.set()

    async with anyio.create_task_group() as tg:
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                index = next(iterator, None)
                if index is None:
                    exhausted = True
                    break
                slot: _Slot[T] = _Slot(index)
                pending.append(slot)
                tg.start_soon(run, slot)
            if not pending:
                break
            head = pending.popleft()
            await head.done.wait()
            if not await deliver(head.index, head.result):  # type: ignore[arg-type]
                tg.cancel_scope.cancel()
                break
