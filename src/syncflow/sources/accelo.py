"""Accelo: six entities, incremental on date_modified (payments: date_created; staff: full refresh).

How one entity is read, and why:

- **A frozen window.** At sync start the upper bound is fixed to the server's clock `T` (the token response's `Date`
  header) and the lower bound is the saved cursor `c`: `<cursor>_after(c - 1)` (Accelo's `_after` is strict, so the
  cursor's own second is re-read) and `<cursor>_before(T)`. A record modified during the sync gets a date ≥ T, leaves
  the window, and is read by the next sync, whose lower bound is T. Records can only *leave* the window during a sync.
- **Id keyset pages.** Inside the window, pages are `id_greater_than(last id)` + `order_by_asc(id)`. A record that
  leaves the window cannot shift a later page (an offset page would skip one record).
- **Parallel slices.** `/count` says how many pages the window holds; the id order is cut into slices whose first
  pages are fetched at once by page number (`_page`), and each slice then continues by keyset up to the next slice's
  first id. Whatever moved between those first requests, every id between two slice starts belongs to exactly one
  slice, so nothing is missed or duplicated. Small tables stay at one or two requests (count + first page, together).
- **Resumable.** The state records, per slice, the last id upserted. A crash resumes the same window and skips
  finished slices; the cursor moves to T only when every slice is done.
- **Reconciliation** (`_reconcile`). Every `reconcile_every_hours`, after the incremental windows, an entity is swept
  whole: `id_greater_than(last id)` + `order_by_asc(id)` with no date filter, until a page comes back empty (a short
  page is not trusted as the end: ending early would delete live records). Every record is upserted (records with
  null, empty or zero dates arrive), and once the sweep completes the ids known but not returned are deleted. Staff,
  a full refresh, is swept by every completed refresh. Sweeps spend at most `reconcile_max_requests` per sync and
  continue in the next sync; the incremental windows run first, every sync.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import ObjectSendStream

from .._exceptions import MalformedResponseError, StateError
from .._http import ApiClient, OAuth2ClientCredentials
from .._pagination import IdKeysetPaginator
from .._pipeline import Batch
from .._streams import RowConverter, Stream
from ._common import SourceReport, report_conversions
from ._reconcile import KeyTracker, SweepBudget

__all__ = ["ACCELO_STREAMS", "AcceloSource", "allocate_slices"]

logger = logging.getLogger("syncflow")

API_PREFIX = "/api/v0"
TOKEN_PATH = "/oauth2/v0/token"
PAGE_LIMIT = 100  # the API's maximum
# A slice costs at most one request more than its pages (to learn it ended), so slices are only cut for work of at
# least this many pages.
MIN_PAGES_PER_SLICE = 4
# How far behind the saved cursor the server's clock may be before a sync waits for it instead of skipping.
_MAX_WAIT_FOR_CURSOR_SECOND = 5

_I, _F, _S, _B, _T = "INT", "FLOAT", "STRING", "BOOLEAN", "UTC_DATETIME"

_COLUMNS: Mapping[str, Mapping[str, str]] = {
    "companies": {
        "id": _I, "name": _S, "website": _S, "phone": _S, "date_created": _T, "date_modified": _T,
        "date_last_interacted": _T, "comments": _S, "standing": _S, "status": _I, "postal_address": _I,
        "default_affiliation": _I,
    },
    "invoices": {
        "id": _I, "subject": _S, "amount": _F, "against_type": _S, "against_id": _I, "notes": _S,
        "invoice_number": _I, "currency_id": _I, "owner_id": _I, "tax": _F, "outstanding": _F, "modified_by": _I,
        "date_raised": _T, "date_due": _T, "date_modified": _T,
    },
    "payments": {
        "id": _I, "receipt_id": _I, "amount": _F, "currency_id": _I, "method_id": _I, "against_id": _I,
        "against_type": _S, "date_created": _T, "created_by_staff_id": _I, "direction": _S, "payment_currency": _I,
        "payment_method": _I, "payment_receipt": _I,
    },
    "prospects": {
        "id": _I, "title": _S, "date_created": _T, "date_actioned": _T, "date_due": _T, "date_last_interacted": _T,
        "date_modified": _T, "weighting": _I, "value": _F, "success": _B, "comments": _S, "progress": _F,
        "value_weighted": _F, "won_by_id": _I, "cancelled_by_id": _I, "abandoned_by_id": _I, "contact": _I,
        "manager": _I, "prospect_type": _I, "status": _I, "standing": _S, "prospect_probability": _I,
        "affiliation": _I,
    },
    "jobs": {
        "id": _I, "title": _S, "status": _I, "standing": _S, "date_created": _T, "date_started": _T, "date_due": _T,
        "date_completed": _T, "date_modified": _T, "manager": _I, "company": _I, "contact": _I, "description": _S,
        "value": _F,
    },
    "staff": {
        "id": _I, "firstname": _S, "surname": _S, "email": _S, "position": _S, "title": _S, "date_created": _T,
        "date_modified": _T, "status": _S,
    },
}  # fmt: skip
# Two deliberate departures from the example connector's types, which would null every value the API sends:
# staff.status is "active"/"inactive" (STRING, not INT), and prospects.value_weighted is money (FLOAT, not INT).

# The date the incremental filter applies to: the API offers no date filter on staff, and only date_created on
# payments.
_CURSORS: Mapping[str, str | None] = {
    "companies": "date_modified",
    "invoices": "date_modified",
    "payments": "date_created",
    "prospects": "date_modified",
    "jobs": "date_modified",
    "staff": None,
}

ACCELO_STREAMS: Mapping[str, Stream] = {
    name: Stream("accelo", name, columns, ("id",), _CURSORS[name], endpoint=f"{API_PREFIX}/{name}")
    for name, columns in _COLUMNS.items()
}


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


class AcceloSource:
    name = "accelo"
    streams = ACCELO_STREAMS

    def __init__(
        self,
        client: ApiClient,
        auth: OAuth2ClientCredentials,
        send: ObjectSendStream[Batch],
        *,
        concurrency: int,
        start_date: datetime | None,
        clock_now: float,
        reconcile_every_seconds: float = 24 * 3600.0,
        sweep_requests: int = 1250,
    ) -> None:
        self._client = client
        self._auth = auth
        self._send = send
        self._concurrency = concurrency
        self._reconcile_every = reconcile_every_seconds
        self._sweep_budget = SweepBudget(sweep_requests)
        self._start = int(start_date.timestamp()) if start_date else None
        self._clock_now = clock_now
        self.server_clock_read_at = 0.0

    async def run(self, prior: Mapping[str, Mapping[str, Any]], tables: list[str]) -> SourceReport:
        report = SourceReport(self.name)
        # The server's clock when the sync starts: the frozen upper bound of every window.
        server_now = await self._auth.server_time()
        upper = int(server_now if server_now is not None else self._clock_now)
        self.server_clock_read_at = anyio.current_time()
        entities = [
            _EntitySync(self, ACCELO_STREAMS[table], prior.get(ACCELO_STREAMS[table].key, {}), upper, report)
            for table in tables
        ]
        # First every entity sizes its window (count + first page, together), then the slice budget is shared out
        # in proportion to the work: the largest table gets most slices, all tables finish about together, and the
        # pages held while planning are bounded by the concurrency, not by the size of the data.
        async with anyio.create_task_group() as tg:
            for entity in entities:
                tg.start_soon(entity.open)
        budgets = allocate_slices({e.stream.key: e.pages_to_slice for e in entities}, self._concurrency)
        async with anyio.create_task_group() as tg:
            for entity in entities:
                tg.start_soon(entity.run, budgets[entity.stream.key])
        # Sweeps only after every incremental window is delivered: a sweep that runs out of budget never holds up
        # the regular part of the sync.
        async with anyio.create_task_group() as tg:
            for entity in entities:
                tg.start_soon(entity.sweep, self._sweep_budget)
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
        self, source: AcceloSource, stream: Stream, prior: Mapping[str, Any], server_now: int, report: SourceReport
    ) -> None:
        self.source = source
        self.stream = stream
        self.prior = prior
        self.server_now = server_now
        self.report = report
        self.path = f"{API_PREFIX}/{stream.table}"
        self.fields = ",".join(stream.columns)
        self.converter: RowConverter = stream.converter()
        self.expected_rows: int | None = None
        self.keys = KeyTracker(stream, prior, report)
        # Set by open():
        self.active = False
        self.window: tuple[int | None, int | None] = (None, None)
        self.filters: list[str] = []
        self.slices: dict[str, dict[str, Any]] | None = None
        self.first_page: tuple[list[dict[str, Any]], int] = ([], 0)
        self.pages_to_slice = 0  # pages of a window too big for one page (0: nothing to share out)

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

    def _read_prior(self) -> tuple[int | None, int | None, dict[str, dict[str, Any]] | None]:
        run = self.prior.get("run")
        if isinstance(run, dict):
            lower, upper, slices = run.get("lower"), run.get("upper"), run.get("slices")
            if _valid_bound(lower) and _valid_bound(upper) and _valid_slices(slices):
                return lower, upper, slices
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
        if self.stream.cursor and lower is not None and upper is not None and lower >= upper:
            upper = await self._past_the_cursor_second(lower, upper)
            if upper is None:
                return
        self.window = (lower, upper)
        self.filters = self._window_filters(lower, upper)
        self.slices = slices
        if slices is None:
            await self._size_window()
        self.active = True

    async def run(self, slice_budget: int) -> None:
        if not self.active:
            return
        refresh = self.stream.cursor is None
        if self.slices is None:
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
        upper = self.window[1]
        done: list[tuple[tuple[str, ...], Any]] = [(("run",), None)]
        if self.stream.cursor:
            done.append((("cursor",), upper))
        done.extend(self.keys.first_read_ops(self.server_now))
        deletes: list[dict[str, Any]] = []
        if refresh and self.keys.sweeping:
            deletes, ops = self.keys.finish()
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
        while True:
            if not budget.take():
                return  # progress is in the state; the next sync continues from `after`
            filters = [f"id_greater_than({after})"] if after is not None else []
            params: dict[str, str | int] = {"_fields": self.fields, "_limit": PAGE_LIMIT,
                      "_filters": ",".join([*filters, "order_by_asc(id)"])}  # fmt: skip
            reply = await client.get_json(self.path, params, validate=_list_problem)
            records = reply.body["response"]
            if not records:
                break  # only an empty page ends a sweep: a short one may just be a server's cap
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
        deletes, ops = self.keys.finish()
        await self._send([], ops, requests=1, deletes=deletes)

    async def _past_the_cursor_second(self, lower: int, upper: int) -> int | None:
        """The upper bound for a sync that starts within the cursor's own second (or before it).

        The last sync read up to, not including, second `lower`; records modified in that second after it started
        are still due. An empty window would put them off by one more sync, so wait until the server's clock has
        left that second (at most about a second) and read exactly it. A cursor far ahead of the server's clock
        (a migrated state, clock trouble) is left alone rather than waited for.
        """
        wait = lower + 1 - upper
        if wait > _MAX_WAIT_FOR_CURSOR_SECOND:
            logger.warning(
                "%s: the saved cursor is %d s ahead of the server's clock; nothing to read yet", self.stream.key, wait
            )
            return None
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
        convert = self.converter.convert
        return [row for row in map(convert, records) if row is not None]

    async def _first_pages(self, filters: list[str], pages: list[int]) -> dict[int, tuple[list[dict[str, Any]], int]]:
        """Pages by number, fetched at once: each page's typed rows and how many records it held."""
        found: dict[int, tuple[list[dict[str, Any]], int]] = {}
        client = self.source._client

        async def fetch(page: int) -> None:
            params: dict[str, str | int] = {"_fields": self.fields, "_limit": PAGE_LIMIT, "_page": page,
                                            "_filters": ",".join([*filters, "order_by_asc(id)"])}  # fmt: skip
            reply = await client.get_json(self.path, params, validate=_list_problem)
            records = reply.body["response"]
            found[page] = (self._rows(records), len(records))

        async with anyio.create_task_group() as tg:
            for page in pages:
                tg.start_soon(fetch, page)
        return found

    async def _size_window(self) -> None:
        client = self.source._client
        filters = self.filters

        async def fetch_count() -> None:
            params = {"_filters": ",".join(filters)} if filters else {}
            reply = await client.get_json(f"{self.path}/count", params, validate=_count_problem)
            self.expected_rows = int(reply.body["response"]["count"])

        async def fetch_first() -> None:
            self.first_page = (await self._first_pages(filters, [0]))[0]

        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch_count)
            tg.start_soon(fetch_first)
        if self.first_page[1] >= PAGE_LIMIT:
            self.pages_to_slice = max(1, math.ceil((self.expected_rows or 0) / PAGE_LIMIT))

    async def _plan(self, slice_budget: int) -> dict[str, dict[str, Any]]:
        filters = self.filters
        lower, upper = self.window
        rows0, served0 = self.first_page
        run: dict[str, Any] = {"lower": lower, "upper": upper}
        if served0 < PAGE_LIMIT:
            # Everything fits in one page: one slice, already done.
            after = max((row["id"] for row in rows0), default=None)
            run["slices"] = {"0": {"lo": None, "hi": None, "after": after, "done": True}}
            await self._send(rows0, [(("run",), run)], requests=2)
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
        slices: dict[str, dict[str, Any]] = {}
        for index, (_page, lo) in enumerate(starts):
            hi = starts[index + 1][1] if index + 1 < len(starts) else None
            slices[str(index)] = {"lo": lo, "hi": hi, "after": None, "done": False}
        run["slices"] = slices
        await self._send([], [(("run",), run)], requests=2 + len(seeds))  # count, first page, seeds
        logger.info(
            "%s: %d rows in the window, %d pages, %d parallel slices", self.stream.key, count, pages, len(slices)
        )
        # Deliver each slice's first page, then let the slices continue by keyset.
        pending: dict[str, dict[str, Any]] = {}
        for index, (page, _lo) in enumerate(starts):
            slice_id = str(index)
            bounds = slices[slice_id]
            paginator = IdKeysetPaginator(
                limit=PAGE_LIMIT, window_filters=filters, after=None, lower_inclusive=bounds["lo"], upper=bounds["hi"]
            )
            rows, served = seed_pages[page]
            kept, trimmed = paginator.trim(rows)
            try:
                paginator.update_state(None, kept, served=served, trimmed=trimmed)
            except ValueError as exc:
                raise MalformedResponseError(str(exc), api="accelo", endpoint=f"GET {self.path}") from exc
            bounds = {**bounds, "after": paginator.after, "done": not paginator.has_next_page}
            await self._send(kept, [(("run", "slices", slice_id), bounds)], requests=0)
            pending[slice_id] = bounds
        return pending

    async def _run_slice(self, slice_id: str, bounds: dict[str, Any], filters: list[str]) -> None:
        client = self.source._client
        paginator = IdKeysetPaginator(
            limit=PAGE_LIMIT,
            window_filters=filters,
            after=bounds["after"],
            lower_inclusive=bounds["lo"],
            upper=bounds["hi"],
        )
        params: dict[str, Any] = {"_fields": self.fields}
        paginator.init_request(params)
        while paginator.has_next_page:
            reply = await client.get_json(self.path, params, validate=_list_problem)
            records = reply.body["response"]
            kept, trimmed = paginator.trim(self._rows(records))
            try:
                paginator.update_state(reply.body, kept, served=len(records), trimmed=trimmed)
            except ValueError as exc:
                raise MalformedResponseError(str(exc), api="accelo", endpoint=f"GET {self.path}") from exc
            bounds = {**bounds, "after": paginator.after, "done": not paginator.has_next_page}
            await self._send(kept, [(("run", "slices", slice_id), bounds)], requests=1)
            paginator.update_request(params)


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
