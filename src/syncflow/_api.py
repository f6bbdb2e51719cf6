"""syncflow for scripts and notebooks: a few calls over the same engine the connector runs.

    import syncflow
    syncflow.list_streams("configuration.json")                        # ['accelo.companies', ...]
    result = syncflow.to_duckdb("configuration.json", "syncflow.duckdb")  # all streams, resumable, with progress
    for page in syncflow.extract("configuration.json", "accelo.jobs"):    # pages of typed rows, in order
        ...

Everything here is blocking and safe to call inside a running event loop (Jupyter): the fetching runs on its own
event-loop thread, never on the caller's. `*_async` variants run the same work off the caller's loop, for those who
`await`.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import anyio
import httpx

from ._config import Settings, load_settings
from ._pipeline import Batch, Progress, Sink
from ._state import StateDocument
from ._streams import Stream
from ._sync import SyncResult, available_streams, iterate_sync, run_sync, select_streams

__all__ = [
    "Extraction",
    "Page",
    "extract",
    "iter_rows",
    "list_streams",
    "sync",
    "sync_async",
    "to_duckdb",
    "to_duckdb_async",
]

ConfigurationLike = Settings | Mapping[str, Any] | str | PathLike[str]


def _settings(configuration: ConfigurationLike) -> Settings:
    return configuration if isinstance(configuration, Settings) else load_settings(configuration)


def _names(streams: str | Sequence[str | Stream] | None) -> list[str | Stream] | None:
    return [streams] if isinstance(streams, str) else (list(streams) if streams else None)


def _progress(progress: bool | Progress) -> Progress | None:
    if progress is True:
        from ._notebook import TqdmProgress  # only the Python API shows bars (the connector's package leaves it out)

        return TqdmProgress()
    return progress or None


def list_streams(configuration: ConfigurationLike) -> list[str]:
    """The streams this configuration can sync, as "source.table"."""
    return [stream.key for stream in available_streams(_settings(configuration))]


@dataclass(frozen=True)
class Page:
    """One page of typed rows of one stream, or of primary keys ({column: value}) deleted at the source."""

    stream: str
    rows: Sequence[Mapping[str, Any]]
    deletes: Sequence[Mapping[str, Any]] = ()


class Extraction:
    """An iterator of pages, in order per stream. `state` covers exactly the pages iterated so far: save it and pass
    it to the next `extract` to resume. `result` is set once the iteration is complete."""

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


def extract(
    configuration: ConfigurationLike,
    streams: str | Sequence[str | Stream] | None = None,
    *,
    state: Mapping[str, Any] | None = None,
    progress: bool | Progress = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Extraction:
    """Pages of typed rows from the chosen streams (all when None), starting from `state` (a full sync when None)."""
    settings = _settings(configuration)
    document = StateDocument.load(state)
    select_streams(settings, _names(streams))  # fail on a bad stream name now, not at the first next()
    batches = iterate_sync(
        settings, document, streams=_names(streams), transport=transport, progress=_progress(progress)
    )
    return Extraction(batches, document)


def iter_rows(
    configuration: ConfigurationLike,
    stream: str,
    *,
    state: Mapping[str, Any] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Iterator[Mapping[str, Any]]:
    """Every typed row of one stream, in order."""
    with extract(configuration, stream, state=state, transport=transport) as pages:
        for page in pages:
            yield from page.rows


def sync(
    configuration: ConfigurationLike,
    sink: Sink,
    *,
    streams: str | Sequence[str | Stream] | None = None,
    state: Mapping[str, Any] | None = None,
    progress: bool | Progress = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SyncResult:
    """Sync into any object with `upsert(schema, table, row)` and `checkpoint(state)` (see `syncflow.Sink`)."""
    settings = _settings(configuration)
    return run_sync(
        settings, sink, StateDocument.load(state), streams=_names(streams), transport=transport,
        progress=_progress(progress),
    )  # fmt: skip


def to_duckdb(
    configuration: ConfigurationLike,
    path: str | PathLike[str] = "syncflow.duckdb",
    *,
    streams: str | Sequence[str | Stream] | None = None,
    state: Mapping[str, Any] | None = None,
    full_refresh: bool = False,
    progress: bool | Progress = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SyncResult:
    """Sync into a DuckDB file (tables `accelo.companies`, `awardco.user`, ...). The state lives in the same file,
    so running it again is incremental; `state` overrides the file's saved state, `full_refresh=True` starts over."""
    from ._duckdb import DuckDBSink

    settings = _settings(configuration)
    chosen = select_streams(settings, _names(streams))
    sink = DuckDBSink(Path(path), chosen)
    try:
        saved = None if full_refresh else (state if state is not None else sink.load_state())
        return run_sync(
            settings, sink, StateDocument.load(saved), streams=_names(streams), transport=transport,
            progress=_progress(progress),
        )  # fmt: skip
    finally:
        sink.close()


async def sync_async(configuration: ConfigurationLike, sink: Sink, **options: Any) -> SyncResult:
    """`sync`, awaited: runs on a worker thread so the caller's event loop stays free."""
    result: SyncResult = await anyio.to_thread.run_sync(functools.partial(sync, configuration, sink, **options))
    return result


async def to_duckdb_async(
    configuration: ConfigurationLike, path: str | PathLike[str] = "syncflow.duckdb", **options: Any
) -> SyncResult:
    """`to_duckdb`, awaited: runs on a worker thread so the caller's event loop stays free."""
    result: SyncResult = await anyio.to_thread.run_sync(functools.partial(to_duckdb, configuration, path, **options))
    return result
