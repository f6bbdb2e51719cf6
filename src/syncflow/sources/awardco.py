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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypedDict

import httpx
from anyio.abc import ObjectSendStream

from .._config import ConfigReader, Key
from .._exceptions import ConfigurationError, SourceError, StateError
from .._http import ApiClient, ApiKeyAuth, Authenticator, Reply
from .._pagination import page_count, page_has_more
from .._pipeline import Batch, fetch_in_order
from .._redaction import Secret
from .._source import SourceReport, SourceRun, report_conversions, without_userinfo
from .._streams import RowConverter, Stream

__all__ = ["AWARDCO_STREAMS", "AwardcoSettings", "AwardcoSource", "AwardcoStreamState", "PagesState"]

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

KEYS: tuple[Key, ...] = (
    Key("awardco_api_key", "AwardCo API key", "Your AwardCo API key (sent as the apiKey header).", "secret",
        aliases=("api_key",)),
    Key("awardco_base_url", "AwardCo base URL", "Your AwardCo host, without a trailing /api.", "url",
        placeholder="https://api.awardco.com", aliases=("base_url",)),
    Key("awardco_requests_per_hour", "AwardCo requests per hour", "Client-side budget for AwardCo; the server's "
        "rate-limit headers also apply.", "integer", "1000", "1000", minimum=1, aliases=("rate_limit",)),
    Key("awardco_updated_since_param", "AwardCo incremental parameter", "Name of the query parameter AwardCo "
        "filters updated users by.", default="updated_since", placeholder="updated_since",
        aliases=("updated_since_param",)),
)  # fmt: skip

# The example connector's state key (an ISO timestamp), read once so its users resume; a day before it is re-read
# (its cursor could run ahead of what it delivered), which upserts make harmless.
_LEGACY_KEY = "last_sync_time"
LEGACY_LOOKBACK = timedelta(days=1)


class PagesState(TypedDict):
    """A sync being read: the frozen `updated_since`, the next sync's cursor, and the next page to deliver."""

    since: str | None
    started: str | None
    next_page: int


class AwardcoStreamState(TypedDict, total=False):
    """AwardCo's user stream in the state: the cursor (ISO-8601) and, mid-sync, the pages being read."""

    cursor: str | None
    run: PagesState


@dataclass(frozen=True)
class AwardcoSettings:
    api_key: Secret
    base_url: str
    requests_per_hour: int
    updated_since_param: str = "updated_since"

    def fingerprint(self) -> str:
        return without_userinfo(self.base_url)

    def authenticator(self, http: httpx.AsyncClient, *, api: str, max_response_bytes: int) -> Authenticator:
        return ApiKeyAuth(self.api_key)


class AwardcoSource:
    """The AwardCo plug-in: an API key header, one stream of users paged by number."""

    name = "awardco"
    keys: tuple[Key, ...] = KEYS
    streams: Mapping[str, Stream] = AWARDCO_STREAMS

    def __repr__(self) -> str:
        return "AwardcoSource()"

    def configure(self, config: ConfigReader) -> AwardcoSettings | None:
        budget = config.integer("awardco_requests_per_hour")
        param = config.text("awardco_updated_since_param") or config.default("awardco_updated_since_param")
        if not param.replace("_", "").isalnum():
            raise ConfigurationError(f"{config.name('awardco_updated_since_param')}: expected a query parameter name")
        key = config.text("awardco_api_key")
        has_url = bool(config.text("awardco_base_url"))
        if not key and not has_url:
            return None
        if not key:
            raise ConfigurationError(f"{config.name('awardco_api_key')}: missing; set your AwardCo API key")
        if not has_url:
            raise ConfigurationError(
                f"{config.name('awardco_base_url')}: missing; set your AwardCo host, e.g. https://api.awardco.com"
            )
        base_url = config.url("awardco_base_url", forbidden_suffixes=("/api/users", "/api"))
        return AwardcoSettings(Secret(key), base_url, budget, param)

    def mock_configuration(self) -> Mapping[str, str]:
        # Imported only in mock mode: a real configuration never loads the simulator.
        from ..sim import AWARDCO_API_KEY, MOCK_BASE_URL

        return {"awardco_api_key": AWARDCO_API_KEY, "awardco_base_url": MOCK_BASE_URL}

    def migrate_state(self, legacy: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
        value = legacy.get(_LEGACY_KEY)
        if not isinstance(value, str) or not _optional_iso(value):
            return {}
        since = datetime.fromisoformat(value.replace("Z", "+00:00"))
        since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
        return {USER.key: {"cursor": _iso(since - LEGACY_LOOKBACK)}}

    def permission_hint(self, table: str) -> str:
        return f"ask AwardCo to let this API key read {table}s"

    async def run(self, run: SourceRun) -> None:
        settings = run.settings
        if not isinstance(settings, AwardcoSettings):
            raise TypeError("AwardcoSource.run: expects the AwardcoSettings its configure() returned")
        sync = _AwardcoRun(
            run.client, run.send, concurrency=run.concurrency, start_date=run.start_date,
            updated_since_param=settings.updated_since_param, clock_now=run.clock_now,
        )  # fmt: skip
        await sync.run(run.prior, list(run.tables), report=run.report)


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


class _AwardcoRun:
    """One sync of AwardCo's users."""

    name = "awardco"

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
        # Pages are addressed by number (fetched ahead in parallel): each request names its own page.
        params: dict[str, Any] = {"per_page": PER_PAGE, "page": page}
        if since is not None:
            params[self._param] = since
        return await self._client.get_json(USERS_PATH, params, validate=_users_problem, stream=USER.key)

    async def _pages_in_order(
        self, since: str | None, run: PagesState, pages: Iterable[int], window: int
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

    async def _deliver(self, reply: Reply, run: PagesState, page: int) -> bool:
        users = reply.body["users"]
        convert = self._converter.convert
        rows = [row for row in map(convert, users) if row is not None]
        has_more = page_has_more(reply.body, len(users), PER_PAGE)
        run = PagesState(since=run["since"], started=run["started"], next_page=page + 1)
        await self._send.send(
            Batch(USER.key, USER.source, USER.table, rows, [(("run",), run)], requests=1, total_rows=self._expected)
        )
        return has_more

    async def _sync(self, since: str | None, started: str | None, page: int) -> None:
        reply = await self._fetch(since, page)
        if started is None:
            now = reply.server_time if reply.server_time is not None else self._clock_now
            started = _iso(datetime.fromtimestamp(now, tz=timezone.utc) - CURSOR_MARGIN)
        run = PagesState(since=since, started=started, next_page=page)
        pages = page_count(reply.body, PER_PAGE)
        total = reply.body.get("total")
        if isinstance(total, int):
            self._expected = total
        more = await self._deliver(reply, run, page)
        if more and pages is not None and pages > page:
            # The API said how many pages there are: fetch them all in parallel, deliver in order.
            page, more = await self._pages_in_order(since, run, range(page + 1, pages + 1), self._concurrency)
        if more:
            # No total (or more users than it said, created mid-sync): follow has_more, a few pages ahead.
            page, more = await self._pages_in_order(since, run, itertools.count(page + 1), SPECULATIVE_PAGES)
        done: AwardcoStreamState = {"cursor": started}
        await self._send.send(Batch(USER.key, USER.source, USER.table, [], [((), done)]))


def _optional_iso(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
