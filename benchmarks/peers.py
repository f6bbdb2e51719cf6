"""The peers written for the benchmark, as Connector SDK `update()` functions, plus the bare `op.upsert` loop.

All of them write the same typed rows (syncflow's own `RowConverter`, declared by syncflow's `schema()`) through the
same runner, so the only difference measured is how pages are fetched:

- `sequential_update`: one page after another with `requests` (the AwardCo example connector's approach).
- `lockstep5_update`: pages p..p+4 submitted to a ThreadPoolExecutor(5), wait for all five, upsert, repeat until a
  page comes back empty (the Accelo example connector's approach).
- `bare_upsert_update`: no network at all: a loop of `op.upsert` over rows converted before the runner started.

Both fetching peers checkpoint after each table and every `CHECKPOINT_ROWS` rows, like syncflow's default, so the
runner flushes to DuckDB equally often for everybody.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from fivetran_connector_sdk import Operations as op

from syncflow.sources._accelo_catalog import RESOURCES, STREAM_NAMES
from syncflow.sources.awardco import USER

# The benchmarks compare systems on the six tables every peer implements (not the whole catalogue).
ACCELO_STREAMS = {name: RESOURCES[name] for name in STREAM_NAMES}

__all__ = ["bare_upsert_update", "lockstep5_update", "sequential_update", "typed_rows"]

PAGE = 100
CHECKPOINT_ROWS = 5000
REQUEST_TIMEOUT = 30.0  # seconds per request: a stuck socket must not hang the benchmark
MAX_ATTEMPTS = 8
LOCKSTEP = 5


class _Upserter:
    """Upserts typed rows and checkpoints every `every` rows (what the runner flushes to DuckDB on): syncflow's
    `checkpoint_every_rows` when the configuration sets it (the worker's --checkpoint-every-rows), so every system
    of a run checkpoints on the same cadence; CHECKPOINT_ROWS (syncflow's default) otherwise."""

    def __init__(self, configuration: Mapping[str, Any]) -> None:
        self.every = int(configuration.get("checkpoint_every_rows") or CHECKPOINT_ROWS)
        self.rows = 0
        self._since_checkpoint = 0
        self.state: dict[str, Any] = {}

    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        op.upsert(table, row, schema=schema)
        self.rows += 1
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.every:
            self.checkpoint()

    def checkpoint(self) -> None:
        self._since_checkpoint = 0
        op.checkpoint(dict(self.state))


def _get_json(session: requests.Session, url: str, params: Mapping[str, Any], headers: Mapping[str, str]) -> Any:
    """GET with the retry any production loop has: 429/5xx wait (Retry-After when given) and try again, bounded."""
    for attempt in range(MAX_ATTEMPTS):
        response = session.get(url, params=dict(params), headers=dict(headers), timeout=REQUEST_TIMEOUT)
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("retry-after", "")
            time.sleep(float(retry_after) if retry_after.isdigit() else min(30.0, 0.5 * 2**attempt))
            continue
        response.raise_for_status()
        return response.json()
    raise RuntimeError(f"{url}: still failing after {MAX_ATTEMPTS} attempts")


def _accelo_token(session: requests.Session, configuration: Mapping[str, str]) -> str:
    response = session.post(
        configuration["accelo_base_url"] + "/oauth2/v0/token",
        auth=(configuration["accelo_client_id"], configuration["accelo_client_secret"]),
        data={"grant_type": "client_credentials", "scope": "read(all)"},
        timeout=REQUEST_TIMEOUT,
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def _accelo_page(
    session: requests.Session, configuration: Mapping[str, str], token: str, entity: str, page: int
) -> list[dict[str, Any]]:
    fields = ",".join(ACCELO_STREAMS[entity].columns)
    body = _get_json(
        session,
        f"{configuration['accelo_base_url']}/api/v0/{entity}",
        {"_fields": fields, "_limit": PAGE, "_page": page},
        {"Authorization": f"Bearer {token}"},
    )
    records: list[dict[str, Any]] = body["response"]
    return records


def _awardco_page(session: requests.Session, configuration: Mapping[str, str], page: int) -> Any:
    return _get_json(
        session,
        f"{configuration['awardco_base_url']}/api/users",
        {"page": page, "per_page": PAGE},
        {"apiKey": configuration["awardco_api_key"]},
    )


def sequential_update(configuration: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    out = _Upserter(configuration)
    with requests.Session() as session:
        token = _accelo_token(session, configuration)
        for entity, stream in ACCELO_STREAMS.items():
            converter = stream.converter()
            page = 0
            while True:
                records = _accelo_page(session, configuration, token, entity, page)
                for record in records:
                    row = converter.convert(record)
                    if row is not None:
                        out.upsert("accelo", entity, row)
                if len(records) < PAGE:  # a short page is the last: no extra request for an empty one
                    break
                page += 1
            out.state[entity] = "done"
            out.checkpoint()
        converter = USER.converter()
        page = 1
        while True:
            body = _awardco_page(session, configuration, page)
            for record in body["users"]:
                row = converter.convert(record)
                if row is not None:
                    out.upsert("awardco", "user", row)
            if not body.get("has_more"):
                break
            page += 1
        out.state["user"] = "done"
        out.checkpoint()


def lockstep5_update(configuration: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    out = _Upserter(configuration)
    # One session per worker thread would be the careful version; requests.Session is shared by the example too,
    # and its connection pool (10 per host) is larger than the five requests in flight.
    with requests.Session() as session, ThreadPoolExecutor(max_workers=LOCKSTEP) as pool:
        token = _accelo_token(session, configuration)
        for entity, stream in ACCELO_STREAMS.items():
            converter = stream.converter()
            page = 0
            done = False
            while not done:
                batch = [
                    pool.submit(_accelo_page, session, configuration, token, entity, p)
                    for p in range(page, page + LOCKSTEP)
                ]
                for future in batch:  # in page order; wait for all five before the next batch
                    records = future.result()
                    if not records:
                        done = True
                    for record in records:
                        row = converter.convert(record)
                        if row is not None:
                            out.upsert("accelo", entity, row)
                page += LOCKSTEP
            out.state[entity] = "done"
            out.checkpoint()
        converter = USER.converter()
        page = 1
        done = False
        while not done:
            futures = [pool.submit(_awardco_page, session, configuration, p) for p in range(page, page + LOCKSTEP)]
            for future in futures:
                users = future.result()["users"]
                if not users:
                    done = True
                for record in users:
                    row = converter.convert(record)
                    if row is not None:
                        out.upsert("awardco", "user", row)
            page += LOCKSTEP
        out.state["user"] = "done"
        out.checkpoint()


def typed_rows(
    ground_truth: Mapping[str, Mapping[str, list[dict[str, Any]]]],
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(schema, table, typed row) for every ground-truth record, converted as syncflow converts them."""
    for entity, stream in ACCELO_STREAMS.items():
        converter = stream.converter()
        for record in ground_truth["accelo"][entity]:
            row = converter.convert(record)
            if row is not None:
                yield "accelo", entity, row
    converter = USER.converter()
    for record in ground_truth["awardco"]["user"]:
        row = converter.convert(record)
        if row is not None:
            yield "awardco", "user", row


def bare_upsert_update(rows: list[tuple[str, str, dict[str, Any]]]) -> Any:
    """An `update()` that only upserts `rows` (already typed) and checkpoints like the others: the drain's bound."""

    def update(configuration: Mapping[str, Any], state: Mapping[str, Any]) -> None:
        out = _Upserter(configuration)
        for schema, table, row in rows:
            out.upsert(schema, table, row)
        out.checkpoint()

    return update
