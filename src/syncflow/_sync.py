"""One sync: build each API's client inside the event loop, run the sources concurrently, drain in order.

This module runs any `Source` (see `_source.py`) and names none: the configured plug-ins come from the settings,
each builds its own auth, and each labels its requests with the stream they belong to (the per-stream figures).

Each API gets its own `RateGate` (budget + server headers + in-flight cap), auth and retries. Streams fail alone:
- a stream that fails for good (retries exhausted, a 4xx, a body malformed on every try) is reported and the other
  streams of both APIs run to completion; a 403 skips its stream with a warning and does not fail the sync;
- refused credentials (401) end every stream of that API, and the other API carries on;
- a source whose budget runs out (`BudgetExhausted`) stops by itself and the sync ends cleanly with a warning.
Everything delivered is checkpointed before a failure is reported (`StreamsFailed`, naming the failed streams);
each failed stream resumes from its own last checkpoint. Anything else (a bug) cancels everything; the pipeline
still takes a final checkpoint of what was fully delivered.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import anyio
import httpx
from anyio.abc import ObjectSendStream

from ._config import Settings
from ._exceptions import (
    AuthenticationError,
    BudgetExhausted,
    ConfigurationError,
    PermissionDenied,
    SourceError,
    StreamsFailed,
    SyncflowError,
)
from ._http import ApiClient, RateGate, RequestStatistics, RetryPolicy
from ._http._body import ACCEPT_ENCODING
from ._http._limits import opening_needs_probe
from ._http._origin import cleartext_problem, origin_guard
from ._http._transport import api_transport
from ._pipeline import AsyncPipeline, Batch, DrainStatistics, Progress, Sink, drain_into, iterate_pipeline
from ._source import Source, SourceReport, SourceRun, fails_alone, permission_hint
from ._state import StateDocument
from ._streams import Stream
from ._version import __version__

__all__ = [
    "AsyncSync",
    "StreamSummary",
    "SyncResult",
    "available_streams",
    "iterate_sync",
    "run_sync",
    "select_streams",
]

logger = logging.getLogger("syncflow")

USER_AGENT = f"syncflow/{__version__} (+fivetran connector sdk)"


@dataclass(frozen=True)
class StreamSummary:
    """One stream's figures in a `SyncResult`: rows delivered, requests, retries, time, and how it ended."""

    rows: int
    requests: int
    retries: int
    rate_limited: int
    seconds: float
    # "completed"; "skipped" (a 403: the credentials may not read it); "failed" (for good: reason says why; it
    # resumes from its last checkpoint); "stopped" (its API's rate budget ran out; resumes next sync);
    # "not finished" (nothing to read yet, e.g. a saved cursor ahead of the server's clock).
    status: str = "completed"
    reason: str | None = None
    repaired: int = 0  # rows a reconciliation sweep upserted in this sync
    deleted: int = 0  # rows deleted (a completed sweep or full refresh)


@dataclass(frozen=True)
class SyncResult:
    """What a sync did: rows per stream, per-stream summaries, per-API request figures, warnings, and which
    streams completed, failed (resumed next sync) or were skipped."""

    rows: Mapping[str, int]
    streams: Mapping[str, StreamSummary]
    requests: Mapping[str, RequestStatistics]
    warnings: tuple[str, ...]
    completed: tuple[str, ...]
    stopped_early: bool
    failed: Mapping[str, str]  # stream -> why it failed for good
    skipped: Mapping[str, str]  # stream -> why it was skipped
    seconds: float
    checkpoints: int


def available_streams(settings: Settings) -> list[Stream]:
    """Every stream of every source the settings configure."""
    return [stream for plugin, _ in settings.configured() for stream in plugin.streams.values()]


def identify_sources(settings: Settings) -> dict[str, str]:
    """Where each configured source's data comes from, as recorded in the state (never a credential)."""
    mock = settings.mock
    where = f"simulator seed={mock.seed} scale={mock.scale:g}" if settings.use_mock else None
    return {plugin.name: where or found.fingerprint() for plugin, found in settings.configured()}


def select_streams(settings: Settings, names: Sequence[str | Stream] | None) -> list[Stream]:
    """The streams to sync: those named ("accelo.companies", "accelo.*", "companies", "accelo"), else those the
    `streams` key names, else every configured one. A `Stream` given itself (an Accelo resource declared with
    `syncflow.accelo_resource`) is synced as declared, if its source is configured."""
    streams = available_streams(settings)
    from_key = not names
    wanted: Sequence[str | Stream] = names or settings.streams
    if not wanted:
        return streams
    configured = {s.source for s in streams}
    chosen: list[Stream] = []
    for name in wanted:
        if isinstance(name, Stream):
            if name.source not in configured:
                raise ConfigurationError(f"streams: {name.key} belongs to {name.source}, which is not configured")
            matches = [name]
        else:
            source, _, table = name.partition(".")
            matches = [
                s for s in streams if name in (s.key, s.table, s.source) or (table == "*" and s.source == source)
            ]
        if not matches:
            known = ", ".join(s.key for s in streams)
            where = "the streams key" if from_key else "streams"
            raise ConfigurationError(f"{where}: unknown or unconfigured stream {name!r}; choose from {known}")
        chosen.extend(s for s in matches if s not in chosen)
    return chosen


def _leaves(exc: BaseException) -> list[BaseException]:
    nested = getattr(exc, "exceptions", None)
    if nested is None:
        return [exc]
    return [leaf for inner in nested for leaf in _leaves(inner)]


def _first_syncflow_error(exc: BaseException) -> SyncflowError | None:
    for leaf in _leaves(exc):
        if isinstance(leaf, SyncflowError):
            return leaf
    return None


#: The stream state key holding a sync's view of its API's rate window once less than a burst of it was left
#: (`RateGate.last_window`): the next sync's opening probes while that window lasts (`opening_needs_probe`).
RATE_WINDOW = "rate_window"


class _NotingSend(ObjectSendStream[Batch]):
    """The send stream one source writes to. Every batch passes through; the streams that sent one are noted; and
    while the gate's window has less than a burst left, each batch also saves that view in its stream's state. So the
    view is checkpointed with the rows as they go (a sync killed there keeps it), and a window that still holds a
    burst's worth writes nothing: the next sync's opening goes together either way."""

    def __init__(self, inner: ObjectSendStream[Batch], gate: RateGate, burst: int) -> None:
        self._inner = inner
        self._gate = gate
        self._burst = burst
        self.keys: set[str] = set()

    async def send(self, item: Batch) -> None:
        self.keys.add(item.stream)
        view = self._gate.last_window()
        if view is not None and view["remaining"] < self._burst:
            item = replace(item, patch=[*item.patch, ((RATE_WINDOW,), view)])
        await self._inner.send(item)

    async def spent(self, streams: Mapping[str, Stream], finished: Iterable[str]) -> None:
        """The source stopped on a spent budget: its unfinished streams that wrote save the gate's view (the
        next sync resumes them; a 429's `Retry-After` may have said so after their last batch)."""
        view = self._gate.last_window()
        if view is None:
            return
        done = set(finished)
        for key in sorted(self.keys - done):
            stream = streams.get(key)
            if stream is not None:
                await self._inner.send(Batch(key, stream.source, stream.table, [], [((RATE_WINDOW,), view)]))

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Producer:
    def __init__(
        self,
        settings: Settings,
        streams: list[Stream],
        prior: Mapping[str, Mapping[str, Any]],
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.settings = settings
        self.streams = streams
        self.prior = prior
        self.transport = transport
        self.clients: dict[str, ApiClient] = {}
        self._tls: ssl.SSLContext | None = None

    def _verify(self, base_url: str) -> ssl.SSLContext:
        """The TLS context of an API's client: one per sync, shared by every API.

        Each httpx client would otherwise load the CA bundle itself (~0.05 s of CPU each, on the event-loop thread,
        before the first request). A cleartext base URL (http://, which only loopback may use) needs no CA at all: it
        gets a context that trusts none, so a TLS connection made through it could only fail verification.
        """
        if base_url.lower().startswith("http://"):
            return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # certificates and hostnames required; no CA trusted
        if self._tls is None:
            chosen = tls_verification(self.settings)
            self._tls = chosen if isinstance(chosen, ssl.SSLContext) else httpx.create_ssl_context()
        return self._tls

    def _http(self, base_url: str, api: str) -> httpx.AsyncClient:
        concurrency = self.settings.max_concurrency
        timeout = self.settings.request_timeout_seconds
        key = f"{api}_base_url"
        # Settings built in code skip the configuration's check; an in-process transport never reaches a network.
        if self.transport is None or isinstance(self.transport, httpx.AsyncHTTPTransport):
            problem = cleartext_problem(base_url, key)
            if problem is not None:
                raise ConfigurationError(problem)
        verify = self._verify(base_url)
        limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
        return httpx.AsyncClient(
            base_url=base_url,
            transport=self.transport if self.transport is not None else api_transport(verify, limits),
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            limits=limits,
            headers={"Accept": "application/json", "Accept-Encoding": ACCEPT_ENCODING, "User-Agent": USER_AGENT},
            # A redirect could carry credentials to another origin: it is reported with its Location instead.
            follow_redirects=False,
            event_hooks={"request": [origin_guard(base_url, api=api, key=key)]},
        )

    def _retry(self) -> RetryPolicy:
        return RetryPolicy(max_time=self.settings.max_retry_seconds)

    def _gate(self, api: str, per_hour: int, prior: Mapping[str, Mapping[str, Any]] | None = None) -> RateGate:
        # A sync's opening requests go together unless an earlier sync's view of the server's window (`_NotingSend`)
        # says this window is still current and nearly spent; see `RateGate`. Without a `prior` (the setup test's
        # reads), the first request probes.
        concurrency = self.settings.max_concurrency
        probe = prior is None or any(
            opening_needs_probe(entry.get(RATE_WINDOW), now=time.time(), burst=concurrency) for entry in prior.values()
        )
        return RateGate(
            api,
            requests_per_hour=per_hour,
            max_concurrency=concurrency,
            max_wait=self.settings.max_rate_limit_wait_seconds,
            probe_opening=probe,
        )

    async def __call__(self, send: ObjectSendStream[Batch]) -> list[SourceReport]:
        reports: list[SourceReport] = []
        async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
            for plugin, found in self.settings.configured():
                tables = [s.table for s in self.streams if s.source == plugin.name]
                if not tables:
                    continue
                name = plugin.name
                prior = {key: entry for key, entry in self.prior.items() if key.split(".", 1)[0] == name}
                http = await stack.enter_async_context(self._http(found.base_url, name))
                auth = found.authenticator(http, api=name, max_response_bytes=self.settings.max_response_bytes)
                client = ApiClient(
                    name, http, auth=auth, gate=self._gate(name, found.requests_per_hour, prior),
                    retry=self._retry(), max_response_bytes=self.settings.max_response_bytes,
                )  # fmt: skip
                self.clients[name] = client
                # Kept even if the source fails: it says which streams completed before.
                report = SourceReport(name, grant=plugin.permission_hint)
                reports.append(report)
                noting = _NotingSend(send, client.gate, self.settings.max_concurrency)
                run = SourceRun(
                    name=name, settings=found, client=client, send=noting, tables=tables, prior=prior,
                    report=report, concurrency=self.settings.max_concurrency, start_date=self.settings.start_date,
                    clock_now=time.time(), reconcile_every_seconds=self.settings.reconcile_every_hours * 3600,
                    sweep_requests=self._sweep_requests(found.requests_per_hour),
                    chosen={s.table: s for s in self.streams if s.source == name},
                )  # fmt: skip
                tg.start_soon(self._run, plugin, run, noting)
        return reports

    def _sweep_requests(self, per_hour: int) -> int:
        configured = self.settings.reconcile_max_requests
        return configured if configured is not None else max(1, per_hour // 4)

    async def _run(self, source: Source, run: SourceRun, noting: _NotingSend) -> None:
        report = run.report
        try:
            await source.run(run)
        except BaseException as exc:
            leaves = _leaves(exc)
            if leaves and all(isinstance(leaf, BudgetExhausted) for leaf in leaves):
                # Only this source ran out of budget: what it delivered is in the state; the next sync carries on.
                message = f"{leaves[0]}; delivered rows are checkpointed and the next sync resumes"
                logger.warning("%s", message)
                report.warnings.append(message)
                report.stopped_early = True
                await noting.spent({s.key: s for s in self.streams}, report.completed)
                return
            errors = fails_alone(exc)
            if errors is None:
                # Refused credentials end this API's streams, not the other API's. Anything else is not ours to
                # contain (a bug, a cancellation): it fails the sync, after the pipeline's final checkpoint.
                refused: list[SourceError] = [leaf for leaf in leaves if isinstance(leaf, AuthenticationError)]
                if not refused or not all(isinstance(leaf, SourceError) for leaf in leaves):
                    raise
                errors = refused
            self._record_unfinished(source, list(run.tables), errors, report)

    def _record_unfinished(
        self, source: Source, tables: list[str], errors: list[SourceError], report: SourceReport
    ) -> None:
        done = {*report.completed, *report.failed, *report.skipped}
        unfinished = [(table, key) for table, key in ((t, f"{source.name}.{t}") for t in tables) if key not in done]
        if all(isinstance(error, PermissionDenied) for error in errors):
            for table, key in unfinished:
                message = permission_hint(key, errors[0], source.permission_hint(table))
                logger.warning("%s", message)
                report.warnings.append(message)
                report.skipped[key] = str(errors[0])
            return
        first = next(error for error in errors if not isinstance(error, PermissionDenied))
        for _, key in unfinished:
            report.failed[key] = first
        logger.warning("%s failed: %s; the other streams carry on", ", ".join(k for _, k in unfinished), first)


def tls_verification(settings: Settings) -> ssl.SSLContext | bool:
    """httpx's `verify`: always on; with `ca_bundle`, a context trusting that bundle (hostnames still checked)."""
    if settings.ca_bundle is None:
        return True
    return ssl.create_default_context(cafile=str(settings.ca_bundle))


def iterate_sync(
    settings: Settings,
    state: StateDocument,
    *,
    streams: Sequence[str | Stream] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    progress: Progress | None = None,
    on_checkpoint: Callable[[Mapping[str, Any]], None] | None = None,
    hold_pages: int = 0,
    on_fetching: Callable[[], None] | None = None,
) -> Generator[Batch, None, SyncResult]:
    """Yield the chosen streams' batches, each stream's in order, from `state` (updated as each yielded batch is
    finished); `hold_pages` and `on_fetching` as in `iterate_pipeline`."""
    run = _prepare(settings, state, streams, transport, progress)
    try:
        reports = yield from iterate_pipeline(
            run.producer,
            state,
            queue_pages=settings.queue_pages,
            checkpoint_every_rows=settings.checkpoint_every_rows,
            checkpoint_every_seconds=settings.checkpoint_every_seconds,
            on_checkpoint=on_checkpoint,
            progress=progress,
            stats=run.drained,
            hold_pages=hold_pages,
            on_fetching=on_fetching,
        )
    except BaseException as exc:
        first = _surfaced(exc)
        if first is None:
            raise
        raise first from exc
    finally:
        if progress is not None:
            progress.close()
    return _conclude(run, reports)


class AsyncSync:
    """`iterate_sync` on the caller's event loop (`async with` / `async for` over batches): the same preparation,
    the same pipeline drain (`AsyncPipeline`), the same result and `StreamsFailed`; no thread, no portal."""

    def __init__(
        self,
        settings: Settings,
        state: StateDocument,
        *,
        streams: Sequence[str | Stream] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        progress: Progress | None = None,
        on_checkpoint: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self._progress = progress
        self._run = _prepare(settings, state, streams, transport, progress)
        self._pipeline = AsyncPipeline(
            self._run.producer, state, queue_pages=settings.queue_pages,
            checkpoint_every_rows=settings.checkpoint_every_rows,
            checkpoint_every_seconds=settings.checkpoint_every_seconds, on_checkpoint=on_checkpoint,
            progress=progress, stats=self._run.drained,
        )  # fmt: skip
        self.result: SyncResult | None = None

    async def __aenter__(self) -> AsyncSync:
        try:
            await self._pipeline.__aenter__()
        except BaseException:
            if self._progress is not None:
                self._progress.close()  # __aexit__ will not run
            raise
        return self

    def __aiter__(self) -> AsyncSync:
        return self

    async def __anext__(self) -> Batch:
        try:
            return await self._pipeline.__anext__()
        except StopAsyncIteration:
            self.result = _conclude(self._run, self._pipeline.result)  # raises StreamsFailed after the checkpoint
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        try:
            return await self._pipeline.__aexit__(exc_type, exc, traceback)
        except BaseException as failure:
            first = _surfaced(failure)
            if first is None:
                raise
            raise first from failure
        finally:
            if self._progress is not None:
                self._progress.close()


@dataclass
class _Run:
    """One sync's parts that outlive the pipeline: what was chosen, the producer (its clients' figures)."""

    chosen: list[Stream]
    producer: _Producer
    changes: list[str]
    drained: DrainStatistics = field(default_factory=DrainStatistics)


def _prepare(
    settings: Settings,
    state: StateDocument,
    streams: Sequence[str | Stream] | None,
    transport: httpx.AsyncBaseTransport | None,
    progress: Progress | None,
) -> _Run:
    chosen = select_streams(settings, streams)
    if transport is None and settings.use_mock:
        # Mock mode is resolved where the user enters (the engine never imports the simulator).
        raise ConfigurationError(
            "use_mock: these settings need the simulator's transport; pass transport=syncflow.sim.mock_transport("
            "settings), or call syncflow.sync/extract/to_duckdb, which do"
        )
    # A state saved from another source (say, the mock) must not be applied to this one.
    changes = state.adopt_sources({name: who for name, who in identify_sources(settings).items()})
    for line in changes:
        logger.warning("%s", line)
    prior = {stream.key: state.stream(stream.key) for stream in chosen}
    producer = _Producer(settings, chosen, prior, transport)
    if progress is not None:
        progress.on_start(lambda: {api: client.gate.statistics() for api, client in list(producer.clients.items())})
    return _Run(chosen, producer, changes)


def _surfaced(exc: BaseException) -> SyncflowError | None:
    """The error to raise for a task group's exception group: its first syncflow error (None: raise it as is)."""
    if getattr(exc, "exceptions", None) is None:
        return None
    return _first_syncflow_error(exc)


def _conclude(run: _Run, reports: list[SourceReport]) -> SyncResult:
    if run.changes:
        reports.append(SourceReport("state", warnings=run.changes))
    # The pipeline has checkpointed everything delivered; only now is a failure reported.
    result = _result(run.producer, run.chosen, reports, run.drained)
    failures = {key: error for report in reports for key, error in report.failed.items()}
    if failures:
        raise StreamsFailed(_failure_message(failures, result), failures=failures, result=result)
    return result


def _failure_message(failures: Mapping[str, SyncflowError], result: SyncResult) -> str:
    """One line: which streams failed and why (streams failing for the same reason grouped), and what completed."""
    by_reason: dict[str, list[str]] = {}
    for key, error in sorted(failures.items()):
        by_reason.setdefault(str(error), []).append(key)
    parts = [f"{', '.join(keys)} failed: {reason}" for reason, keys in by_reason.items()]
    completed = sorted(result.completed)
    others = (
        f"the other streams completed and are checkpointed ({', '.join(completed)})"
        if completed
        else "no other stream completed"
    )
    if result.skipped:
        others += f"; skipped (no permission): {', '.join(sorted(result.skipped))}"
    stopped = sorted(key for key, summary in result.streams.items() if summary.status == "stopped")
    if stopped:
        others += f"; stopped by the rate budget (resumed next sync): {', '.join(stopped)}"
    return f"{'; '.join(parts)}. {others}; the failed streams resume from their last checkpoint next sync"


def run_sync(
    settings: Settings,
    sink: Sink,
    state: StateDocument,
    *,
    streams: Sequence[str | Stream] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    progress: Progress | None = None,
    on_fetching: Callable[[], None] | None = None,
) -> SyncResult:
    """Sync the chosen streams into `sink`, starting from `state` (which is updated as rows are delivered);
    `on_fetching` as in `iterate_pipeline`."""
    # A sink writes at each checkpoint every table it has rows waiting for (the SDK's runner: a dozen DuckDB
    # statements a table); holding up to two queues' worth of pages lets the drain hand them over a table at a time.
    batches = iterate_sync(
        settings, state, streams=streams, transport=transport, progress=progress, on_checkpoint=sink.checkpoint,
        hold_pages=2 * settings.queue_pages, on_fetching=on_fetching,
    )  # fmt: skip
    return drain_into(sink, batches)


def _result(
    producer: _Producer, chosen: list[Stream], reports: list[SourceReport], drained: DrainStatistics
) -> SyncResult:
    streams: dict[str, StreamSummary] = {}
    for stream in chosen:
        client = producer.clients.get(stream.source)
        # The source labels each request with its stream: no guessing from URL paths.
        mine = client.statistics().by_stream.get(stream.key) if client is not None else None
        first, last = drained.spans.get(stream.key, (0.0, 0.0))
        status, reason = _status(stream, reports)
        streams[stream.key] = StreamSummary(
            rows=drained.rows.get(stream.key, 0),
            requests=mine.requests if mine else 0,
            retries=mine.retries if mine else 0,
            rate_limited=mine.rate_limited if mine else 0,
            seconds=last - first,
            status=status,
            reason=reason,
            repaired=sum(r.repaired.get(stream.key, 0) for r in reports),
            deleted=sum(r.deleted.get(stream.key, 0) for r in reports),
        )
    return SyncResult(
        streams=streams,
        rows=dict(drained.rows),
        requests={api: client.statistics() for api, client in producer.clients.items()},
        warnings=tuple(w for r in reports for w in r.warnings),
        completed=tuple(s for r in reports for s in r.completed),
        stopped_early=any(r.stopped_early for r in reports),
        failed={key: str(error) for r in reports for key, error in r.failed.items()},
        skipped={key: why for r in reports for key, why in r.skipped.items()},
        seconds=drained.seconds,
        checkpoints=drained.checkpoints,
    )


def _status(stream: Stream, reports: list[SourceReport]) -> tuple[str, str | None]:
    for report in reports:
        if stream.key in report.failed:
            return "failed", str(report.failed[stream.key])
        if stream.key in report.skipped:
            return "skipped", report.skipped[stream.key]
        if stream.key in report.completed:
            return "completed", None
        if report.source == stream.source and report.stopped_early:
            return "stopped", "the rate budget ran out; the next sync resumes it"
    return "not finished", "nothing to read yet"
