"""The whole Accelo catalogue (issue 17): every documented list that can be paged by id is a stream declared as data,
chosen with the `streams` key, served by the simulator, and listed in the README from the same fixture.

- Every documented list is either a stream or left out with a reason, and the set of streams is what the fixture
  alone says can be paged by id (computed here from the raw fixture, not from the catalogue module).
- `list_streams` with use_mock lists them all; a mock sync fills every table (the columns test in
  test_accelo_catalog.py checks each column).
- The `streams` key selects through the engine, `to_duckdb` and `fivetran debug`; a bad value is one line.
- One `accelo_resource(...)` call declares an extra resource, which syncs.
- An incremental sync of the catalogue costs one request per stream with nothing new.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import duckdb
import pytest

import syncflow
from conftest import RecordingSink, sync_once
from support.crash import make_project, read_warehouse, run_debug
from syncflow import ConfigurationError, Settings
from syncflow._state import StateDocument
from syncflow._sync import select_streams
from syncflow.sim import Simulator
from syncflow.sources import ACCELO_STREAMS
from syncflow.sources._accelo_catalog import CATALOG, LEFT_OUT, RESOURCES, STREAM_NAMES
from syncflow.sources.accelo import allocate_slices

ROOT = Path(__file__).resolve().parent.parent


def _pageable_by_id() -> set[str]:
    """`GET <path>` of every non-nested documented list whose object (defined in the same doc file) has an id field
    and whose filters include an id range, from the raw fixture."""
    found = set()
    for entry in CATALOG.values():
        for item in entry["lists"]:
            obj = entry["objects"].get(item["object"] or "")
            if item["nested"] or obj is None:
                continue
            if any(f["name"] == "id" for f in obj["fields"]) and "id" in item["filters"].get("range", []):
                found.add(item["path"])
    return found


def test_every_documented_list_is_a_stream_or_left_out_with_a_reason() -> None:
    streamed = {resource.path for resource in RESOURCES.values()}
    views = {p for p in _pageable_by_id() if p.endswith(("/recent", "/newest"))}
    assert streamed == _pageable_by_id() - views
    every = {(item["path"], entry["doc_file"]) for entry in CATALOG.values() for item in entry["lists"]}
    left = {tuple(where.removeprefix("GET ").rstrip(")").split(" (")) for where in LEFT_OUT}
    assert {path for path, _ in every} == streamed | {path for path, _ in left}
    assert all(why.strip() for why in LEFT_OUT.values())
    assert len(RESOURCES) >= 38 and list(RESOURCES)[:6] == list(STREAM_NAMES)
    # Every table name is a valid, distinct destination name.
    assert len({r.table for r in RESOURCES.values()}) == len(RESOURCES)


def test_list_streams_with_use_mock_lists_every_resource() -> None:
    listed = syncflow.list_streams({"use_mock": "true"})
    assert listed == [*(f"accelo.{name}" for name in RESOURCES), "awardco.user"]


def test_the_streams_key_selects_and_a_bad_value_is_one_line() -> None:
    def chosen(value: str) -> list[str]:
        return [s.key for s in select_streams(Settings.from_mapping({"use_mock": "true", "streams": value}), None)]

    assert chosen("accelo.*") == [f"accelo.{name}" for name in RESOURCES]
    assert chosen("awardco.user, accelo.tasks") == ["awardco.user", "accelo.tasks"]
    assert chosen("awardco") == ["awardco.user"]
    assert len(chosen("")) == len(RESOURCES) + 1
    with pytest.raises(ConfigurationError, match=r"^streams: 'accelo\.tasks;x' is not a stream; use a comma list"):
        Settings.from_mapping({"use_mock": "true", "streams": "accelo.tasks;x"})
    with pytest.raises(ConfigurationError, match=r"^the streams key: unknown or unconfigured stream 'accelo\.nope'"):
        chosen("accelo.nope")
    # The API's own `streams=` argument wins over the key.
    settings = Settings.from_mapping({"use_mock": "true", "streams": "accelo.tasks"})
    assert [s.key for s in select_streams(settings, ["accelo.staff"])] == ["accelo.staff"]


def test_the_streams_key_through_to_duckdb(tmp_path: Path) -> None:
    configuration = {"use_mock": "true", "streams": "accelo.tasks,accelo.contracts_types,accelo.staff"}
    result = syncflow.to_duckdb(configuration, tmp_path / "w.duckdb", progress=False)
    assert set(result.completed) == {"accelo.tasks", "accelo.contracts_types", "accelo.staff"}
    connection = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    try:
        tables = {
            f"{s}.{t}"
            for s, t in connection.sql(
                "select table_schema, table_name from information_schema.tables where table_schema <> 'main'"
            ).fetchall()
        }
        assert {"accelo.tasks", "accelo.contracts_types", "accelo.staff"} <= tables
        assert "accelo.companies" not in tables
        assert connection.sql("select count(*) from accelo.contracts_types").fetchone() == (25,)
    finally:
        connection.close()


def test_the_streams_key_through_fivetran_debug(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"use_mock": "true", "streams": "accelo.tasks,accelo.timers,awardco.user"})
    run = run_debug(project, timeout=180)
    assert run.returncode == 0, run.output[-3000:]
    warehouse = read_warehouse(project)
    assert set(warehouse) == {"accelo.tasks", "accelo.timers", "awardco.user"}
    assert len(warehouse["accelo.tasks"]) == 25 and len(warehouse["accelo.timers"]) == 25


def test_an_extra_resource_is_one_declaration_from_public_names(tmp_path: Path) -> None:
    # A lookup list declared by the user: its own table name, three of its documented columns.
    kinds = syncflow.accelo_resource(
        "contracts", "/contracts/types", name="contract_kinds", columns=["title", "standing"]
    )
    assert isinstance(kinds, syncflow.AcceloResource) and kinds.key == "accelo.contract_kinds"
    assert list(kinds.columns) == ["id", "title", "standing"] and kinds.cursor is None
    result = syncflow.to_duckdb({"use_mock": "true"}, tmp_path / "x.duckdb", streams=[kinds], progress=False)
    assert list(result.completed) == ["accelo.contract_kinds"]
    connection = duckdb.connect(str(tmp_path / "x.duckdb"), read_only=True)
    try:
        rows = connection.sql("select id, title, standing from accelo.contract_kinds order by id").fetchall()
    finally:
        connection.close()
    assert len(rows) == 25 and all(title for _, title, _ in rows)
    with pytest.raises(ValueError, match="nope not documented fields"):
        syncflow.accelo_resource("contracts", "/contracts/types", columns=["nope"])
    with pytest.raises(ValueError, match="no id range filter"):
        syncflow.accelo_resource("divisions")


def test_an_incremental_sync_of_the_catalogue_costs_about_one_request_per_stream(make_sim: Any) -> None:
    sim: Simulator = make_sim()
    state = StateDocument()
    sync_once(sim, RecordingSink(), state, sources="accelo")
    sim.reset_stats()
    result, _ = sync_once(sim, RecordingSink(), state, sources="accelo")
    assert not result.failed
    data = {
        endpoint.removeprefix("GET "): n
        for endpoint, n in sim.stats().by_endpoint.items()
        if endpoint.startswith("GET /api/v0/")
    }
    incremental = [r for r in RESOURCES.values() if r.cursor]
    refresh = [r for r in RESOURCES.values() if not r.cursor]
    # Nothing changed: an incremental stream's empty first page is the whole answer (no count); a full refresh reads
    # its table again (its count where documented, and its first page).
    for resource in incremental:
        assert data.get(resource.endpoint) == 1 and f"{resource.endpoint}/count" not in data, resource.table
    assert sum(data.values()) == len(incremental) + sum(1 + r.count for r in refresh)


def test_slices_are_shared_fairly_among_forty_streams() -> None:
    pages = {f"accelo.small{i}": 1 for i in range(37)} | {"accelo.big": 400, "accelo.mid": 40}
    shares = allocate_slices(pages, 16)
    assert all(shares[key] == 1 for key in pages if key.startswith("accelo.small"))
    assert shares["accelo.big"] > shares["accelo.mid"] >= 1 and shares["accelo.big"] <= 16


def test_the_readme_tables_section_is_generated_from_the_fixture() -> None:
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "tools" / "readme_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert module.updated(readme) == readme, "README Tables is stale: run python tools/readme_tables.py"
    for name in ACCELO_STREAMS:
        assert f"| `accelo.{name}` |" in readme
