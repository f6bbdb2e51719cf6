"""AwardCo users, incremental on `updated_at` with the inclusive `updated_since` filter.

The filter is frozen for the whole sync (the example connector moved it forward after every page while also
advancing the page number, which skips rows). When the API says how many users there are (`total`), the remaining
pages are fetched in parallel and delivered in order. The next sync's `updated_since` is the server's clock at the
first response, less a margin that covers the time the server took to answer it: a user changed after any of this
sync's reads has an `updated_at` at or after that point and is read again next time.

**Paging under churn.** AwardCo has no keyset: pages are numbered over a live set, in an order the API does not
promise. A user deleted (or moved to the end of the order by an update) while a sync pages shifts every later page by
one, so a user who was never touched falls between two pages; ties in the order may come back in a different order
per request, with the same effect. A single read cannot see that it skipped someone, but it can see the signs, so
the set is read in *rounds* until one confirms it:

- a full pass is **clean** when `total` is present, was the same in every response, and the pass returned exactly
  `total` distinct users: nothing moved, no one can be missing. Done (1 pass, as without churn).
- users returned twice in a pass mean the order moved; between two reads of a fixed set of positions a user missing
  means another was returned twice (pigeonhole), so the pages spanned by the duplicates are re-read (a *re-read
  round*) until the users returned since the last full pass number `total`. A change of `total` (users created or
  deleted) or a shortfall without duplicates (a shift) means another full pass. Every row read is upserted, so the
  union of the rounds is what was delivered.
- without `total`: a round that finds no user the earlier rounds had not returned confirms the set when it saw a
  still order (no duplicates); while the order moves, four such rounds in a row are required. So every read is at
  least two passes (an incremental sync of one page: 2 requests).
- after `MAX_PASSES` rounds without confirmation the cursor is not advanced (the next sync reads the same window
  again) and a warning says so; a sweep is not completed (nothing is deleted).

The guarantee: a user that exists for the whole sync and matches the filter is delivered, unless churn keeps moving
it out of every round until `MAX_PASSES`, which is reported. Limit: a delete and a create of the same number between
two requests of one pass, after the deleted user was read, leave `total` as it was and can hide one skipped user
(the next sweep repairs it). Cost (BENCHMARKS.md): no churn, 1 pass with `total`, 2 without; a churn event costs
about one more pass, or a re-read of the pages it moved.

**Reconciliation** (`_reconcile`): every `reconcile_every_hours` the users are read whole (no `updated_since`) by
the same passes, after the incremental read, at most `reconcile_max_requests` per sync; once a sweep confirms, the
employeeIds known but not returned since it started are deleted.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypedDict

import anyio
import httpx
from anyio.abc import ObjectSendStream

from .._config import ConfigReader, Key
from .._exceptions import ConfigurationError, SourceError, StateError
from .._http import ApiClient, ApiKeyAuth, Authenticator, Reply
from .._keyset import KeySet
from .._pagination import page_count, page_has_more
from .._pipeline import Batch, fetch_in_order
from .._redaction import Secret
from .._source import SourceReport, SourceRun, report_conversions, without_userinfo
from .._state import AddKeys, StatePatch
from .._streams import RowConverter, Stream
from .._time import parse_iso8601
from ._reconcile import KeyTracker, SweepBudget

__all__ = ["AWARDCO_STREAMS", "AwardcoSettings", "AwardcoSource", "AwardcoStreamState", "PagesState"]

logger = logging.getLogger("syncflow")

USERS_PATH = "/api/users"
PER_PAGE = 100
CURSOR_MARGIN = timedelta(seconds=60)
# Without `total`, how many pages to fetch ahead of the one being delivered: at most this many minus one requests
# are spent past the last page, for several times the speed of one page per round trip. A first sync asks as many at
# once, before page 1's answer says how many there are (`_Opening`): a list of fewer pages costs as many requests
# more, once per connection. (More would cover the whole round trip at 150 ms -- ~600 rows of the SDK's writer --
# but cost a small list up to that many requests: not measured, not done.)
SPECULATIVE_PAGES = 4
# Passes over a moving set before giving up on confirming it (the cursor then stays put; see the module docstring).
MAX_PASSES = 16

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


class PagesState(TypedDict, total=False):
    """A read under way: the frozen `updated_since`, the next sync's cursor, the next page to deliver and which
    round of reads (pass) it is in (see the module docstring)."""

    since: str | None
    started: str | None
    next_page: int
    # "pass" (the round number) is a keyword: set as state["pass"], see _AwardcoRun._read_prior.


class AwardcoStreamState(TypedDict, total=False):
    """AwardCo's user stream in the state: the cursor (ISO-8601) and, mid-sync, the pages being read."""

    cursor: str | None
    run: PagesState
    # Reconciliation (sources/_reconcile.py): the known employeeIds ("keys"), a sweep under way ("sweep") and when
    # the last one completed ("swept").


@dataclass(frozen=True)
class AwardcoSettings:
    """AwardCo's part of the configuration (`Settings.sources["awardco"]`, present when AwardCo is configured)."""

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
        return {USER.key: {"cursor": _iso(parse_iso8601(value) - LEGACY_LOOKBACK)}}

    def permission_hint(self, table: str) -> str:
        return f"ask AwardCo to let this API key read {table}s"

    async def run(self, run: SourceRun) -> None:
        settings = run.settings
        if not isinstance(settings, AwardcoSettings):
            raise TypeError("AwardcoSource.run: expects the AwardcoSettings its configure() returned")
        sync = _AwardcoRun(
            run.client, run.send, concurrency=run.concurrency, start_date=run.start_date,
            updated_since_param=settings.updated_since_param, clock_now=run.clock_now,
            reconcile_every_seconds=run.reconcile_every_seconds, sweep_requests=run.sweep_requests,
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


@dataclass
class _Round:
    """What one round of reads observed: a full pass (page 1 to the end) or a re-read of suspect pages."""

    number: int
    full: bool
    from_start: bool  # a full pass that began at page 1 (one resumed mid-way after a crash saw part of the set)
    # page -> the employeeIds it returned, this round. As key sets (a page's ids are a few ranges), not lists of
    # strings: a pass over 140,000 users held ~9 MB of id strings here until the read ended.
    pages: dict[int, KeySet] = field(default_factory=dict)
    keys: KeySet = field(default_factory=KeySet)  # every employeeId this round returned
    returned: int = 0  # users this round returned, counting each time a user was returned
    new: int = 0  # users no earlier round of this read had returned
    totals: set[int] = field(default_factory=set)
    out_of_budget: bool = False
    _suspect: set[int] = field(default_factory=set)

    def record(self, page: int, key: str) -> None:
        """`page` returned the user `key`."""
        ids = self.pages.get(page)
        if ids is None:
            ids = self.pages[page] = KeySet()
        if key in self.keys:
            # Seen twice in this round (rare: the order moved): the pages it appeared on, first to last, are suspect.
            # The union of these spans over every repeat is the span from its first page to its last.
            on = [p for p, theirs in self.pages.items() if key in theirs]
            self._suspect.update(range(min([*on, page]), max([*on, page]) + 1))
        self.keys.add(key)
        ids.add(key)
        self.returned += 1

    def suspect_pages(self) -> list[int]:
        """The pages from the first to the last on which a user seen twice in this round appeared.

        Between two reads of a fixed set of positions, a user missing means another one was returned twice
        (pigeonhole), so the pages spanned by duplicates hold every user a moving order made the round miss.
        """
        return sorted(self._suspect)

    @property
    def duplicates(self) -> bool:
        return bool(self._suspect)


_OUT_OF_BUDGET = object()
# Without `total`, a read whose order moves (duplicates) ends only after this many rounds in a row found no one new.
_QUIET_ROUNDS = 4


class _AwardcoRun:
    """One sync of AwardCo's users: the incremental read in confirming rounds, then a sweep when one is due."""

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
        reconcile_every_seconds: float = 24 * 3600.0,
        sweep_requests: int = 250,
    ) -> None:
        self._client = client
        self._send = send
        self._concurrency = concurrency
        self._start = _iso(start_date) if start_date else None
        self._param = updated_since_param
        self._clock_now = clock_now
        self._converter: RowConverter = USER.converter()
        self._expected: int | None = None
        self._reconcile_every = reconcile_every_seconds
        self._sweep_budget = SweepBudget(sweep_requests)
        self._keys: KeyTracker | None = None
        self._server_now: int | None = None
        self._opening: _Opening | None = None

    async def run(
        self, prior: Mapping[str, Mapping[str, Any]], tables: list[str], *, report: SourceReport | None = None
    ) -> SourceReport:
        # The caller may pass its report, so it keeps what completed even if this source ends with an error.
        report = report if report is not None else SourceReport(self.name)
        if "user" not in tables:
            return report
        entry = prior.get(USER.key, {})
        self._keys = KeyTracker(USER, entry, report)
        try:
            since, started, first_page, pass_number = self._read_prior(entry)
        except StateError as exc:
            logger.warning("%s; resyncing %s from the start", exc, USER.key)
            report.warnings.append(f"{exc}; resynced from the start")
            since, started, first_page, pass_number = self._start, None, 1, 1
        if first_page > 1:
            logger.info("%s: resuming an interrupted sync at page %d", USER.key, first_page)
        saved_run = entry.get("run") if started is not None and isinstance(entry.get("run"), dict) else None
        # A first sync (nothing saved) reads every user: its first pages are asked together.
        ahead = min(SPECULATIVE_PAGES, self._concurrency) - 1 if not entry else 0
        if not await self._sync(since, started, first_page, pass_number, report, saved_run, ahead=ahead):
            report.warnings.append(
                f"{USER.key}: the users kept moving during {MAX_PASSES} passes; the next sync reads them again"
            )
        if self._keys.due(self._now(), self._reconcile_every):
            await self._sweep()
        report.completed.append(USER.key)
        report_conversions(report, self._converter)
        return report

    def _now(self) -> int:
        return self._server_now if self._server_now is not None else int(self._clock_now)

    def _read_prior(self, prior: Mapping[str, Any]) -> tuple[str | None, str | None, int, int]:
        run = prior.get("run")
        if isinstance(run, dict):
            since, started, page = run.get("since"), run.get("started"), run.get("next_page")
            number = run.get("pass", 1)
            if (
                _optional_iso(since) and _optional_iso(started) and isinstance(page, int) and page >= 1
                and isinstance(number, int) and number >= 1
            ):  # fmt: skip
                return since, started, page, number
            raise StateError(f"state: {USER.key} has a malformed 'run' entry")
        cursor = prior.get("cursor")
        if cursor is not None and not _optional_iso(cursor):
            raise StateError(f"state: {USER.key} has a malformed cursor {cursor!r}")
        return (cursor if cursor is not None else self._start), None, 1, 1

    async def _fetch(self, since: str | None, page: int) -> Reply:
        opening = self._opening
        if opening is not None:
            asked = await opening.take(since, page)
            if asked is not None:
                return asked
        return await self._ask(since, page)

    async def _ask(self, since: str | None, page: int) -> Reply:
        # Pages are addressed by number (fetched ahead in parallel): each request names its own page.
        params: dict[str, Any] = {"per_page": PER_PAGE, "page": page}
        if since is not None:
            params[self._param] = since
        return await self._client.get_json(USERS_PATH, params, validate=_users_problem, stream=USER.key)

    async def _pages_in_order(
        self, since: str | None, where: str, seen: _Round, view: KeySet, union: KeySet, pages: Iterable[int],
        window: int, budget: SweepBudget | None,
    ) -> tuple[int, bool]:  # fmt: skip
        """Fetch `pages` up to `window` ahead and deliver them in order until one says there is no more.

        A page fetched ahead of the last one may fail (an API that answers 404 past the end): its error is kept and
        raised only if delivery reaches that page, so it never fails a sync that had already ended.
        Returns the last page delivered and whether the API said more follow it.
        """
        last: tuple[int, bool] = (0, False)

        async def fetch(index: int) -> Reply | SourceError | object:
            if budget is not None and not budget.take():
                return _OUT_OF_BUDGET
            try:
                return await self._fetch(since, index)
            except SourceError as exc:
                return exc

        async def deliver(index: int, result: Reply | SourceError | object) -> bool:
            nonlocal last
            if isinstance(result, SourceError):
                raise result
            if not isinstance(result, Reply):
                seen.out_of_budget = True
                return False
            last = (index, await self._deliver(result, where, index, seen, view, union))
            return last[1] or not seen.full  # a re-read round reads every page it chose

        await fetch_in_order(pages, fetch, deliver, window=window)
        return last

    async def _deliver(self, reply: Reply, where: str, page: int, seen: _Round, view: KeySet, union: KeySet) -> bool:
        users = reply.body["users"]
        convert = self._converter.convert
        rows = [row for row in map(convert, users) if row is not None]
        for row in rows:
            key = row["employeeId"]
            seen.record(page, key)
            view.add(key)
            if key not in union:
                union.add(key)
                seen.new += 1
        total = reply.body.get("total")
        if isinstance(total, int) and not isinstance(total, bool):
            seen.totals.add(total)
        has_more = page_has_more(reply.body, len(users), PER_PAGE)
        # A crash in a re-read round resumes with a full pass from page 1 (the round's page list is not saved).
        resume_at = page + 1 if seen.full else 1
        patch: list[tuple[tuple[str, ...], Any]] = [((where, "next_page"), resume_at), ((where, "pass"), seen.number)]
        assert self._keys is not None
        if where == "sweep":
            self._keys.repaired += len(rows)
        # What the pass has seen is saved with it: a sweep's pass may span several syncs (its budget), and a sync
        # killed mid-pass resumes it. Without this, a resumed pass could not be confirmed (it had not seen the pages
        # before the kill) and every user was read again: a whole pass of redo, not the one checkpoint interval a
        # kill may cost.
        if seen.full and page == 1:
            patch += [((where, "view"), None), ((where, "from_start"), True)]
        patch += [((where, "view"), AddKeys([row["employeeId"] for row in rows])),
                  ((where, "totals"), sorted(seen.totals))]  # fmt: skip
        patch.extend(self._keys.ops_for(rows))
        await self._send.send(
            Batch(USER.key, USER.source, USER.table, rows, patch, requests=1, total_rows=self._expected)
        )
        return has_more

    async def _full_pass(
        self, since: str | None, where: str, seen: _Round, view: KeySet, union: KeySet, page: int,
        first: Reply | None, budget: SweepBudget | None,
    ) -> None:  # fmt: skip
        if first is None:
            if budget is not None and not budget.take():
                seen.out_of_budget = True
                return
            first = await self._fetch(since, page)
        pages = page_count(first.body, PER_PAGE)
        total = first.body.get("total")
        if isinstance(total, int):
            self._expected = total
        more = await self._deliver(first, where, page, seen, view, union)
        if more and pages is not None and pages > page:
            # The API said how many pages there are: fetch them all in parallel, deliver in order.
            page, more = await self._pages_in_order(since, where, seen, view, union,
                                                    range(page + 1, pages + 1),
                                                    self._concurrency, budget)  # fmt: skip
        if more and not seen.out_of_budget:
            # No total (or more users than it said, created mid-sync): follow has_more, a few pages ahead.
            page, more = await self._pages_in_order(since, where, seen, view, union, itertools.count(page + 1),
                                                    SPECULATIVE_PAGES, budget)  # fmt: skip

    async def _read_until_confirmed(
        self, since: str | None, where: str, page: int, number: int, first: Reply | None, budget: SweepBudget | None,
        saved: Mapping[str, Any] | None = None,
    ) -> bool | None:  # fmt: skip
        """Rounds until the set is confirmed (True); False after MAX_PASSES rounds; None when the budget ran out.

        `saved`: the progress of a pass that began in an earlier sync (a sweep's, or an interrupted sync's): its
        view, totals, whether it began at 1.
        """
        union = KeySet()  # every user any round of this read returned
        view = KeySet()  # every user returned since the last full pass began
        rounds: list[_Round] = []
        pass_totals: set[int] = set()
        last_full: _Round | None = None
        resumed: _Round | None = None
        if saved is not None and page > 1:
            assert self._keys is not None
            try:
                view = KeySet.from_json(saved.get("view"), f"{USER.key} {where} view")
            except StateError:
                view = KeySet()
            resumed = _Round(number, full=True, from_start=saved.get("from_start") is True and len(view) > 0)
            totals = saved.get("totals")
            if isinstance(totals, list):
                resumed.totals = {t for t in totals if isinstance(t, int) and not isinstance(t, bool)}
            if where == "sweep":
                self._keys.merge()
                assert self._keys.seen is not None
                union = KeySet(self._keys.seen)  # what the sweep saw before this sync, for "no one new"
            else:
                # The rounds before the kill are not saved, only this pass's users: fewer than the read returned,
                # so a user may count as new that was not (one more round, never one less).
                union = KeySet(view)
        while True:
            full = last_full is None or not _reread_suffices(rounds[-1], last_full)
            seen = _Round(number, full=full, from_start=full and page == 1)
            if resumed is not None:
                seen, resumed = resumed, None
            if full:
                if page == 1:
                    view = KeySet()
                pass_totals = set()
                await self._full_pass(since, where, seen, view, union, page, first, budget)
                if self._opening is not None:
                    self._opening.close()  # a later round reads its pages afresh
                last_full = seen
            else:
                assert last_full is not None
                await self._pages_in_order(since, where, seen, view, union, last_full.suspect_pages(),
                                           self._concurrency, budget)  # fmt: skip
            if seen.out_of_budget:
                return None
            rounds.append(seen)
            pass_totals |= seen.totals
            if _confirmed(rounds, last_full, view, pass_totals):
                return True
            if number >= MAX_PASSES:
                logger.warning("%s: the users kept moving during %d rounds of reads; not confirmed", USER.key, number)
                return False
            assert last_full is not None
            logger.info(
                "%s: %s %d returned %d users (%d new; totals %s): reading %s to confirm",
                USER.key, "pass" if seen.full else "re-read", number, seen.returned, seen.new,
                sorted(seen.totals) or "absent", "again" if not _reread_suffices(seen, last_full) else "moving pages",
            )  # fmt: skip
            number, page, first = number + 1, 1, None

    async def _sync(
        self, since: str | None, started: str | None, page: int, number: int, report: SourceReport,
        resumed_run: Mapping[str, Any] | None, *, ahead: int = 0,
    ) -> bool:  # fmt: skip
        async with anyio.create_task_group() as tg:
            if ahead:
                self._opening = _Opening(since, range(page + 1, page + 1 + ahead))
                tg.start_soon(self._opening.ask_all, self._ask)
            try:
                reply = await self._fetch(since, page)
                now = reply.server_time if reply.server_time is not None else self._clock_now
                self._server_now = int(now)
                fresh = started is None
                if started is None:
                    started = _iso(datetime.fromtimestamp(now, tz=timezone.utc) - CURSOR_MARGIN)
                if fresh:
                    run = {"since": since, "started": started, "next_page": page, "pass": number}
                    await self._send.send(Batch(USER.key, USER.source, USER.table, [], [(("run",), run)]))
                confirmed = await self._read_until_confirmed(since, "run", page, number, reply, None,
                                                             saved=None if fresh else resumed_run)  # fmt: skip
            finally:
                if self._opening is not None:
                    self._opening.close()
                    self._opening = None
        assert self._keys is not None
        done: list[tuple[tuple[str, ...], Any]] = [(("run",), None)]
        if confirmed:
            done.append((("cursor",), started))
            done.extend(self._keys.first_read_ops(self._now()))
        await self._send.send(Batch(USER.key, USER.source, USER.table, [], done))
        return bool(confirmed)

    async def _sweep(self) -> None:
        keys = self._keys
        assert keys is not None
        if keys.sweep is None:
            await self._send.send(
                Batch(USER.key, USER.source, USER.table, [], keys.begin(self._now(), next_page=1, **{"pass": 1}))
            )
            logger.info("%s: reconciliation sweep started", USER.key)
        assert keys.sweep is not None
        page, number = keys.sweep.get("next_page", 1), keys.sweep.get("pass", 1)
        if not (isinstance(page, int) and page >= 1 and isinstance(number, int) and number >= 1):
            page, number = 1, 1
        confirmed = await self._read_until_confirmed(
            None, "sweep", page, number, None, self._sweep_budget, saved=keys.sweep
        )
        if confirmed is None:
            logger.info("%s: reconciliation used this sync's share of the budget; it continues next sync", USER.key)
            return
        if not confirmed:
            # Never delete on an unconfirmed read: start the sweep's passes over next sync.
            await self._send.send(
                Batch(USER.key, USER.source, USER.table, [], [(("sweep", "next_page"), 1), (("sweep", "pass"), 1)])
            )
            return
        async def ask(patch: StatePatch) -> None:
            await self._send.send(Batch(USER.key, USER.source, USER.table, [], patch))

        deletes, ops = await keys.finish(ask)
        await self._send.send(Batch(USER.key, USER.source, USER.table, [], ops, deletes=deletes))


class _Opening:
    """A first sync's pages after page 1, asked together with it, before its answer says how many there are: the
    writer gets them a round trip sooner (a first sync reads every user). Each answer is handed to the first pass
    only, once (`take`); `close` cancels what is still asked (pages past the end: at most SPECULATIVE_PAGES - 1
    requests spent, once per connection) and drops what was not taken, so a later round reads its pages afresh. A
    page that failed raises only where the pass takes it: one past the end never fails the sync."""

    def __init__(self, since: str | None, pages: range) -> None:
        self._since = since
        self._done = {page: anyio.Event() for page in pages}
        self._answers: dict[int, Reply | SourceError] = {}
        self._scope = anyio.CancelScope()

    def __repr__(self) -> str:
        return f"<_Opening pages={sorted(self._done)} answered={sorted(self._answers)}>"

    async def ask_all(self, ask: Callable[[str | None, int], Awaitable[Reply]]) -> None:
        async def one(page: int, done: anyio.Event) -> None:
            try:
                self._answers[page] = await ask(self._since, page)
            except SourceError as exc:
                self._answers[page] = exc
            finally:
                done.set()

        with self._scope:
            async with anyio.create_task_group() as tg:
                for page, done in list(self._done.items()):
                    tg.start_soon(one, page, done)

    async def take(self, since: str | None, page: int) -> Reply | None:
        """Page `page`'s answer if it was asked here (None: ask it now)."""
        done = self._done.pop(page, None) if since == self._since else None
        if done is None:
            return None
        await done.wait()
        answer = self._answers.pop(page, None)
        if answer is None:  # cancelled before it was answered: only `close` cancels, after which nothing is taken
            return None
        if isinstance(answer, SourceError):
            raise answer
        return answer

    def close(self) -> None:
        self._done.clear()
        self._answers.clear()
        self._scope.cancel()


def _reread_suffices(latest: _Round, last_full: _Round) -> bool:
    """Whether re-reading the last full pass's suspect pages can settle the set (the order moved, the set did not).

    A change of `total`, a pass resumed mid-way, or a full pass without duplicates that still left the set
    unconfirmed (a shift: a user deleted or moved ahead of the pager) needs a new full pass.
    """
    if not last_full.from_start or len(last_full.totals) > 1 or not last_full.duplicates:
        return False
    return not latest.totals or latest.totals == last_full.totals


def _confirmed(rounds: list[_Round], last_full: _Round | None, view: KeySet, totals: set[int]) -> bool:
    latest = rounds[-1]
    if last_full is None or not last_full.from_start:
        return False
    if totals:
        # `total` said how many users there are, it did not change since the last full pass began, and the reads
        # since then returned exactly that many distinct users: none is missing.
        return len(totals) == 1 and len(view) == next(iter(totals))
    if latest.new:
        return False
    if not latest.duplicates and len(rounds) > 1:
        return True  # a confirming round found no one new and saw a still order
    quiet = 0
    for previous in reversed(rounds):
        if previous.new:
            break
        quiet += 1
    return quiet >= _QUIET_ROUNDS


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
