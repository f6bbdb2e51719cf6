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
from support.crash import make_project, read_warehouse, run_debug
from support.sim import RecordingSink, sync_once
from syncflow import ConfigurationError, Settings
from syncflow._state import StateDocument
from syncflow._sync import select_streams
from syncflow.sim import Mutation, Simulator
from syncflow.sources import ACCELO_STREAMS
from syncflow.sources._accelo_catalog import CATALOG, LEFT_OUT, RESOURCES, STREAM_NAMES
from syncflow.sources.accelo import allocate_slices

ROOT = Path(__file__).resolve().parent.parent


_NOT_TABLES = ("/recent", "/newest", "/profiles/values", "/extensions/values", "/profiles/fields",
               "/extensions/fields", "/meta")  # fmt: skip


def _keyed_lists() -> dict[str, bool]:
    """`GET <path>` -> whether it documents an id range filter, for every non-nested documented list whose object
    (defined in the same doc file) has an id field, less views and metadata, from the raw fixture."""
    found = {}
    for entry in CATALOG.values():
        for item in entry["lists"]:
            obj = entry["objects"].get(item["object"] or "")
            path = item["path"]
            if item["nested"] or obj is None or path.endswith(_NOT_TABLES) or path.startswith("/prospect/"):
                continue
            if any(f["name"] == "id" for f in obj["fields"]):
                found[path] = "id" in item["filters"].get("range", [])
    return found


def test_every_documented_list_is_a_stream_or_left_out_with_a_reason() -> None:
    streamed = {resource.path: resource.keyset for resource in RESOURCES.values()}
    assert streamed == _keyed_lists()
    streamed_paths = set(streamed)
    every = {(item["path"], entry["doc_file"]) for entry in CATALOG.values() for item in entry["lists"]}
    left = {tuple(where.removeprefix("GET ").rstrip(")").split(" (")) for where in LEFT_OUT}
    assert {path for path, _ in every} == streamed_paths | {path for path, _ in left}
    assert all(why.strip() for why in LEFT_OUT.values())
    assert len(RESOURCES) >= 50 and list(RESOURCES)[:6] == list(STREAM_NAMES)
    # Only a keyset stream can be incremental: a window needs the id range to page within it.
    assert all(r.keyset for r in RESOURCES.values() if r.cursor)
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
    with pytest.raises(KeyError, match="names no object for GET /contracts/statuses"):
        syncflow.accelo_resource("contracts", "/contracts/statuses")
    with pytest.raises(ValueError, match="an incremental window needs the id range filter"):
        syncflow.accelo_resource("resources", cursor="date_created")


def test_an_incremental_sync_of_the_catalogue_costs_about_one_request_per_stream(make_sim: Any) -> None:
    sim: Simulator = make_sim()
    state = StateDocument()
    sync_once(sim, RecordingSink(), state, sources="accelo", streams=["accelo.*"])
    sim.reset_stats()
    result, _ = sync_once(sim, RecordingSink(), state, sources="accelo", streams=["accelo.*"])
    assert not result.failed
    data = {
        endpoint.removeprefix("GET "): n
        for endpoint, n in sim.stats().by_endpoint.items()
        if endpoint.startswith("GET /api/v0/")
    }
    # Nothing changed: an incremental stream's empty first page is the whole answer; a full refresh reads its table
    # again, and every one here holds less than a page, so its first page answers alone (the first sync saw this
    # deployment serve full pages, so a short page is the last): one request per stream, no /count.
    assert not [endpoint for endpoint in data if endpoint.endswith("/count")]
    for resource in RESOURCES.values():
        assert data.get(resource.endpoint) == 1, resource.table
    assert sum(data.values()) == len(RESOURCES)


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


def test_a_list_read_by_page_number_captures_deletes_only_when_provably_whole(make_sim: Any) -> None:
    # divisions: no id range filter in the docs, but a /count; issues_classes: neither.
    both = ["accelo.divisions", "accelo.issues_classes"]
    sim: Simulator = make_sim(accelo_counts={"divisions": 230, "issues_classes": 40})
    sink, state = RecordingSink(), StateDocument()
    sync_once(sim, sink, state, streams=both)
    assert len(sink.tables["accelo.divisions"]) == 230 and len(sink.tables["accelo.issues_classes"]) == 40
    # Deleted between syncs: the next refresh reads every page, matches the count (or a short first page) and
    # deletes exactly what is gone.
    sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="divisions", delete=4))
    sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="issues_classes", delete=3))
    sync_once(sim, sink, state, streams=both)
    for name in ("divisions", "issues_classes"):
        truth = {int(r["id"]) for r in sim.ground_truth()["accelo"][name]}
        assert set(sink.tables[f"accelo.{name}"]) == truth, name
    assert len(sink.deleted["accelo.divisions"]) == 4 and len(sink.deleted["accelo.issues_classes"]) == 3


def test_a_list_changed_while_read_by_page_number_deletes_nothing_until_a_whole_read(make_sim: Any) -> None:
    # Sync 1: count, pages 0-2 (requests 1-4). Sync 2: count, page 0, then 5 records vanish before page 1: the
    # pages shift, a live record may be skipped, and the rows read no longer match the count.
    mutation = Mutation(after_requests=7, source="accelo", entity="divisions", delete=5)
    sim: Simulator = make_sim(accelo_counts={"divisions": 230}, mutations=[mutation])
    sink, state = RecordingSink(), StateDocument()
    sync_once(sim, sink, state, streams=["accelo.divisions"])
    assert len(sink.tables["accelo.divisions"]) == 230
    result, _ = sync_once(sim, sink, state, streams=["accelo.divisions"])
    assert any("changed while its pages were read (225 rows read, /count said 230)" in w for w in result.warnings)
    assert not sink.deleted.get("accelo.divisions"), "an unproven read deletes nothing"
    assert len(sink.tables["accelo.divisions"]) == 230
    result, _ = sync_once(sim, sink, state, streams=["accelo.divisions"])
    assert not result.warnings
    truth = {int(r["id"]) for r in sim.ground_truth()["accelo"]["divisions"]}
    assert set(sink.tables["accelo.divisions"]) == truth and len(sink.deleted["accelo.divisions"]) == 5
