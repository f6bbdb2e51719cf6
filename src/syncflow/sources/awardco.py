"""AwardCo users, incremental on `updated_at` with the inclusive `updated_since` filter.

The filter is frozen for the whole sync (the example connector moved it forward after every page while also
advancing the page number, which skips rows). Pages are numbered and ordered by employeeId, so a user updated
mid-sync stays on its page; when the API says how many users there are (`total`), the remaining pages are fetched in
parallel and delivered in order. The next sync's `updated_since` is the server's clock at the first response, less
a margin that covers the time the server took to answer it: a user changed after any of this sync's reads has an
`updated_at` at or after that point and is read again next time.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from anyio.abc import ObjectSendStream

from .._exceptions import SourceError, StateError
from .._http import ApiClient, Reply
from .._pagination import PageNumberPaginator, page_has_more
from .._pipeline import Batch, fetch_in_order
from .._streams import RowConverter, Stream
from .._time import parse_iso8601
from ._common import SourceReport, report_conversions

__all__ = ["AWARDCO_STREAMS", "AwardcoSource"]

logger = logging.getLogger("syncflow")

USERS_PATH = "/api/users"
PER_PAGE = 100
CURSOR_MARGIN = timedelta(seconds=60)
# Without `total`, how many pages to fetch ahead of the one being delivered: at most this many minus one requests
# are spent past the last page, for several times the speed of one page per round trip.
SPECULATIVE_PAGES = 4

USER = Stream(
    "awardco",
    "user",
    {
        "employeeId": "STRING",
        "firstName": "STRING",
        "lastName": "STRING",
        "email": "STRING",
        "balance": "FLOAT",
        "currencyCode": "STRING",
        "updated_at": "UTC_DATETIME",
        "created_at": "UTC_DATETIME",
    },
    ("employeeId",),
    "updated_at",
    keep_extra_fields=True,
    endpoint=USERS_PATH,
)
AWARDCO_STREAMS: Mapping[str, Stream] = {"user": USER}


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _users_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("users"), list):
        return "body has no 'users' list"
    if not all(isinstance(user, dict) for user in body["users"]):
        return "'users' holds something other than records"
    if "has_more" in body and not isinstance(body["has_more"], bool):
        return "'has_more' is not a boolean"
    return None


class AwardcoSource:
    name = "awardco"
    streams = AWARDCO_STREAMS

    def __init__(
        self,
        client: ApiClient,
        send: ObjectSendStream[Batch],
        *,
        concurrency: int,
        start_date: datetime | None,
        updated_since_param: str,
        clock_now: float,
    ) -> None:
        self._client = client
        self._send = send
        self._concurrency = concurrency
        self._start = _iso(start_date) if start_date else None
        self._param = updated_since_param
        self._clock_now = clock_now
        self._converter: RowConverter = USER.converter()
        self._expected: int | None = None

    async def run(
        self, prior: Mapping[str, Mapping[str, Any]], tables: list[str], *, report: SourceReport | None = None
    ) -> SourceReport:
        # The caller may pass its report, so it keeps what completed even if this source ends with an error.
        report = report if report is not None else SourceReport(self.name)
        if "user" not in tables:
            return report
        try:
            since, started, first_page = self._read_prior(prior.get(USER.key, {}))
        except StateError as exc:
            logger.warning("%s; resyncing %s from the start", exc, USER.key)
            report.warnings.append(f"{exc}; resynced from the start")
            since, started, first_page = self._start, None, 1
        if first_page > 1:
            logger.info("%s: resuming an interrupted sync at page %d", USER.key, first_page)
        await self._sync(since, started, first_page)
        report.completed.append(USER.key)
        report_conversions(report, self._converter)
        return report

    def _read_prior(self, prior: Mapping[str, Any]) -> tuple[str | None, str | None, int]:
        run = prior.get("run")
        if isinstance(run, dict):
            since, started, page = run.get("since"), run.get("started"), run.get("next_page")
            if _optional_iso(since) and _optional_iso(started) and isinstance(page, int) and page >= 1:
                return since, started, page
            raise StateError(f"state: {USER.key} has a malformed 'run' entry")
        cursor = prior.get("cursor")
        if cursor is not None and not _optional_iso(cursor):
            raise StateError(f"state: {USER.key} has a malformed cursor {cursor!r}")
        return (cursor if cursor is not None else self._start), None, 1

    async def _fetch(self, since: str | None, page: int) -> Reply:
        # Pages are addressed by number (fetched ahead in parallel), so each request gets its page's parameters.
        params: dict[str, Any] = {}
        PageNumberPaginator(per_page=PER_PAGE, first_page=page).init_request(params)
        if since is not None:
            params[self._param] = since
        return await self._client.get_json(USERS_PATH, params, validate=_users_problem)

    async def _pages_in_order(
        self, since: str | None, run: dict[str, Any], pages: Iterable[int], window: int
    ) -> tuple[int, bool]:
        """Fetch `pages` up to `window` ahead and deliver them in order until one says there is no more.

        A page fetched ahead of the last one may fail (an API that answers 404 past the end): its error is kept and
        raised only if delivery reaches that page, so it never fails a sync that had already ended.
        Returns the last page delivered and whether the API said more follow it.
        """
        last: tuple[int, bool] = (0, False)

        async def fetch(index: int) -> Reply | SourceError:
            try:
                return await self._fetch(since, index)
            except SourceError as exc:
                return exc

        async def deliver(index: int, result: Reply | SourceError) -> bool:
            nonlocal last
            if isinstance(result, SourceError):
                raise result
            last = (index, await self._deliver(result, run, index))
            return last[1]

        await fetch_in_order(pages, fetch, deliver, window=window)
        return last

    async def _deliver(self, reply: Reply, run: dict[str, Any], page: int) -> bool:
        users = reply.body["users"]
        convert = self._converter.convert
        rows = [row for row in map(convert, users) if row is not None]
        has_more = page_has_more(reply.body, len(users), PER_PAGE)
        run = {**run, "next_page": page + 1}
        await self._send.send(
            Batch(USER.key, USER.source, USER.table, rows, [(("run",), run)], requests=1, total_rows=self._expected)
        )
        return has_more

    async def _sync(self, since: str | None, started: str | None, page: int) -> None:
        reply = await self._fetch(since, page)
        if started is None:
            now = reply.server_time if reply.server_time is not None else self._clock_now
            started = _iso(datetime.fromtimestamp(now, tz=timezone.utc) - CURSOR_MARGIN)
        run: dict[str, Any] = {"since": since, "started": started}
        paginator = PageNumberPaginator(per_page=PER_PAGE, first_page=page)
        paginator.update_state(reply.body, reply.body["users"])
        total = reply.body.get("total")
        if isinstance(total, int):
            self._expected = total
        more = await self._deliver(reply, run, page)
        if more and paginator.total_pages is not None and paginator.total_pages > page:
            # The API said how many pages there are: fetch them all in parallel, deliver in order.
            page, more = await self._pages_in_order(since, run, range(page + 1, paginator.total_pages + 1),
                                                    self._concurrency)  # fmt: skip
        if more:
            # No total (or more users than it said, created mid-sync): follow has_more, a few pages ahead.
            page, more = await self._pages_in_order(since, run, itertools.count(page + 1), SPECULATIVE_PAGES)
        await self._send.send(Batch(USER.key, USER.source, USER.table, [], [((), {"cursor": started})]))


def _optional_iso(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        parse_iso8601(value)
    except ValueError:
        return False
    return True
