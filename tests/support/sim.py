"""Helpers shared by the tests: a configuration for the in-process simulator, a sink that records what the SDK
would keep, one sync against the simulator, and ground-truth comparisons.

Imported as `from support.sim import ...` (never from conftest, which only holds fixtures)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from syncflow import Settings
from syncflow._state import StateDocument
from syncflow._sync import SyncResult, run_sync
from syncflow.sim import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET, AWARDCO_API_KEY, Simulator
from syncflow.sources import ACCELO_STREAMS, AWARDCO_STREAMS
from syncflow.sources._accelo_catalog import STREAM_NAMES

# Loopback, since plain http is refused for any other host; the injected in-process transport means nothing is
# ever sent to it (and should a test forget the transport, nothing listens on the discard port).
SIM_URL = "http://127.0.0.1:9"

SMALL_COUNTS = {"companies": 230, "invoices": 410, "payments": 170, "prospects": 90, "jobs": 260, "staff": 35}


#: The tables the engine's tests were written against (the six Accelo tables of earlier releases and AwardCo's):
#: what `sim_configuration` syncs unless a test says otherwise (`streams=""`: the whole catalogue). The catalogue's
#: own tests (test_accelo_catalog.py, test_accelo_full_catalog.py) sync every resource.
CLASSIC_STREAMS = (*(f"accelo.{name}" for name in STREAM_NAMES), "awardco.user")


def sim_configuration(**overrides: str) -> dict[str, str]:
    """A configuration.json (all strings) pointing both sources at an injected simulator transport."""
    sources = [s.strip() for s in overrides.get("sources", "accelo,awardco").split(",")]
    classic = ",".join(name for name in CLASSIC_STREAMS if name.split(".")[0] in sources)
    configuration = {
        "streams": classic,
        "accelo_deployment": "syncflow-sim",
        "accelo_client_id": ACCELO_CLIENT_ID,
        "accelo_client_secret": ACCELO_CLIENT_SECRET,
        "accelo_base_url": SIM_URL,
        "awardco_api_key": AWARDCO_API_KEY,
        "awardco_base_url": SIM_URL,
        "max_concurrency": "8",
        "max_retry_seconds": "20",
        "checkpoint_every_rows": "200",
    }
    configuration.update(overrides)
    return configuration


class RecordingSink:
    """Keeps the destination as the SDK would (upsert by primary key) plus every checkpoint, serialised at once.

    `tables` holds the live rows; a delete moves a row to `deleted` (Fivetran's soft delete), an upsert brings it back.
    """

    def __init__(self) -> None:
        self.tables: dict[str, dict[Any, dict[str, Any]]] = {}
        self.deleted: dict[str, dict[Any, dict[str, Any] | None]] = {}  # soft-deleted rows (None: never upserted)
        self.deletes: list[tuple[str, Any]] = []  # every delete call, in order
        self.upserts = 0
        self.checkpoints: list[dict[str, Any]] = []
        self.log: list[tuple[str, Any]] = []  # ("upsert", (stream, key)) / ("checkpoint", index) in call order

    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        stream = f"{schema}.{table}"
        key = row["employeeId"] if schema == "awardco" else row["id"]
        self.tables.setdefault(stream, {})[key] = dict(row)
        self.deleted.get(stream, {}).pop(key, None)
        self.upserts += 1
        self.log.append(("upsert", (stream, key)))

    def delete(self, schema: str, table: str, keys: Sequence[Mapping[str, Any]]) -> None:
        stream = f"{schema}.{table}"
        for columns in keys:
            key = columns["employeeId"] if schema == "awardco" else columns["id"]
            self.deleted.setdefault(stream, {})[key] = self.tables.get(stream, {}).pop(key, None)
            self.deletes.append((stream, key))
            self.log.append(("delete", (stream, key)))

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        self.checkpoints.append(json.loads(json.dumps(state)))
        self.log.append(("checkpoint", len(self.checkpoints) - 1))


def truth_keys(sim: Simulator) -> dict[str, set[Any]]:
    truth = sim.ground_truth()
    keys = {f"accelo.{entity}": {int(r["id"]) for r in records} for entity, records in truth["accelo"].items()}
    keys["awardco.user"] = {r["employeeId"] for r in truth["awardco"]["user"]}
    return {stream: found for stream, found in keys.items() if stream in CLASSIC_STREAMS}  # what syncs by default


def assert_matches_truth(sink: RecordingSink, sim: Simulator, streams: list[str] | None = None) -> None:
    """Every stream holds exactly the simulator's records, with current values (the cursor field compared)."""
    truth = sim.ground_truth()
    expected: dict[str, dict[Any, Mapping[str, Any]]] = {
        f"accelo.{entity}": {int(r["id"]): r for r in records} for entity, records in truth["accelo"].items()
    }
    expected["awardco.user"] = {r["employeeId"]: r for r in truth["awardco"]["user"]}
    if streams is None:  # the tables synced by default (CLASSIC_STREAMS) and any other the sink holds
        streams = [s for s in expected if s in CLASSIC_STREAMS or s in sink.tables]
    for stream, records in expected.items():
        if stream not in streams:
            continue
        got = sink.tables.get(stream, {})
        assert set(got) == set(records), (
            f"{stream}: missing {sorted(set(records) - set(got))[:10]}, extra {sorted(set(got) - set(records))[:10]}"
        )
        definition = {**ACCELO_STREAMS, **AWARDCO_STREAMS}[stream.split(".")[1]]
        for key, record in records.items():
            converted = definition.converter().convert(record)
            assert converted is not None
            for column in ("date_modified", "updated_at", "name", "title", "amount", "balance"):
                if column in converted:
                    assert got[key][column] == converted[column], f"{stream} {key}.{column} is stale"


def sync_once(
    sim: Simulator,
    sink: RecordingSink,
    state: StateDocument | None = None,
    *,
    streams: list[str] | None = None,
    **overrides: str,
) -> tuple[SyncResult, StateDocument]:
    state = state if state is not None else StateDocument()
    settings = Settings.from_mapping(sim_configuration(**overrides))
    result = run_sync(settings, sink, state, streams=streams, transport=sim.transport())
    return result, state
