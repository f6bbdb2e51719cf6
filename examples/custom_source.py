"""A third REST API synced by syncflow, from public names alone: a `syncflow.Source` plug-in.

The API here is a small ticket tracker served in-process (`TicketsAPI`, an `httpx.MockTransport`), so the example
runs offline:

    GET /v1/tickets?after_id=<id>&limit=<n>&updated_after=<iso>&updated_before=<iso>
        -> {"tickets": [{"id", "title", "status", "updated_at"}, ...], "has_more": bool}
    header "X-Api-Key"; it answers with X-RateLimit-Remaining / X-RateLimit-Reset (and 429 + Retry-After when told)

The plug-in owns its configuration keys (`tickets_api_key`, `tickets_base_url`, `tickets_requests_per_hour`), its
stream, its auth (an API key header) and what one sync does; the engine gives it what every source gets:

- **order and checkpoints**: batches are delivered in order per stream, and a batch's state patch is applied only
  after its rows are written, so a checkpoint never covers a row that was not delivered; a crash resumes from the
  last checkpoint (here: the last id delivered inside a frozen window);
- **rate limits and retries**: its requests go through a per-API token bucket (`tickets_requests_per_hour`) that
  also obeys the server's X-RateLimit-* headers and 429 + Retry-After, with time-bounded retries;
- **failure isolation**: a stream that fails for good is reported, and the other sources' streams carry on.

Run it: `python examples/custom_source.py`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

import syncflow
from syncflow import ApiKeyAuth, Authenticator, Batch, ConfigReader, Key, Secret, SourceRun, Stream, SyncResult

PAGE_LIMIT = 50
# The window's upper bound is frozen this far behind the clock at sync start: a ticket stamped while the sync runs
# is read by the next one, and a page cannot shift under the keyset (ids only ever grow within a window).
SETTLE = timedelta(seconds=5)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the plug-in -------------------------------------------------------------------------------------------------

TICKET = Stream(
    "tickets",
    "ticket",
    {"id": "LONG", "title": "STRING", "status": "STRING", "updated_at": "UTC_DATETIME"},
    ("id",),
    "updated_at",
    endpoint="/v1/tickets",
)


@dataclass(frozen=True)
class TicketsSettings:
    """What `TicketsSource.configure` reads; the engine uses `base_url`, `requests_per_hour` and the two methods."""

    api_key: Secret  # never shown in a repr, log line or error
    base_url: str
    requests_per_hour: int

    def fingerprint(self) -> str:
        # Recorded in the state: a state saved against another host is not applied to this one.
        return self.base_url

    def authenticator(self, http: httpx.AsyncClient, *, api: str, max_response_bytes: int) -> Authenticator:
        return ApiKeyAuth(self.api_key, header="X-Api-Key")


def _tickets_problem(body: Any) -> str | None:
    """What is wrong with a page's body (None when nothing): a malformed page is retried, never taken as empty."""
    if not isinstance(body, dict) or not isinstance(body.get("tickets"), list):
        return "body has no 'tickets' list"
    if not isinstance(body.get("has_more"), bool):
        return "body has no 'has_more' boolean"
    return None


class TicketsSource:
    """The ticket tracker as a `syncflow.Source`."""

    name = "tickets"
    keys = (
        Key("tickets_api_key", "Tickets API key", "The tracker's API key (sent as X-Api-Key).", "secret"),
        Key("tickets_base_url", "Tickets base URL", "The tracker's host, without /v1.", "url",
            placeholder="https://tickets.example.com"),
        Key("tickets_requests_per_hour", "Tickets requests per hour", "Client-side budget for the tracker.",
            "integer", "3600", "3600", minimum=1),
    )  # fmt: skip
    streams: Mapping[str, Stream] = {"ticket": TICKET}

    def configure(self, config: ConfigReader) -> TicketsSettings | None:
        key = config.text("tickets_api_key")
        if not key and not config.text("tickets_base_url"):
            return None  # not set up: the other sources sync alone
        if not key:
            raise syncflow.ConfigurationError(f"{config.name('tickets_api_key')}: missing; set the tracker's API key")
        base_url = config.url("tickets_base_url", forbidden_suffixes=("/v1",))
        return TicketsSettings(Secret(key), base_url, config.integer("tickets_requests_per_hour"))

    def mock_configuration(self) -> Mapping[str, str]:
        return {}  # syncflow's simulator does not simulate this API

    def migrate_state(self, legacy: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
        return {}  # no older connector's state to read

    def permission_hint(self, table: str) -> str:
        return f"ask the tracker's admin to let this API key read {table}s"

    async def run(self, run: SourceRun) -> None:
        prior = run.prior.get(TICKET.key, {})
        saved = prior.get("run")
        if isinstance(saved, dict):  # an interrupted sync: the same window, from the last id delivered
            lower, upper, after = saved["lower"], saved["upper"], saved["after_id"]
        else:
            start = _iso(run.start_date) if run.start_date else None
            lower = prior.get("cursor", start)
            upper = _iso(datetime.fromtimestamp(run.clock_now, tz=timezone.utc) - SETTLE)
            after = 0
        converter = TICKET.converter()
        while True:
            params: dict[str, str | int] = {"after_id": after, "limit": PAGE_LIMIT, "updated_before": upper}
            if lower is not None:
                params["updated_after"] = lower
            # `stream=` labels the request: the sync's per-stream figures come from it.
            reply = await run.client.get_json(TICKET.endpoint, params, validate=_tickets_problem, stream=TICKET.key)
            records = reply.body["tickets"]
            rows = [row for row in map(converter.convert, records) if row is not None]
            if records:
                after = max(int(record["id"]) for record in records)
            # The patch is applied once these rows are written: a checkpoint then resumes after `after`.
            patch = [(("run",), {"lower": lower, "upper": upper, "after_id": after})]
            await run.send.send(Batch(TICKET.key, self.name, TICKET.table, rows, patch, requests=1))
            if not reply.body["has_more"]:
                break
        # The window is done: the next sync starts where it ended.
        await run.send.send(Batch(TICKET.key, self.name, TICKET.table, [], [((), {"cursor": upper})]))
        run.report.completed.append(TICKET.key)


# -- the API, in process -----------------------------------------------------------------------------------------


@dataclass
class TicketsAPI:
    """The tracker's HTTP API over an in-memory table; `transport()` is what syncflow sends requests to."""

    tickets: int = 230
    api_key: str = "demo-key"
    answer_429: int = 0  # this many requests are refused with 429 + Retry-After first
    remaining: int = 10_000  # what X-RateLimit-Remaining reports
    requests: list[httpx.Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        base = datetime(2024, 1, 1, tzinfo=timezone.utc)
        self.records = [
            {"id": n, "title": f"ticket {n}", "status": ("open", "closed")[n % 2],
             "updated_at": _iso(base + timedelta(minutes=n))}
            for n in range(1, self.tickets + 1)
        ]  # fmt: skip

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        headers = {"X-RateLimit-Remaining": str(self.remaining), "X-RateLimit-Reset": "3600"}
        if request.headers.get("X-Api-Key") != self.api_key:
            return httpx.Response(401, json={"error": "bad key"}, headers=headers)
        if self.answer_429 > 0:
            self.answer_429 -= 1
            return httpx.Response(429, json={"error": "slow down"}, headers={**headers, "Retry-After": "0"})
        if request.url.path != "/v1/tickets":
            return httpx.Response(404, json={"error": "no such resource"}, headers=headers)
        query = request.url.params
        after, limit = int(query.get("after_id", "0")), int(query.get("limit", "50"))
        low, high = query.get("updated_after"), query.get("updated_before")
        chosen = [
            t for t in self.records
            if t["id"] > after and (low is None or t["updated_at"] > low) and (high is None or t["updated_at"] <= high)
        ]  # fmt: skip
        return httpx.Response(200, json={"tickets": chosen[:limit], "has_more": len(chosen) > limit}, headers=headers)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


class ListSink:
    """A `syncflow.Sink` keeping rows in memory (by primary key) and the last checkpoint, serialised."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[Any, Mapping[str, Any]]] = {}
        self.order: list[Any] = []
        self.state: dict[str, Any] | None = None

    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        self.rows.setdefault((schema, table), {})[row["id"]] = dict(row)
        self.order.append(row["id"])

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        self.state = json.loads(json.dumps(state))  # serialised now: the engine goes on changing its own copy


def configuration(api: TicketsAPI, **overrides: str) -> dict[str, str]:
    return {
        "tickets_api_key": api.api_key,
        "tickets_base_url": "https://tickets.example.com",
        "checkpoint_every_rows": "50",
        **overrides,
    }


def sync(api: TicketsAPI, sink: syncflow.Sink, state: Mapping[str, Any] | None = None,
         sources: Sequence[syncflow.Source] = (TicketsSource(),)) -> SyncResult:  # fmt: skip
    return syncflow.sync(configuration(api), sink, state=state, sources=list(sources), transport=api.transport())


def main() -> None:
    api = TicketsAPI(answer_429=1)
    sink = ListSink()
    result = sync(api, sink)
    summary = result.streams[TICKET.key]
    print(f"{TICKET.key}: {summary.rows} rows in {summary.requests} requests ({summary.rate_limited} answered 429)")
    print("state:", sink.state)
    again = sync(api, ListSink(), state=sink.state)
    print(f"next sync: {again.streams[TICKET.key].rows} rows (nothing changed)")


if __name__ == "__main__":
    main()
