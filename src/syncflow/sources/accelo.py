"""Accelo: six entities, incremental on date_modified (payments: date_created; staff: full refresh).

How one entity is read, and why:

- **A frozen window.** At sync start the upper bound is fixed to the server's clock `T` (the token response's `Date`
  header) and the lower bound is the saved cursor `c` less the lookback `L`: `<cursor>_after(c - L - 1)` (Accelo's
  `_after` is strict, so the cursor's own second is re-read) and `<cursor>_before(T)`. A record modified during the
  sync gets a date ≥ T, leaves the window, and is read by the next sync. Records can only *leave* the window during a
  sync. The lookback catches late commits: a long transaction stamps a record before T but makes it visible after
  its page was read.
- **The server's clock.** Bounds are the server's time, never ours: with no `Date` header they end a generous margin
  behind our clock, and a server clock that steps back mid-sync pulls the saved cursor back to the lowest time it
  reported (`ServerClock`), so what it stamps there is re-read.
- **Short pages.** A deployment may serve fewer rows than `_limit`; a short first page while `/count` says more
  remain sets the page size to what was served (warned once per sync). A short page ends a read only once the
  deployment has served a longer page (`page_ends`; the longest is kept in each stream's state as "served"),
  otherwise an empty page or the count does.
- **Id keyset pages.** Inside the window, pages are `id_greater_than(last id)` + `order_by_asc(id)`. A record that
  leaves the window cannot shift a later page (an offset page would skip one record).
- **Parallel slices.** `/count` says how many pages the window holds; the id order is cut into slices whose first
  pages are fetched at once by page number (`_page`), and each slice then continues by keyset up to the next slice's
  first id. Whatever moved between those first requests, every id between two slice starts belongs to exactly one
  slice, so nothing is missed or duplicated. Small tables stay at one or two requests (count + first page,
  together; the first page alone where it answers: an incremental window, or a list that held less than a page last
  time).
- **Resumable.** The state records, per slice, the last id upserted. A crash resumes the same window and skips
  finished slices; the cursor moves to T only when every slice is done.
- **Reconciliation** (`_reconcile`). Every `reconcile_every_hours`, after the incremental windows, an entity is swept
  whole: `id_greater_than(last id)` + `order_by_asc(id)` with no date filter, until a page comes back empty, or a
  short one that `page_ends` proves the last (a short page that is only a server's cap is not trusted as the end:
  ending early would delete live records). Every record is upserted (records with
  null, empty or zero dates arrive), and once the sweep completes the ids known but not returned are deleted. Staff,
  a full refresh, is swept by every completed refresh. Sweeps spend at most `reconcile_max_requests` per sync and
  continue in the next sync; the incremental windows run first, every sync.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypedDict, cast
from urllib.parse import urlsplit

import anyio
import httpx
from anyio.abc import ObjectSendStream

from .._config import ConfigReader, Key
from .._decode import PageDecoder
from .._exceptions import ConfigurationError, MalformedResponseError, StateError
from .._http import ApiClient, Authenticator, OAuth2ClientCredentials
from .._pagination import IdKeysetPaginator
from .._pipeline import Batch
from .._redaction import Secret
from .._source import SourceReport, SourceRun, report_conversions, run_alone, without_userinfo
from .._state import StatePatch
from .._streams import RowConverter, Stream
from .._time import parse_iso8601
from ._accelo_catalog import ACCELO_STREAMS, AcceloResource, accelo_resource
from ._reconcile import KeyTracker, SweepBudget

__all__ = [
    "ACCELO_STREAMS",
    "AcceloSettings",
    "AcceloSource",
    "AcceloStreamState",
    "SliceState",
    "WindowState",
    "allocate_slices",
]

logger = logging.getLogger("syncflow")

TOKEN_PATH = "/oauth2/v0/token"
PAGE_LIMIT = 100  # the API's maximum
# A slice costs at most one request more than its pages (to learn it ended), so slices are only cut for work of at
# least this many pages.
MIN_PAGES_PER_SLICE = 4
# Slices cut per request slot (`max_concurrency`). Each slice is a chain of requests, one after the other; with one
# slice per slot, a slot whose slice ends early (a smaller table's, or one whose pages came back fast) stays idle
# until the longest chain ends (measured at 150 ms: ~0.5 s of 16 slots idle at the tail, `benchmarks.timeline`).
# With twice as many slices as slots, the rate gate's fair semaphore shares the slots among the chains, so they
# all end about together, and the seed round (the slices' first pages) fills every slot. Seeds are data pages, so
# this costs no request beyond the one a slice may need to learn that it ended (none where its last page is short).
SLICES_PER_SLOT = 2
# How far behind the saved cursor the server's clock may be before a sync waits for it instead of skipping.
_MAX_WAIT_FOR_CURSOR_SECOND = 5
# When no response says what time the server has (no `Date` header), windows end this far behind our own clock: a
# bound must never pass what the server could already have stamped, and re-reading a quarter hour is cheap.
UNKNOWN_CLOCK_MARGIN_SECONDS = 900

# The six streams' declarations (columns, types, cursors) come from the docs fixture: see _accelo_catalog.py.

# Accelo stamps date_modified when a change starts, and a long transaction (a bulk edit, an import, a workflow
# cascade) commits seconds to minutes later. Five minutes covers those and a server clock a few minutes off, and
# costs no extra request on an incremental sync unless over a page of records changed in those five minutes.
DEFAULT_LOOKBACK_SECONDS = 300

KEYS: tuple[Key, ...] = (
    Key("accelo_deployment", "Accelo deployment", "Your deployment name: the 'acme' in acme.api.accelo.com.",
        placeholder="acme", aliases=("deployment",)),
    Key("accelo_client_id", "Accelo client ID", "The client ID of an Accelo service application "
        "(Accelo → Configuration → API).", placeholder="a1b2c3d4e5@acme.accelo.com", aliases=("client_id",)),
    Key("accelo_client_secret", "Accelo client secret", "The client secret of that service application.",
        "secret", aliases=("client_secret",)),
    Key("accelo_base_url", "Accelo base URL", "Optional: overrides https://{deployment}.api.accelo.com "
        "(proxies, tests). No trailing /api/v0.", "url", placeholder="https://acme.api.accelo.com"),
    Key("accelo_requests_per_hour", "Accelo requests per hour", "Client-side budget shared by every Accelo "
        "entity; the server's rate-limit headers also apply.", "integer", "5000", "5000", minimum=1),
    Key("accelo_lookback_seconds", "Accelo lookback (s)", "Each incremental Accelo window re-reads this many seconds "
        "before the saved cursor, for records committed late (long transactions) and a server clock a few minutes "
        "off.", "integer", str(DEFAULT_LOOKBACK_SECONDS), str(DEFAULT_LOOKBACK_SECONDS), minimum=0,
        maximum=7 * 24 * 3600),
)  # fmt: skip

# The example connector's state keys (ISO timestamps), per table; read once so its users resume.
_LEGACY_KEYS = {
    "companies": ("last_company_sync", "last_companies_sync"),
    "invoices": ("last_invoice_sync", "last_invoices_sync"),
    "payments": ("last_payment_sync", "last_payments_sync"),
    "prospects": ("last_prospect_sync", "last_prospects_sync"),
    "jobs": ("last_job_sync", "last_jobs_sync"),
}
# Its cursors could run ahead of what it delivered (max(newest, now()), a filter moved per page). Re-reading a day
# is harmless with upserts and recovers what it may have skipped at the edge.
LEGACY_LOOKBACK = timedelta(days=1)


class SliceState(TypedDict):
    """One slice of a window, in the state: ids [lo, hi) (None: open), the last id upserted, whether it ended."""

    lo: int | None
    hi: int | None
    after: int | None
    done: bool


class WindowState(TypedDict, total=False):
    """A window being read: its bounds (the cursor's seconds) and its slices (set once it is planned)."""

    lower: int | None
    upper: int | None
    slices: dict[str, SliceState]


class AcceloStreamState(TypedDict, total=False):
    """An Accelo stream's state entry: the cursor a finished window reached, and mid-sync the window being read."""

    cursor: int | None
    run: WindowState
    # Reconciliation (sources/_reconcile.py): the known ids ("keys"), a sweep under way ("sweep") and when the last
    # completed one started ("swept").


@dataclass(frozen=True)
class AcceloSettings:
    """Accelo's part of the configuration (`Settings.sources["accelo"]`, present when Accelo is configured)."""

    deployment: str
    client_id: str
    client_secret: Secret
    base_url: str
    requests_per_hour: int
    # How far each incremental window reaches back before the last one ended (late commits).
    lookback_seconds: int = DEFAULT_LOOKBACK_SECONDS

    def fingerprint(self) -> str:
        return f"deployment {self.deployment} at {without_userinfo(self.base_url)}"

    def authenticator(self, http: httpx.AsyncClient, *, api: str, max_response_bytes: int) -> Authenticator:
        return OAuth2ClientCredentials(
            http, TOKEN_PATH, api=api, client_id=self.client_id, client_secret=self.client_secret,
            max_response_bytes=max_response_bytes,
            refused_hint="check accelo_client_id and accelo_client_secret (a service application's credentials)",
        )  # fmt: skip


class AcceloSource:
    """The Accelo plug-in: OAuth2 service-application credentials, the catalogue's streams, windowed id slices."""

    name = "accelo"
    keys: tuple[Key, ...] = KEYS
    streams: Mapping[str, Stream] = ACCELO_STREAMS

    def __repr__(self) -> str:
        return "AcceloSource()"

    def configure(self, config: ConfigReader) -> AcceloSettings | None:
        budget = config.integer("accelo_requests_per_hour")
        lookback = config.integer("accelo_lookback_seconds")
        deployment = config.text("accelo_deployment")
        client_id = config.text("accelo_client_id")
        secret = config.text("accelo_client_secret")
        has_url = bool(config.text("accelo_base_url"))
        if not (deployment or client_id or secret or has_url):
            return None
        if not deployment and not has_url:
            raise ConfigurationError(
                "accelo_deployment: missing; set it to your deployment name (the 'acme' in acme.api.accelo.com)"
            )
        for key, value in (("accelo_client_id", client_id), ("accelo_client_secret", secret)):
            if not value:
                raise ConfigurationError(
                    f"{config.name(key)}: missing; copy it from Accelo → Configuration → API (a service application)"
                )
        if deployment and ("." in deployment or "/" in deployment):
            raise ConfigurationError(
                f"{config.name('accelo_deployment')}: expected the bare deployment name (e.g. 'acme'), not a host or "
                "URL"
            )
        if has_url:
            base_url = config.url("accelo_base_url", forbidden_suffixes=("/api/v0", "/api", "/oauth2/v0"))
        else:
            base_url = f"https://{deployment}.api.accelo.com"
        return AcceloSettings(
            deployment or urlsplit(base_url).hostname or "", client_id, Secret(secret), base_url, budget, lookback
        )

    def mock_configuration(self) -> Mapping[str, str]:
        # Imported only in mock mode: a real configuration never loads the simulator.
        from ..sim import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET, MOCK_BASE_URL

        return {
            "accelo_deployment": "syncflow-sim",
            "accelo_client_id": ACCELO_CLIENT_ID,
            "accelo_client_secret": ACCELO_CLIENT_SECRET,
            "accelo_base_url": MOCK_BASE_URL,
        }

    def migrate_state(self, legacy: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
        streams: dict[str, Mapping[str, Any]] = {}
        for table, keys in _LEGACY_KEYS.items():
            for key in keys:
                when = _parse_iso(legacy.get(key))
                if when is not None:
                    streams[f"{self.name}.{table}"] = {"cursor": int((when - LEGACY_LOOKBACK).timestamp())}
                    break
        return streams

    def permission_hint(self, table: str) -> str:
        return (
            f"grant the Accelo service application read (view) access to {table} (its module must be licensed on the "
            "deployment)"
        )

    async def run(self, run: SourceRun) -> None:
        settings = run.settings
        auth = run.client.auth
        if not isinstance(settings, AcceloSettings) or not isinstance(auth, OAuth2ClientCredentials):
            raise TypeError("AcceloSource.run: expects the AcceloSettings its configure() returned")
        sync = _AcceloRun(
            run.client, auth, run.send, concurrency=run.concurrency, start_date=run.start_date,
            clock_now=run.clock_now, lookback=settings.lookback_seconds,
            reconcile_every_seconds=run.reconcile_every_seconds, sweep_requests=run.sweep_requests,
            streams={**ACCELO_STREAMS, **run.chosen},  # resources a caller declared itself, besides the catalogue
        )  # fmt: skip
        await sync.run(run.prior, list(run.tables), report=run.report)


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_iso8601(value)
    except ValueError:
        return None


def _list_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("response"), list):
        return "body has no 'response' list"
    meta = body.get("meta")
    if isinstance(meta, dict) and meta.get("status") not in (None, "ok"):
        return f"meta status is {meta.get('status')!r}"
    if not all(isinstance(record, dict) for record in body["response"]):
        return "'response' holds something other than records"
    return None


def _count_problem(body: Any) -> str | None:
    try:
        int(body["response"]["count"])
    except (KeyError, TypeError, ValueError):
        return "body has no 'response.count' number"
    return None


class _AcceloRun:
    """One sync of Accelo: the server's clock, then every chosen entity's window, sliced."""

    name = "accelo"

    def __init__(
        self,
        client: ApiClient,
        auth: OAuth2ClientCredentials,
        send: ObjectSendStream[Batch],
        *,
        concurrency: int,
        start_date: datetime | None,
        clock_now: float,
        lookback: int = 0,
        reconcile_every_seconds: float = 24 * 3600.0,
        sweep_requests: int = 1250,
        streams: Mapping[str, Stream] | None = None,
    ) -> None:
        # The catalogue by default; a caller may pass the streams it chose, including resources it declared itself.
        self.streams = ACCELO_STREAMS if streams is None else streams
        self._client = client
        self._auth = auth
        self._send = send
        self._concurrency = concurrency
        self._reconcile_every = reconcile_every_seconds
        self._sweep_budget = SweepBudget(sweep_requests)
        self._start = int(start_date.timestamp()) if start_date else None
        self._clock_now = clock_now
        self.lookback = lookback
        self.server_clock_read_at = 0.0
        self.short_pages_seen = False  # warned once per sync
        # The most records this deployment has been seen to serve in one page (saved in each stream's "served", and
        # raised by every page read in this sync). See `page_ends`.
        self.served_proven = 0

    def note_served(self, served: int) -> None:
        self.served_proven = max(self.served_proven, min(served, PAGE_LIMIT))

    def page_ends(self, served: int, limit: int) -> bool:
        """Whether a page of `served` records, asked with `_limit=limit`, is provably the last of its read.

        The docs say `_limit` is the most a page returns (at most 100); a deployment might still serve fewer (our
        simulator's `accelo_page_size_max`), and then a short page would not be the end. Once this deployment has
        served more records in one page than this page holds, its cap (if any) is above them, so a short page can
        only mean the list ran out: the request that would confirm it (an empty page, or a `/count`) is saved. The
        assumption is that a deployment's page cap does not drop between syncs; a page as long as the longest yet
        seen is still confirmed. A keyset read of a frozen window loses nothing by ending there: records only leave
        the window while it is read, and ids keep their order (records created meanwhile are stamped after the
        window, or have higher ids and are read by the next sync).
        """
        return served < limit and served < self.served_proven

    def short_page_warning(self, report: SourceReport, stream: str, asked: int, served: int) -> None:
        if self.short_pages_seen:
            return
        self.short_pages_seen = True
        message = (
            f"accelo: the server served {served} rows where _limit={asked} was asked ({stream}) while more remained; "
            "paging on by the served size (this deployment caps its pages)"
        )
        logger.warning("%s", message)
        report.warnings.append(message)

    def lowest_server_time(self, upper: int) -> int:
        """`upper`, or lower if a response's `Date` showed the server's clock behind it (a clock stepped back)."""
        lowest = self._client.gate.server_clock.lowest
        return upper if lowest is None else min(upper, int(lowest))

    async def run(
        self, prior: Mapping[str, Mapping[str, Any]], tables: list[str], *, report: SourceReport | None = None
    ) -> SourceReport:
        # The caller may pass its report, so it keeps what completed even if this source ends with an error.
        report = report if report is not None else SourceReport(self.name)
        # The server's clock when the sync starts: the frozen upper bound of every window. The token request is
        # retried like any request (a 503 from the token endpoint is as transient as one from a list).
        server_now = await self._client.call(f"POST {TOKEN_PATH}", self._auth.server_time, stream=self.name)
        if server_now is None:
            # Nothing said the server's time: err towards re-reading rather than past what it could have stamped.
            server_now = self._clock_now - UNKNOWN_CLOCK_MARGIN_SECONDS
            message = (
                "accelo: the server sent no Date header, so its clock is unknown; windows end "
                f"{UNKNOWN_CLOCK_MARGIN_SECONDS} s behind this machine's clock (those minutes are re-read next sync)"
            )
            logger.warning("%s", message)
            report.warnings.append(message)
        upper = int(server_now)
        self.server_clock_read_at = anyio.current_time()
        for entry in prior.values():
            proven = entry.get("served") if isinstance(entry, Mapping) else None
            if isinstance(proven, int) and not isinstance(proven, bool) and proven > 0:
                self.note_served(proven)
        entities = [
            _EntitySync(self, self.streams[table], prior.get(self.streams[table].key, {}), upper, report)
            for table in tables
        ]
        # First every entity sizes its window (count + first page, together), then the slice budget is shared out
        # in proportion to the work: the largest table gets most slices, all tables finish about together, and the
        # pages held while planning are bounded by the concurrency (SLICES_PER_SLOT seed pages per request slot),
        # not by the size of the data.
        # Each entity runs alone (run_alone): one that fails for good, or may not be read (403), is reported and
        # leaves its siblings running.
        opened: list[_EntitySync] = []

        async def open_alone(entity: _EntitySync) -> None:
            if await run_alone(entity.stream.key, entity.open, report):
                opened.append(entity)

        async with anyio.create_task_group() as tg:
            for entity in entities:
                tg.start_soon(open_alone, entity)
        budgets = allocate_slices(
            {e.stream.key: e.pages_to_slice for e in opened}, self._concurrency * SLICES_PER_SLOT
        )
        read: list[_EntitySync] = []

        async def run_read(entity: _EntitySync) -> None:
            if await run_alone(entity.stream.key, partial(entity.run, budgets[entity.stream.key]), report):
                read.append(entity)

        async with anyio.create_task_group() as tg:
            for entity in opened:
                tg.start_soon(run_read, entity)
        # Sweeps only after every incremental window is delivered: a sweep that runs out of budget never holds up
        # the regular part of the sync. Each runs alone too: a sweep that fails costs only its own stream.
        async with anyio.create_task_group() as tg:
            for entity in read:
                tg.start_soon(run_alone, entity.stream.key, partial(entity.sweep, self._sweep_budget), report)
        if self._sweep_budget.exhausted:
            logger.info("accelo: reconciliation used this sync's share of the budget; it continues in the next sync")
        return report


def allocate_slices(pages: Mapping[str, int], budget: int) -> dict[str, int]:
    """Share `budget` parallel slices among streams in proportion to their pages.

    Every stream gets at least one; none is cut into slices shorter than MIN_PAGES_PER_SLICE pages, because each
    slice may cost one request more than its pages (to learn that it ended).
    """
    total = sum(pages.values())
    shares: dict[str, int] = {}
    for key, count in pages.items():
        want = round(budget * count / total) if total else 1
        shares[key] = max(1, min(want, count // MIN_PAGES_PER_SLICE))
    return shares


class _EntitySync:
    def __init__(
        self, source: _AcceloRun, stream: Stream, prior: Mapping[str, Any], server_now: int, report: SourceReport
    ) -> None:
        self.source = source
        self.stream = stream
        self.prior = prior
        self.server_now = server_now
        self.report = report
        # Every Accelo stream is a resource entry (path, order filter, /count) declared from the docs fixture.
        resource = stream if isinstance(stream, AcceloResource) else accelo_resource(stream.table)
        self.path = resource.endpoint
        self.fields = ",".join(stream.columns)
        self.order = resource.order  # none on staff: the docs list no order filter there
        self.counted = resource.count  # some lists document no /count: their first page alone sizes the window
        self.keyset = resource.keyset  # False: the docs list no id range filter, so pages go by number
        self.converter: RowConverter = stream.converter()
        # Pages are typed as they are parsed (in C), with today's RowConverter wherever that could differ.
        self.decoder = PageDecoder(self.converter)
        self.expected_rows: int | None = None
        self.keys = KeyTracker(stream, prior, report)
        # Set by open():
        self.active = False
        self.window: tuple[int | None, int | None] = (None, None)
        self.filters: list[str] = []
        self.slices: dict[str, SliceState] | None = None
        self.first_page: tuple[list[dict[str, Any]], int] = ([], 0)
        self.pages_to_slice = 0  # pages of a window too big for one page (0: nothing to share out)
        # Rows per page the server really serves: PAGE_LIMIT, or less on a deployment that caps its pages.
        self.page_size = PAGE_LIMIT
        # Records served so far when the whole window is one slice (None otherwise, and after a resume): once they
        # reach the count, a short page is the end and the request that would confirm it is saved.
        self.sole_slice_served: int | None = None
        self.sizing_requests = 2  # count + first page; one where either alone answers
        self.whole = True  # a page-number read that proved complete (deletes may be captured)

    async def _send(
        self, rows: Sequence[Mapping[str, Any]], patch: Any, *, requests: int, deletes: Sequence[Any] = ()
    ) -> None:
        await self.source._send.send(
            Batch(
                stream=self.stream.key,
                schema=self.stream.source,
                table=self.stream.table,
                rows=rows,
                patch=[*patch, *self.keys.ops_for(rows)],
                requests=requests,
                total_rows=self.expected_rows,
                deletes=deletes,
            )
        )

    async def _ask(self, patch: StatePatch) -> None:
        """A batch without rows, to ask the drain something (`KeyTracker.finish`)."""
        await self._send([], patch, requests=0)

    def _read_prior(self) -> tuple[int | None, int | None, dict[str, SliceState] | None]:
        run = self.prior.get("run")
        if isinstance(run, dict):
            lower, upper, slices = run.get("lower"), run.get("upper"), run.get("slices")
            if _valid_bound(lower) and _valid_bound(upper) and _valid_slices(slices):
                # Checked just above: the entry has the shape of a WindowState.
                return lower, upper, cast("dict[str, SliceState] | None", slices)
            raise StateError(f"state: {self.stream.key} has a malformed 'run' entry")
        cursor = self.prior.get("cursor")
        if cursor is not None and not _valid_bound(cursor):
            raise StateError(f"state: {self.stream.key} has a malformed cursor {cursor!r}")
        lower = cursor if cursor is not None else self.source._start
        upper = self.server_now if self.stream.cursor else None
        return (lower if self.stream.cursor else None), upper, None

    async def open(self) -> None:
        """Read the saved state and, for a new window, size it: count and first page, fetched together."""
        try:
            lower, upper, slices = self._read_prior()
        except StateError as exc:
            # Safe, if slower: the next pages re-read the table from scratch; upserts make duplicates harmless.
            logger.warning("%s; resyncing %s from the start", exc, self.stream.key)
            self.report.warnings.append(f"{exc}; resynced from the start")
            lower, upper, slices = self.source._start, self.server_now if self.stream.cursor else None, None
        if slices is None and self.stream.cursor and lower is not None and upper is not None:
            bounds = await self._new_window(lower, upper, from_cursor=self.prior.get("cursor") is not None)
            if bounds is None:
                return
            lower, upper = bounds
        self.window = (lower, upper)
        self.filters = self._window_filters(lower, upper)
        self.slices = slices
        if slices is None and self.keyset:
            await self._size_window()
        self.active = True

    async def run(self, slice_budget: int) -> None:
        if not self.active:
            return
        refresh = self.stream.cursor is None
        if not self.keyset:
            await self._read_by_page_number()
            slices: dict[str, SliceState] = {}
        elif self.slices is None:
            if refresh:
                # A full refresh is a sweep: what it does not return once it has completed was deleted.
                await self._send([], self.keys.begin(self.server_now), requests=0)
            slices = await self._plan(slice_budget)
        else:
            slices = self.slices
            logger.info("%s: resuming an interrupted sync (%d slices)", self.stream.key, len(slices))
        async with anyio.create_task_group() as tg:
            for slice_id, bounds in slices.items():
                if not bounds["done"]:
                    tg.start_soon(self._run_slice, slice_id, bounds, self.filters)
        if not self.stream.cursor and self.keys.sweeping and not self.keyset and not self.whole:
            await self._send([], self.keys.abandon(), requests=0)
        upper = self.window[1]
        # A server clock that stepped back mid-sync may have stamped records below `upper`: the cursor follows it.
        cursor = None if upper is None else self.source.lowest_server_time(upper)
        done: list[tuple[tuple[str, ...], Any]] = [(("run",), None)]
        if self.stream.cursor:
            done.append((("cursor",), cursor))
        if self.source.served_proven:
            # What the deployment serves per page, known to the next sync (`page_ends`) whichever streams it reads.
            done.append((("served",), self.source.served_proven))
        done.extend(self.keys.first_read_ops(self.server_now))
        deletes: list[dict[str, Any]] = []
        if refresh and self.keys.sweeping:
            deletes, ops = await self.keys.finish(self._ask)
            done.extend(ops)
        elif refresh:
            done.append((("swept",), self.server_now))  # a refresh resumed from a state without its "seen" keys
        await self._send([], done, requests=0, deletes=deletes)
        self.report.completed.append(self.stream.key)
        report_conversions(self.report, self.converter)

    async def sweep(self, budget: SweepBudget) -> None:
        """Re-read the whole entity by id keyset, no date filter; on completion delete the ids not returned."""
        if self.stream.cursor is None or not self.keys.due(self.server_now, self.source._reconcile_every):
            return
        if self.keys.sweep is None:
            await self._send([], self.keys.begin(self.server_now, after=None), requests=0)
            logger.info("%s: reconciliation sweep started", self.stream.key)
        assert self.keys.sweep is not None
        after = self.keys.sweep.get("after")
        if not _valid_bound(after):
            after = None  # a damaged position: re-read from the start (upserts make that harmless)
        client = self.source._client
        ended_short = False
        while not ended_short:
            if not budget.take():
                return  # progress is in the state; the next sync continues from `after`
            filters = [f"id_greater_than({after})"] if after is not None else []
            params: dict[str, str | int] = {"_fields": self.fields, "_limit": PAGE_LIMIT,
                      "_filters": ",".join([*filters, *self.order])}  # fmt: skip
            reply = await client.get_json(self.path, params, validate=_list_problem, stream=self.stream.key,
                                          decode=self.decoder.loads)
            records = reply.body["response"]
            self.source.note_served(len(records))
            if not records:
                break
            # An empty page ends a sweep, and so does a short one where `page_ends` proves it the last (a short page
            # that is only a server's cap must not end it: the ids not yet read would be deleted). Ids are read in
            # order, so a record created meanwhile has a higher id: it is upserted by a later read, never deleted.
            ended_short = self.source.page_ends(len(records), PAGE_LIMIT)
            rows = self._rows(records)
            top = max((row["id"] for row in rows), default=None)
            if top is None or (after is not None and top <= after):
                raise MalformedResponseError(
                    "a page of the reconciliation sweep did not advance the id keyset", api="accelo",
                    endpoint=f"GET {self.path}",
                )  # fmt: skip
            after = top
            self.keys.repaired += len(rows)
            self.keys.sweep["after"] = after
            await self._send(rows, [(("sweep", "after"), after)], requests=1)
        deletes, ops = await self.keys.finish(self._ask)
        await self._send([], ops, requests=0 if ended_short else 1, deletes=deletes)  # 1: the empty page

    async def _new_window(self, lower: int, upper: int, *, from_cursor: bool) -> tuple[int, int] | None:
        """The bounds of a new window from `lower` (the saved cursor, or the start date) to the server's `upper`;
        None when there is nothing to read yet (a start date ahead of the server's clock)."""
        lookback = self.source.lookback
        if lower >= upper:
            waited = await self._past_the_cursor_second(lower, upper)
            if waited is None and not from_cursor:
                logger.warning("%s: start_date is ahead of the server's clock; nothing to read yet", self.stream.key)
                return None
            if waited is None:
                # The server's clock went back (or the state came from a clock that ran ahead). What it stamps from
                # now on is below the cursor, so waiting would lose it: re-read the lookback before its own time.
                message = (
                    f"{self.stream.key}: the saved cursor is {lower - upper} s ahead of the server's clock (its clock "
                    "went back?); re-reading from the server's current time minus the lookback"
                )
                logger.warning("%s", message)
                self.report.warnings.append(message)
                return upper - max(1, lookback), upper
            upper = waited
        # The window overlaps the last one by the lookback: a record committed late (a long transaction) carries a
        # stamp from before the last window's end although it became visible after that window was read.
        return (lower - lookback if from_cursor else lower), upper

    async def _past_the_cursor_second(self, lower: int, upper: int) -> int | None:
        """The upper bound for a sync that starts within the cursor's own second (or before it).

        The last sync read up to, not including, second `lower`; records modified in that second after it started
        are still due. An empty window would put them off by one more sync, so wait until the server's clock has
        left that second (at most about a second) and read exactly it. A bound further ahead of the server's clock is
        not waited for: None, and the caller decides.
        """
        wait = lower + 1 - upper
        if wait > _MAX_WAIT_FOR_CURSOR_SECOND:
            return None  # too far ahead to wait for
        # `upper` is the server's Date header, floored to the second: its clock was at least `upper` when it answered.
        await anyio.sleep(max(0.0, wait - (anyio.current_time() - self.source.server_clock_read_at)))
        return lower + 1

    def _window_filters(self, lower: int | None, upper: int | None) -> list[str]:
        cursor = self.stream.cursor
        if cursor is None:
            return []
        filters = []
        if lower is not None:
            filters.append(f"{cursor}_after({lower - 1})")  # strict: re-read the cursor's own second
        if upper is not None:
            filters.append(f"{cursor}_before({upper})")
        return filters

    def _rows(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.decoder.rows(records)

    async def _first_pages(self, filters: list[str], pages: list[int]) -> dict[int, tuple[list[dict[str, Any]], int]]:
        """Pages by number, fetched at once: each page's typed rows and how many records it held."""
        found: dict[int, tuple[list[dict[str, Any]], int]] = {}
        client = self.source._client
        limit = self.page_size  # the served size, so page numbers count pages the way the server cuts them

        async def fetch(page: int) -> None:
            params: dict[str, str | int] = {"_fields": self.fields, "_limit": limit, "_page": page,
                                            "_filters": ",".join([*filters, *self.order])}  # fmt: skip
            reply = await client.get_json(self.path, params, validate=_list_problem, stream=self.stream.key,
                                          decode=self.decoder.loads)
            records = reply.body["response"]
            self.source.note_served(len(records))
            found[page] = (self._rows(records), len(records))

        async with anyio.create_task_group() as tg:
            for page in pages:
                tg.start_soon(fetch, page)
        return found

    def _known_small(self) -> bool:
        """Whether this stream was read before and held less than a page (its known keys), on a deployment whose
        short pages are known to end a read: its first page alone is then expected to answer."""
        keys = self.keys
        return self.source.served_proven > 0 and keys.swept is not None and keys.known_at_start < self.page_size

    async def _size_window(self) -> None:
        client = self.source._client
        filters = self.filters

        async def fetch_count() -> None:
            params = {"_filters": ",".join(filters)} if filters else {}
            reply = await client.get_json(f"{self.path}/count", params, validate=_count_problem, stream=self.stream.key)
            self.expected_rows = int(reply.body["response"]["count"])

        async def fetch_first() -> None:
            self.first_page = (await self._first_pages(filters, [0]))[0]

        if not self.counted:
            # The docs give this list no /count: its first page alone sizes the window, and a full one is read as
            # one slice to its end (a short later page ends it only where `page_ends` proves it).
            await fetch_first()
            self.sizing_requests = 1
            if self.first_page[1] >= self.page_size:
                self.pages_to_slice = 1
            return
        incremental = self.stream.cursor is not None and self.prior.get("cursor") is not None
        if incremental or self._known_small():
            # A later incremental window (most are empty: a catalogue of ~40 resources, most rarely changed), or a
            # list that held less than a page last time: the first page is asked alone, and the count only when
            # that page does not answer by itself. An empty page answers; so does a short one where `page_ends`
            # proves it the last. That keeps a sync with nothing new at one request per stream. Otherwise (a full
            # page, or a short one on a deployment not yet known to serve more) the count decides.
            await fetch_first()
            served = self.first_page[1]
            if served == 0 or self.source.page_ends(served, self.page_size):
                self.expected_rows = served
                self.sizing_requests = 1
                return
            await fetch_count()
        else:
            # A first read (or a list that held more than a page): the count is needed to cut slices, so it is
            # asked together with the first page, one round trip for both.
            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch_count)
                tg.start_soon(fetch_first)
        served = self.first_page[1]
        count = self.expected_rows or 0
        if 0 < served < PAGE_LIMIT and count > served:
            # A short first page while the count says more remain: this deployment serves fewer rows than asked.
            self.page_size = served
            self.source.short_page_warning(self.report, self.stream.key, PAGE_LIMIT, served)
        if served >= self.page_size:
            self.pages_to_slice = max(1, math.ceil(count / self.page_size))

    async def _plan(self, slice_budget: int) -> dict[str, SliceState]:
        filters = self.filters
        lower, upper = self.window
        rows0, served0 = self.first_page
        run: WindowState = {"lower": lower, "upper": upper}
        whole = (
            served0 == 0
            or self.source.page_ends(served0, self.page_size)
            or (self.expected_rows is not None and served0 >= self.expected_rows)
        )
        if served0 < self.page_size and whole:
            # Everything fits in one page: one slice, already done. (A short first page that nothing proves whole,
            # on a list with no /count and a deployment not yet seen serving a longer page, may be a server's cap:
            # it is read on below as one slice, which an empty page ends.)
            after = max((row["id"] for row in rows0), default=None)
            run["slices"] = {"0": SliceState(lo=None, hi=None, after=after, done=True)}
            await self._send(rows0, [(("run",), run)], requests=self.sizing_requests)
            return {}
        pages = self.pages_to_slice
        count = self.expected_rows or 0
        slice_count = max(1, min(slice_budget, pages))
        stride = math.ceil(pages / slice_count)
        seeds = [index * stride for index in range(1, slice_count) if index * stride < pages]
        seed_pages = {0: self.first_page, **(await self._first_pages(filters, seeds))}
        self.first_page = ([], 0)  # delivered below; do not hold it for the rest of the sync
        # Each slice starts at the first id of its first page; a first page that came back empty (records left the
        # window) or out of order is folded into the slice before it.
        starts: list[tuple[int, int | None]] = [(0, None)]
        for page in seeds:
            rows = seed_pages[page][0]
            if rows and (starts[-1][1] is None or rows[0]["id"] > starts[-1][1]):
                starts.append((page, rows[0]["id"]))
        slices: dict[str, SliceState] = {}
        for index, (_page, lo) in enumerate(starts):
            hi = starts[index + 1][1] if index + 1 < len(starts) else None
            slices[str(index)] = SliceState(lo=lo, hi=hi, after=None, done=False)
        run["slices"] = slices
        await self._send([], [(("run",), run)], requests=self.sizing_requests + len(seeds))  # count, first page, seeds
        logger.info(
            "%s: %d rows in the window, %d pages, %d parallel slices", self.stream.key, count, pages, len(slices)
        )
        # Deliver each slice's first page, then let the slices continue by keyset.
        if len(starts) == 1 and self.expected_rows is not None:
            self.sole_slice_served = served0
        pending: dict[str, SliceState] = {}
        for index, (page, _lo) in enumerate(starts):
            slice_id = str(index)
            bounds = slices[slice_id]
            paginator = IdKeysetPaginator(
                order=self.order,
                limit=self.page_size,
                window_filters=filters,
                after=None,
                lower_inclusive=bounds["lo"],
                upper=bounds["hi"],
            )
            rows, served = seed_pages[page]
            kept, trimmed = paginator.trim(rows)
            try:
                paginator.update_state(None, kept, served=served, trimmed=trimmed)
            except ValueError as exc:
                raise MalformedResponseError(str(exc), api="accelo", endpoint=f"GET {self.path}") from exc
            bounds = _advanced(bounds, paginator)
            await self._send(kept, [(("run", "slices", slice_id), bounds)], requests=0)
            pending[slice_id] = bounds
        return pending

    async def _read_by_page_number(self) -> None:
        """A list the docs give no id range filter (divisions, tags, rates, lookups): a full refresh by `_page`,
        ordered by id where the docs allow it. Such lists are small; a crash re-reads them from the start.

        Page numbers shift when a record is deleted mid-read, which could skip a live one; so deletes are captured
        only when the read is provably whole: one page that `page_ends` proves the last (one response is one
        snapshot), the rows read equal the `/count` (where one is documented; a create and a delete between the two
        would pass unseen, and are left to the next refresh) or, without a count, everything came in a short first
        page. Otherwise the next refresh captures them. The count is asked together with the first page (one round
        trip), and not at all for a list that held less than a page last time on a deployment whose short pages
        are known to end a read: there the first page answers alone.
        """
        await self._send([], self.keys.begin(self.server_now), requests=0)
        client = self.source._client
        count: int | None = None
        requests = 0

        async def fetch_count() -> None:
            nonlocal count, requests
            reply = await client.get_json(f"{self.path}/count", {}, validate=_count_problem, stream=self.stream.key)
            count = self.expected_rows = int(reply.body["response"]["count"])
            requests += 1

        async def fetch_page(page: int) -> list[dict[str, Any]]:
            params: dict[str, str | int] = {"_fields": self.fields, "_limit": PAGE_LIMIT, "_page": page}
            if self.order:
                params["_filters"] = ",".join(self.order)
            reply = await client.get_json(self.path, params, validate=_list_problem, stream=self.stream.key,
                                          decode=self.decoder.loads)
            records: list[dict[str, Any]] = reply.body["response"]
            self.source.note_served(len(records))
            return records

        first: list[dict[str, Any]] = []

        async def fetch_first() -> None:
            first.extend(await fetch_page(0))

        if self.counted and not self._known_small():
            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch_count)
                tg.start_soon(fetch_first)
        else:
            await fetch_first()
            if self.counted and len(first) >= PAGE_LIMIT:
                await fetch_count()  # it grew past a page: the count tells when the pages are all read
        records = first
        served = page = 0
        ended_short = False
        while True:
            served += len(records)
            await self._send(self._rows(records), [], requests=requests + 1)
            requests = 0
            # An empty page, reaching the count, or a short page `page_ends` proves the last ends the read (a short
            # page alone may be a server's cap).
            ended_short = self.source.page_ends(len(records), PAGE_LIMIT)
            if not records or ended_short or (count is not None and served >= count):
                break
            page += 1
            records = await fetch_page(page)
        # Without a count, only a short first page that ends the read (or is followed by an empty one) is provably
        # everything.
        if count is not None:
            self.whole = served == count
        else:
            self.whole = served < PAGE_LIMIT and ((page == 0 and ended_short) or page <= 1)
        if not self.whole:
            message = (
                f"{self.stream.key}: the list changed while its pages were read ({served} rows read"
                + (f", /count said {count}" if count is not None else "")
                + "); deletes are captured by the next full refresh"
            )
            logger.warning("%s", message)
            self.report.warnings.append(message)

    async def _run_slice(self, slice_id: str, bounds: SliceState, filters: list[str]) -> None:
        client = self.source._client
        paginator = IdKeysetPaginator(
            order=self.order,
            limit=self.page_size,
            window_filters=filters,
            after=bounds["after"],
            lower_inclusive=bounds["lo"],
            upper=bounds["hi"],
        )
        params: dict[str, Any] = {"_fields": self.fields}
        paginator.init_request(params)
        while paginator.has_next_page:
            reply = await client.get_json(self.path, params, validate=_list_problem, stream=self.stream.key,
                                          decode=self.decoder.loads)
            records = reply.body["response"]
            if records and paginator.last_short is not None:
                # A short page was not the end after all: say so once per sync.
                self.source.short_page_warning(self.report, self.stream.key, paginator.limit, paginator.last_short)
            self.source.note_served(len(records))
            kept, trimmed = paginator.trim(self._rows(records))
            # A short page ends the slice where this deployment is known to serve more per page (`page_ends`); the
            # slice's own filters bound it (id_less_than the next slice's start), so that holds for every slice.
            more_expected = not self.source.page_ends(len(records), paginator.limit)
            if self.sole_slice_served is not None:
                # The whole window is this slice, and its count was asked with the first page: once that many records
                # are read, a short page is the end. A full one is not, even then: a record committed late (a long
                # transaction stamped inside the window) may have entered the window during the read and pushed the
                # window's last record onto the next page; ending here would lose that record for good (it is older
                # than the next window's lookback). So the request after a full last page is kept.
                self.sole_slice_served += len(records)
                more_expected = more_expected and self.sole_slice_served < (self.expected_rows or 0)
            try:
                paginator.update_state(
                    reply.body, kept, served=len(records), trimmed=trimmed, more_expected=more_expected
                )
            except ValueError as exc:
                raise MalformedResponseError(str(exc), api="accelo", endpoint=f"GET {self.path}") from exc
            bounds = _advanced(bounds, paginator)
            await self._send(kept, [(("run", "slices", slice_id), bounds)], requests=1)
            paginator.update_request(params)


def _advanced(bounds: SliceState, paginator: IdKeysetPaginator) -> SliceState:
    """The slice's state once the paginator has taken in a page: the last id upserted, and whether it ended."""
    return SliceState(lo=bounds["lo"], hi=bounds["hi"], after=paginator.after, done=not paginator.has_next_page)


def _valid_bound(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _valid_slices(slices: Any) -> bool:
    if slices is None:
        return True
    if not isinstance(slices, dict):
        return False
    return all(
        isinstance(bounds, dict)
        and all(_valid_bound(bounds.get(key)) for key in ("lo", "hi", "after"))
        and isinstance(bounds.get("done"), bool)
        for bounds in slices.values()
    )
