"""One sync: build each API's client inside the event loop, run the sources concurrently, drain in order.

Each API gets its own `RateGate` (budget + server headers + in-flight cap), auth and retries. A source whose budget
runs out (`BudgetExhausted`) stops by itself: what it delivered is checkpointed, the other source carries on, and the
sync ends cleanly with a warning. Any other error cancels everything and fails the sync with one clear message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from anyio.abc import ObjectSendStream

from ._config import Settings
from ._exceptions import BudgetExhausted, ConfigurationError, SyncflowError
from ._http import ApiClient, ApiKeyAuth, OAuth2ClientCredentials, RateGate, RequestStatistics, RetryPolicy
from ._pipeline import Batch, DrainStatistics, Progress, Sink, drain_into, iterate_pipeline
from ._state import StateDocument
from ._streams import Stream
from .sources import ACCELO_STREAMS, AWARDCO_STREAMS, AcceloSource, AwardcoSource
from .sources._common import SourceReport

__all__ = [
    "StreamSummary",
    "SyncResult",
    "available_streams",
    "iterate_sync",
    "make_simulator",
    "run_sync",
    "select_streams",
]

logger = logging.getLogger("syncflow")

USER_AGENT = "syncflow/0.1 (+fivetran connector sdk)"


@dataclass(frozen=True)
class StreamSummary:
    rows: int
    requests: int
    retries: int
    rate_limited: int
    seconds: float
    repaired: int = 0  # rows a reconciliation sweep upserted in this sync
    deleted: int = 0  # rows deleted (a completed sweep or full refresh)


@dataclass(frozen=True)
class SyncResult:
    rows: Mapping[str, int]
    streams: Mapping[str, StreamSummary]
    requests: Mapping[str, RequestStatistics]
    warnings: tuple[str, ...]
    completed: tuple[str, ...]
    stopped_early: bool
    seconds: float
    checkpoints: int
    simulator: Any = field(default=None, repr=False)  # the in-process simulator when use_mock (for inspection)


def available_streams(settings: Settings) -> list[Stream]:
    streams: list[Stream] = []
    if settings.accelo is not None:
        streams.extend(ACCELO_STREAMS.values())
    if settings.awardco is not None:
        streams.extend(AWARDCO_STREAMS.values())
    return streams


def select_streams(settings: Settings, names: Sequence[str] | None) -> list[Stream]:
    """The streams to sync: all configured ones, or those named ("accelo.companies", "companies", "accelo")."""
    streams = available_streams(settings)
    if not names:
        return streams
    chosen: list[Stream] = []
    for name in names:
        matches = [s for s in streams if name in (s.key, s.table, s.source)]
        if not matches:
            known = ", ".join(s.key for s in streams)
            raise ConfigurationError(f"streams: unknown or unconfigured stream {name!r}; choose from {known}")
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

    def _http(self, base_url: str) -> httpx.AsyncClient:
        concurrency = self.settings.max_concurrency
        timeout = self.settings.request_timeout_seconds
        return httpx.AsyncClient(
            base_url=base_url,
            transport=self.transport,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            limits=httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    def _retry(self) -> RetryPolicy:
        return RetryPolicy(max_tries=self.settings.max_retries + 1, max_time=self.settings.max_retry_seconds)

    def _gate(self, api: str, per_hour: int) -> RateGate:
        return RateGate(
            api,
            requests_per_hour=per_hour,
            max_concurrency=self.settings.max_concurrency,
            max_wait=self.settings.max_rate_limit_wait_seconds,
        )

    async def __call__(self, send: ObjectSendStream[Batch]) -> list[SourceReport]:
        reports: list[SourceReport] = []
        tables = {source: [s.table for s in self.streams if s.source == source] for source in ("accelo", "awardco")}
        async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
            accelo = self.settings.accelo
            if accelo is not None and tables["accelo"]:
                http = await stack.enter_async_context(self._http(accelo.base_url))
                auth = OAuth2ClientCredentials(
                    http, "/oauth2/v0/token", api="accelo", client_id=accelo.client_id,
                    client_secret=accelo.client_secret,
                )  # fmt: skip
                client = ApiClient(
                    "accelo", http, auth=auth, gate=self._gate("accelo", accelo.requests_per_hour), retry=self._retry()
                )
                self.clients["accelo"] = client
                source_a = AcceloSource(
                    client, auth, send, concurrency=self.settings.max_concurrency,
                    start_date=self.settings.start_date, clock_now=time.time(),
                    reconcile_every_seconds=self.settings.reconcile_every_hours * 3600,
                    sweep_requests=self._sweep_requests(accelo.requests_per_hour),
                )  # fmt: skip
                tg.start_soon(self._run, source_a, tables["accelo"], reports)
            awardco = self.settings.awardco
            if awardco is not None and tables["awardco"]:
                http = await stack.enter_async_context(self._http(awardco.base_url))
                client = ApiClient(
                    "awardco", http, auth=ApiKeyAuth(awardco.api_key),
                    gate=self._gate("awardco", awardco.requests_per_hour), retry=self._retry(),
                )  # fmt: skip
                self.clients["awardco"] = client
                source_w = AwardcoSource(
                    client, send, concurrency=self.settings.max_concurrency, start_date=self.settings.start_date,
                    updated_since_param=awardco.updated_since_param, clock_now=time.time(),
                    reconcile_every_seconds=self.settings.reconcile_every_hours * 3600,
                    sweep_requests=self._sweep_requests(awardco.requests_per_hour),
                )  # fmt: skip
                tg.start_soon(self._run, source_w, tables["awardco"], reports)
        return reports

    def _sweep_requests(self, per_hour: int) -> int:
        configured = self.settings.reconcile_max_requests
        return configured if configured is not None else max(1, per_hour // 4)

    async def _run(self, source: AcceloSource | AwardcoSource, tables: list[str], reports: list[SourceReport]) -> None:
        try:
            reports.append(await source.run(self.prior, tables))
        except BaseException as exc:
            leaves = _leaves(exc)
            budget = [leaf for leaf in leaves if isinstance(leaf, BudgetExhausted)]
            if not budget or len(budget) != len(leaves):
                raise
            # Only this source ran out of budget: what it delivered is in the state; the next sync carries on.
            message = f"{budget[0]}; delivered rows are checkpointed and the next sync resumes"
            logger.warning("%s", message)
            reports.append(SourceReport(source.name, warnings=[message], stopped_early=True))


def iterate_sync(
    settings: Settings,
    state: StateDocument,
    *,
    streams: Sequence[str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    progress: Progress | None = None,
    on_checkpoint: Callable[[Mapping[str, Any]], None] | None = None,
) -> Generator[Batch, None, SyncResult]:
    """Yield the chosen streams' batches in order, from `state` (updated as each yielded batch is finished)."""
    chosen = select_streams(settings, streams)
    simulator = None
    if transport is None and settings.use_mock:
        simulator = make_simulator(settings)
        transport = simulator.transport()
    prior = {stream.key: state.stream(stream.key) for stream in chosen}
    producer = _Producer(settings, chosen, prior, transport)
    if progress is not None:
        progress.on_start(lambda: {api: client.gate.statistics() for api, client in list(producer.clients.items())})
    drained = DrainStatistics()
    try:
        reports = yield from iterate_pipeline(
            producer,
            state,
            queue_pages=settings.queue_pages,
            checkpoint_every_rows=settings.checkpoint_every_rows,
            checkpoint_every_seconds=settings.checkpoint_every_seconds,
            on_checkpoint=on_checkpoint,
            progress=progress,
            stats=drained,
        )
    except BaseException as exc:
        if getattr(exc, "exceptions", None) is None:
            raise
        first = _first_syncflow_error(exc)
        if first is None:
            raise
        raise first from exc
    finally:
        if progress is not None:
            progress.close()
    return _result(producer, chosen, reports, drained, simulator)


def run_sync(
    settings: Settings,
    sink: Sink,
    state: StateDocument,
    *,
    streams: Sequence[str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    progress: Progress | None = None,
) -> SyncResult:
    """Sync the chosen streams into `sink`, starting from `state` (which is updated as rows are delivered)."""
    batches = iterate_sync(
        settings, state, streams=streams, transport=transport, progress=progress, on_checkpoint=sink.checkpoint
    )
    return drain_into(sink, batches)


def _result(
    producer: _Producer, chosen: list[Stream], reports: list[SourceReport], drained: DrainStatistics, simulator: Any
) -> SyncResult:
    streams: dict[str, StreamSummary] = {}
    for stream in chosen:
        client = producer.clients.get(stream.source)
        paths = client.statistics().by_path if client is not None else {}
        mine = [figures for path, figures in paths.items() if path in (stream.endpoint, f"{stream.endpoint}/count")]
        first, last = drained.spans.get(stream.key, (0.0, 0.0))
        streams[stream.key] = StreamSummary(
            rows=drained.rows.get(stream.key, 0),
            requests=sum(f.requests for f in mine),
            retries=sum(f.retries for f in mine),
            rate_limited=sum(f.rate_limited for f in mine),
            seconds=last - first,
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
        seconds=drained.seconds,
        checkpoints=drained.checkpoints,
        simulator=simulator,
    )


def make_simulator(settings: Settings) -> Any:
    """The in-process simulated APIs that `use_mock` syncs from."""
    from .sim import SimConfig, Simulator

    base = SimConfig()
    counts = {name: max(1, round(count * settings.mock.scale)) for name, count in base.accelo_counts.items()}
    return Simulator(
        SimConfig(
            seed=settings.mock.seed,
            accelo_counts=counts,
            awardco_users=max(1, round(base.awardco_users * settings.mock.scale)),
            latency=settings.mock.latency_seconds,
        )
    )
