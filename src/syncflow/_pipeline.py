"""The ordered pipeline: fetch concurrently on an event-loop thread, write in order on the caller's thread.

    event-loop thread (anyio, asyncio backend)          caller's thread (the SDK's update())
    producers ──send(Batch)──▶ bounded memory stream ──▶ drain: sink.upsert(row) for each row,
                                (back-pressure)                 then sink.delete(keys) if any,
                                                                 then state.apply(batch.patch),
                                                                 sink.checkpoint(state) now and then

Invariants, each relied on by the resume guarantee:
- Only the drain calls the sink, so `op.*` runs on the thread that called `update()`.
- A batch's state patch is applied after all of its rows are upserted and its deletes sent; a checkpoint is the
  state as of the last applied patch, so it never covers a row that was not upserted.
- Producers send a stream's (or a slice's) batches in order, so patches arrive in order per slice.
- The stream is bounded (`queue_pages`): a slow drain stalls the fetchers, memory does not grow with the data.
- Streams fail alone (their sources contain a stream's failure); an error that reaches the pipeline cancels every
  fetch, and on every exit path (an error, cancellation, KeyboardInterrupt, the consumer closing the generator) a
  final checkpoint records the state as of the last batch whose rows were all upserted.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import anyio
from anyio.abc import ObjectSendStream
from anyio.from_thread import start_blocking_portal
from anyio.streams.memory import MemoryObjectReceiveStream

from ._state import StateDocument, StatePatch

__all__ = [
    "Batch",
    "DrainStatistics",
    "Progress",
    "Sink",
    "drain_into",
    "fetch_in_order",
    "iterate_pipeline",
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
    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None: ...

    def delete(self, schema: str, table: str, keys: Sequence[Mapping[str, Any]]) -> None:
        """Soft-delete the rows with these primary keys (each a {column: value} mapping)."""

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        """Persist `state`. Serialise it before returning: the drain keeps changing the same object."""


class Progress(Protocol):
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
) -> Generator[Batch, None, T]:
    """Run `produce` on a new event-loop thread; yield its batches here, in order; return its result.

    The consumer handles a batch (upserts its rows) before asking for the next one; only then is the batch's state
    patch applied, so `state` (and every `on_checkpoint`) covers exactly the batches the consumer has finished.
    Closing the generator early cancels every fetch; on that and every other way out (an error, an interrupt) a final
    checkpoint records the state as of the last batch the consumer finished.
    """
    stats = stats if stats is not None else DrainStatistics()
    started = time.monotonic()
    applied_since_checkpoint = False
    with start_blocking_portal(backend="asyncio") as portal:
        send, receive = portal.call(_open_stream, queue_pages)
        future = portal.start_task_soon(_produce_then_close, produce, send)
        rows_since = 0
        last_checkpoint = time.monotonic()
        try:
            while True:
                batches = portal.call(_receive_available, receive)
                if not batches:
                    break  # the producers are done (or failed: future.result() below says which)
                for batch in batches:
                    yield batch
                    state.apply(batch.stream, batch.patch)
                    applied_since_checkpoint = True
                    stats.batches += 1
                    stats.rows[batch.stream] = stats.rows.get(batch.stream, 0) + len(batch.rows)
                    rows_since += len(batch.rows)
                    if progress is not None:
                        progress.on_batch(batch)
                    now = time.monotonic()
                    stats.spans[batch.stream] = (stats.spans.get(batch.stream, (started, now))[0], now)
                    due = rows_since >= checkpoint_every_rows or now - last_checkpoint >= checkpoint_every_seconds
                    if on_checkpoint is not None and due:
                        on_checkpoint(state.as_dict())
                        stats.checkpoints += 1
                        applied_since_checkpoint = False
                        rows_since = 0
                        last_checkpoint = now
            result = future.result()
        except BaseException as exc:
            future.cancel()
            # Whatever ended the sync (a failed producer, a cancelled or interrupted drain, the consumer closing us
            # mid-batch), `state` holds only patches of batches whose rows were all upserted: checkpoint it, so the
            # destination keeps those rows instead of dropping everything after the last periodic checkpoint.
            if on_checkpoint is not None and applied_since_checkpoint:
                _final_checkpoint(on_checkpoint, state, stats, exc)
            raise
        finally:
            portal.call(receive.aclose)
            stats.seconds = time.monotonic() - started
    # Everything drained and the producers succeeded: the state covers every row.
    if on_checkpoint is not None:
        on_checkpoint(state.as_dict())
        stats.checkpoints += 1
    return result


def _final_checkpoint(
    on_checkpoint: Callable[[Mapping[str, Any]], None],
    state: StateDocument,
    stats: DrainStatistics,
    cause: BaseException,
) -> None:
    """The checkpoint taken on the way out of a failed sync. The failure that ended the sync stays the one raised:
    if this checkpoint fails too (a sink that broke), that is logged, and the previous checkpoint still holds."""
    try:
        on_checkpoint(state.as_dict())
    except Exception as exc:
        logger.error("could not checkpoint on the way out (%s: %s) after: %s", type(exc).__name__, exc, cause)
        return
    stats.checkpoints += 1


def run_pipeline(
    produce: Producer[T],
    sink: Sink,
    state: StateDocument,
    *,
    queue_pages: int,
    checkpoint_every_rows: int,
    checkpoint_every_seconds: float,
    progress: Progress | None = None,
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
    )
    return drain_into(sink, batches), stats


def drain_into(sink: Sink, batches: Generator[Batch, None, T]) -> T:
    """Upsert every batch's rows (then send its deletes) into `sink`, in order, on this thread; return the
    generator's result.

    The generator applies each batch's state patch (and checkpoints into the sink) when asked for the next one, i.e.
    only after this loop has upserted the batch's rows and deleted its keys.
    """
    upsert = sink.upsert
    while True:
        try:
            batch = next(batches)
        except StopIteration as done:
            result: T = done.value
            return result
        schema, table = batch.schema, batch.table
        try:
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


async def _receive_available(receive: MemoryObjectReceiveStream[Batch]) -> list[Batch]:
    """Wait for one batch, then take whatever else is already queued: one thread hop for many batches."""
    try:
        batches = [await receive.receive()]
    except anyio.EndOfStream:
        return []
    while True:
        try:
            batches.append(receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return batches


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
