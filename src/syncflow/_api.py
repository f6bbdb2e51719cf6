"""syncflow for scripts and notebooks: a few calls over the same engine the connector runs.

    import syncflow
    syncflow.list_streams("configuration.json")                        # ['accelo.companies', ...]
    result = syncflow.to_duckdb("configuration.json", "syncflow.duckdb")  # all streams, resumable
    for page in syncflow.extract("configuration.json", "accelo.jobs"):    # pages of typed rows, in order
        ...
    async with syncflow.extract_async("configuration.json", "accelo.jobs") as pages:  # the same, awaited
        async for page in pages:
            ...

The blocking calls are safe inside a running event loop (Jupyter): they fetch on their own event-loop thread, never
the caller's. The `*_async` calls run natively on the caller's (asyncio) loop: no thread, and cancelling them
(`asyncio.wait_for`, `task.cancel()`) stops every fetch before the cancellation returns.

Every public call takes the same `streams` (positional, after the configuration and the sink or path), `state` and
`progress` parameters, with the same defaults:
- `streams`: a name or names ("accelo.invoices", "invoices", "accelo"); None = every configured stream;
- `state`: a state saved from `.state`, a checkpoint or a `SyncResult`'s run; None = a full sync (for `to_duckdb`,
  None = the state saved in the file);
- `progress`: None = progress bars when someone is watching (Jupyter, a terminal), nothing otherwise; True = always
  (plain text lines where there is no terminal); False = never; or any `syncflow.Progress`.
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from ._config import Settings
from ._edge import ConfigurationLike, resolve_settings, resolve_transport
from ._pipeline import Batch, Progress, Sink, deliver
from ._source import Source
from ._state import StateDocument
from ._streams import Stream
from ._sync import AsyncSync, SyncResult, available_streams, iterate_sync, run_sync, select_streams

__all__ = [
    "AsyncExtraction",
    "Extraction",
    "Page",
    "extract",
    "extract_async",
    "iter_rows",
    "list_streams",
    "sync",
    "sync_async",
    "to_duckdb",
    "to_duckdb_async",
]

StreamsLike = str | Sequence[str | Stream] | None
ProgressLike = bool | Progress | None


def _settings(configuration: ConfigurationLike, sources: Sequence[Source] | None = None) -> Settings:
    return resolve_settings(configuration, sources)


def _names(streams: StreamsLike) -> list[str | Stream] | None:
    return [streams] if isinstance(streams, str) else (list(streams) if streams else None)


def _progress(progress: ProgressLike) -> Progress | None:
    """The one rule every public call follows (see the module docstring)."""
    if progress is None:
        try:
            # Absolute, not `from ._notebook`: the SDK's requirements check (pipreqs) drops the dot and would look up a
            # PyPI package named `_notebook` for a module the connector's package leaves out.
            from syncflow._notebook import watched
        except ImportError:
            return None  # the connector's package leaves the display module (and tqdm) out: nothing to show with
        if not watched():
            return None  # nobody is watching (a pipe, a log, CI): stay quiet unless asked
    if progress is None or progress is True:
        from syncflow._notebook import TqdmProgress  # only the Python API shows bars

        return TqdmProgress()
    return progress or None


def list_streams(configuration: ConfigurationLike, *, sources: Sequence[Source] | None = None) -> list[str]:
    """The streams this configuration can sync, as "source.table" (`sources`: plug-ins beyond the built-in ones)."""
    return [stream.key for stream in available_streams(_settings(configuration, sources))]


@dataclass(frozen=True)
class Page:
    """One page of typed rows of one stream ("source.table"), as `extract` and `extract_async` yield them, or of
    primary keys ({column: value}) deleted at the source (`deletes`)."""

    stream: str
    rows: Sequence[Mapping[str, Any]]
    deletes: Sequence[Mapping[str, Any]] = ()


class Extraction:
    """An iterator of pages, in order per stream (what `extract` returns). `state` covers exactly the pages iterated
    so far: save it and pass it to the next `extract` to resume. `result` is set once the iteration is complete."""

    def __init__(self, batches: Generator[Batch, None, SyncResult], state: StateDocument) -> None:
        self._batches = batches
        self._state = state
        self.result: SyncResult | None = None

    def __iter__(self) -> Iterator[Page]:
        return self

    def __next__(self) -> Page:
        while True:
            try:
                batch = next(self._batches)
            except StopIteration as done:
                self.result = done.value
                raise StopIteration from None
            if batch.rows or batch.deletes:
                return Page(batch.stream, batch.rows, batch.deletes)

    @property
    def state(self) -> dict[str, Any]:
        """A snapshot (a deep copy): iterating on does not change a state already taken."""
        return copy.deepcopy(self._state.as_dict())

    def close(self) -> None:
        """Stop early: cancels every fetch (the state still covers the pages iterated)."""
        self._batches.close()

    def __enter__(self) -> Extraction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncExtraction:
    """`Extraction` on the caller's event loop (what `extract_async` returns): an async context manager that owns
    the fetching tasks, and an async iterator of pages, in order per stream.

        async with syncflow.extract_async(configuration, "accelo.invoices") as pages:
            async for page in pages:
                ...
            saved = pages.state

    `state` covers exactly the pages iterated so far (a deep copy); `result` is set once iteration is complete.
    Leaving the `async with` (a `break`, an error, a cancellation) stops every fetch before it returns. Runs on
    asyncio only (the rate gate uses aiolimiter): under trio, entering it raises a RuntimeError saying so.
    """

    def __init__(self, run: AsyncSync, state: StateDocument) -> None:
        self._run = run
        self._state = state

    @property
    def result(self) -> SyncResult | None:
        """The sync's result once every page was iterated (None before)."""
        return self._run.result

    @property
    def state(self) -> dict[str, Any]:
        """A snapshot (a deep copy): iterating on does not change a state already taken."""
        return copy.deepcopy(self._state.as_dict())

    async def __aenter__(self) -> AsyncExtraction:
        await self._run.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        return await self._run.__aexit__(exc_type, exc, traceback)

    def __aiter__(self) -> AsyncExtraction:
        return self

    async def __anext__(self) -> Page:
        while True:
            batch = await self._run.__anext__()
            if batch.rows or batch.deletes:
                return Page(batch.stream, batch.rows, batch.deletes)


def extract(
    configuration: ConfigurationLike,
    streams: StreamsLike = None,
    *,
    state: Mapping[str, Any] | None = None,
    progress: ProgressLike = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sources: Sequence[Source] | None = None,
) -> Extraction:
    """Pages of typed rows from the chosen streams (all when None), starting from `state` (a full sync when None).
    `sources`: `syncflow.Source` plug-ins synced besides the built-in ones."""
    settings = _settings(configuration, sources)
    document = StateDocument.load(state, sources=settings.plugins)
    select_streams(settings, _names(streams))  # fail on a bad stream name now, not at the first next()
    batches = iterate_sync(
        settings, document, streams=_names(streams), transport=resolve_transport(settings, transport),
        progress=_progress(progress),
    )  # fmt: skip
    return Extraction(batches, document)


def extract_async(
    configuration: ConfigurationLike,
    streams: StreamsLike = None,
    *,
    state: Mapping[str, Any] | None = None,
    progress: ProgressLike = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sources: Sequence[Source] | None = None,
) -> AsyncExtraction:
    """`extract` on the caller's asyncio loop: `async with syncflow.extract_async(...) as pages: async for page in
    pages: ...` (see `AsyncExtraction`). A bad configuration or stream name fails here, before any request."""
    settings = _settings(configuration, sources)
    document = StateDocument.load(state, sources=settings.plugins)
    run = AsyncSync(
        settings, document, streams=_names(streams), transport=resolve_transport(settings, transport),
        progress=_progress(progress),
    )  # fmt: skip
    return AsyncExtraction(run, document)


def iter_rows(
    configuration: ConfigurationLike,
    stream: str,
    *,
    state: Mapping[str, Any] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sources: Sequence[Source] | None = None,
) -> Iterator[Mapping[str, Any]]:
    """Every typed row of one stream, in order."""
    with extract(configuration, stream, state=state, progress=False, transport=transport, sources=sources) as pages:
        for page in pages:
            yield from page.rows


def sync(
    configuration: ConfigurationLike,
    sink: Sink,
    streams: StreamsLike = None,
    *,
    state: Mapping[str, Any] | None = None,
    progress: ProgressLike = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sources: Sequence[Source] | None = None,
) -> SyncResult:
    """Sync into any object with `upsert(schema, table, row)` and `checkpoint(state)` (see `syncflow.Sink`).
    `sources`: `syncflow.Source` plug-ins synced besides the built-in ones."""
    settings = _settings(configuration, sources)
    return run_sync(
        settings, sink, StateDocument.load(state, sources=settings.plugins), streams=_names(streams),
        transport=resolve_transport(settings, transport), progress=_progress(progress),
    )  # fmt: skip


async def sync_async(
    configuration: ConfigurationLike,
    sink: Sink,
    streams: StreamsLike = None,
    *,
    state: Mapping[str, Any] | None = None,
    progress: ProgressLike = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sources: Sequence[Source] | None = None,
) -> SyncResult:
    """`sync` on the caller's asyncio loop: the sink is called on this thread, between awaits, in order.

    Cancellable: cancelling the awaiting task stops every fetch before the cancellation propagates, and the last
    checkpoint handed to the sink covers exactly the batches it was given. Asyncio only (not trio)."""
    settings = _settings(configuration, sources)
    run = AsyncSync(
        settings, StateDocument.load(state, sources=settings.plugins), streams=_names(streams),
        transport=resolve_transport(settings, transport), progress=_progress(progress), on_checkpoint=sink.checkpoint,
    )  # fmt: skip
    async with run as batches:
        async for batch in batches:
            deliver(sink, batch)
    assert run.result is not None  # the iteration ended without an error, so the result is set
    return run.result


def to_duckdb(
    configuration: ConfigurationLike,
    path: str | PathLike[str] = "syncflow.duckdb",
    streams: StreamsLike = None,
    *,
    state: Mapping[str, Any] | None = None,
    full_refresh: bool = False,
    progress: ProgressLike = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sources: Sequence[Source] | None = None,
) -> SyncResult:
    """Sync into a DuckDB file (tables `accelo.companies`, `awardco.user`, ...). The state lives in the same file,
    so running it again is incremental; `state` overrides the file's saved state, `full_refresh=True` starts over."""
    from syncflow._duckdb import DuckDBSink

    settings = _settings(configuration, sources)
    chosen = select_streams(settings, _names(streams))
    sink = DuckDBSink(Path(path), chosen)
    try:
        saved = None if full_refresh else (state if state is not None else sink.load_state())
        return run_sync(
            settings, sink, StateDocument.load(saved, sources=settings.plugins), streams=_names(streams),
            transport=resolve_transport(settings, transport), progress=_progress(progress),
            on_fetching=sink.prepare_writes,
        )  # fmt: skip
    finally:
        sink.close()


async def to_duckdb_async(
    configuration: ConfigurationLike,
    path: str | PathLike[str] = "syncflow.duckdb",
    streams: StreamsLike = None,
    *,
    state: Mapping[str, Any] | None = None,
    full_refresh: bool = False,
    progress: ProgressLike = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sources: Sequence[Source] | None = None,
) -> SyncResult:
    """`to_duckdb` on the caller's asyncio loop (rows are written on this thread, between awaits).

    Cancellable: cancelling stops every fetch before the cancellation propagates, closes the file (it can be opened
    again at once) and leaves the state saved in it covering exactly the rows written. Asyncio only (not trio)."""
    from syncflow._duckdb import DuckDBSink

    settings = _settings(configuration, sources)
    chosen = select_streams(settings, _names(streams))
    sink = DuckDBSink(Path(path), chosen)
    try:
        saved = None if full_refresh else (state if state is not None else sink.load_state())
        # The fetch starts inside sync_async, on this loop, with no hook between its start and the first batch: asked
        # here, the import contends with the loop's start, though no longer with the table set-up.
        sink.prepare_writes()
        return await sync_async(settings, sink, streams, state=saved, progress=progress, transport=transport)
    finally:
        sink.close()
