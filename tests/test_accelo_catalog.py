"""The Accelo docs fixture (`syncflow/sources/accelo_catalog/*.json`) and the declarations taken from it.

- The fixture is consistent with itself, always.
- Regenerated from the docs mirror (a bare git directory: `ACCELO_DOCS_GIT`, default below), it is the committed
  fixture; skipped where there is no mirror (CI).
- `ACCELO_STREAMS` stays within it: every column a documented field with the mapped type, and every filter and order
  syncflow sends (watched on the wire during real syncs) one the docs list for that resource.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from support.sim import RecordingSink, sim_configuration, sync_once
from syncflow import Settings
from syncflow._state import StateDocument
from syncflow._sync import run_sync
from syncflow.sim import Simulator
from syncflow.sim._accelo import split_filters
from syncflow.sources import ACCELO_STREAMS
from syncflow.sources._accelo_catalog import (
    CATALOG,
    CURSORS,
    RESOURCES,
    STREAM_NAMES,
    AcceloResource,
    list_endpoint,
    main_list,
    object_fields,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIR = ROOT / "src" / "syncflow" / "sources" / "accelo_catalog"
DOCS_GIT = os.environ.get("ACCELO_DOCS_GIT", "/work/.mirror/Accelo+docs/repo")
KINDS = {"basic", "date", "range", "order", "object", "empty", "search"}
TYPES = {"LONG", "STRING", "UTC_DATETIME", "BOOLEAN", "JSON", "DECIMAL(28,6)"}
NAME = re.compile(r"[a-z_][a-z0-9_]*")
RANGE_SUFFIXES = ("_greater_than_or_equal", "_less_than_or_equal", "_greater_than", "_less_than")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("accelo_docs", ROOT / "tools" / "accelo_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entries() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(FIXTURE_DIR.glob("*.json"))}


# ----------------------------------------------------------------------------------------------------------------
# The fixture itself


def test_the_fixture_is_consistent() -> None:
    entries = _entries()
    assert len(entries) >= 40, "one file per doc file under source/includes/endpoints"
    assert dict(CATALOG) == entries, "the package loads exactly the committed files"
    commits = {entry["docs_commit"] for entry in entries.values()}
    assert len(commits) == 1 and re.fullmatch(r"[0-9a-f]{40}", commits.pop() or "")
    for stem, entry in entries.items():
        where = f"{stem}.json"
        assert entry["resource"] == stem and entry["format"] == 1, where
        assert entry["doc_file"] == f"source/includes/endpoints/_{stem}.md", where
        for anchor, obj in entry["objects"].items():
            names = [field["name"] for field in obj["fields"]]
            assert len(names) == len(set(names)), (where, anchor)
            for field in obj["fields"]:
                assert NAME.fullmatch(field["name"]), (where, field)
                assert field["type"] in TYPES, (where, field)
                assert isinstance(field["default"], bool), (where, field)
        paths = [item["path"] for item in entry["lists"]]
        assert len(paths) == len(set(paths)), where
        for item in entry["lists"]:
            assert item["path"].startswith("/") and isinstance(item["count"], bool), (where, item["path"])
            assert item["nested"] == ("{" in item["path"]), (where, item["path"])
            assert set(item["filters"]) <= KINDS, (where, item["path"])
            for names in item["filters"].values():
                assert names and all(NAME.fullmatch(n) for n in names) and len(names) == len(set(names))
        for fix in entry["hand_fixes"]:
            assert fix["doc_says"] != fix["fixture_says"] and fix["why"], (where, fix)
        assert not entry["unmapped_types"] or all(isinstance(t, str) for t in entry["unmapped_types"])


def test_each_of_the_six_has_a_documented_list_count_and_object() -> None:
    for name in STREAM_NAMES:
        assert main_list(name).count, f"GET /{name}/count is documented"
    for name, resource in RESOURCES.items():
        endpoint = list_endpoint(resource.doc_resource, resource.path)
        assert endpoint.count == resource.count, name
        fields = object_fields(resource.doc_resource, resource.path)
        assert fields["id"] == "LONG"
        assert endpoint.object is not None
        defaults = [
            f["name"] for f in CATALOG[resource.doc_resource]["objects"][endpoint.object]["fields"] if f["default"]
        ]
        assert "id" in defaults, name
        # Keyset pages need id_greater_than; a list without it is read by page number, never incrementally.
        assert endpoint.allows("range", "id") == resource.keyset, name
        assert resource.keyset or resource.cursor is None, name


def test_hand_fixes_are_applied_where_they_say() -> None:
    jobs = main_list("jobs")
    assert "date_created" in jobs.filters["date"] and "dated_created" not in jobs.filters["date"]
    assert "date_actioned" in main_list("prospects").filters["date"]
    assert [fix["where"] for fix in CATALOG["staff"]["hand_fixes"]] == ["the-staff-object.id type"]


@pytest.fixture(scope="module")
def docs_git() -> Iterator[str]:
    commit = next(iter(_entries().values()))["docs_commit"]
    if not Path(DOCS_GIT).exists():
        pytest.skip(f"no Accelo docs mirror at {DOCS_GIT} (set ACCELO_DOCS_GIT)")
    present = subprocess.run(
        ["git", "-C", DOCS_GIT, "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True, check=False
    )
    if present.returncode != 0:
        pytest.skip(f"the docs mirror at {DOCS_GIT} lacks commit {commit[:12]}")
    yield DOCS_GIT


def test_regenerating_from_the_docs_gives_the_committed_fixture(docs_git: str) -> None:
    generator = _generator()
    commit = next(iter(_entries().values()))["docs_commit"]
    catalog = generator.build_catalog(docs_git, commit)
    assert sorted(catalog) == sorted(_entries())
    for name, entry in catalog.items():
        assert generator.render(entry) == (FIXTURE_DIR / f"{name}.json").read_text(), f"{name}.json is stale"


# ----------------------------------------------------------------------------------------------------------------
# The declarations


def test_streams_declare_exactly_the_documented_fields() -> None:
    assert list(ACCELO_STREAMS)[:6] == list(STREAM_NAMES), "the six original tables keep their names"
    for name, stream in ACCELO_STREAMS.items():
        assert isinstance(stream, AcceloResource)
        endpoint = list_endpoint(stream.doc_resource, stream.path)
        assert (
            stream.endpoint == f"/api/v0{stream.path}" and stream.doc_file == CATALOG[stream.doc_resource]["doc_file"]
        )
        assert dict(stream.columns) == dict(object_fields(stream.doc_resource, stream.path)), name
        assert stream.primary_key == ("id",)
        assert dict(stream.filters) == dict(endpoint.filters), name
        assert stream.order == (("order_by_asc(id)",) if endpoint.allows("order", "id") else ()), name
        # The rule: incremental on date_modified where the list documents that filter, else a full refresh.
        rule = (
            "date_modified" if endpoint.allows("date", "date_modified") and "date_modified" in stream.columns else None
        )
        cursor = CURSORS.get(name, rule)
        assert stream.cursor == cursor, name
        if cursor is not None:
            assert cursor in stream.columns and endpoint.allows("date", cursor), name
    # What the example connector got wrong, as the docs have it.
    staff = ACCELO_STREAMS["staff"].columns
    assert "standing" in staff and "status" not in staff
    assert not any(column.startswith("date_") for column in staff)
    assert ACCELO_STREAMS["staff"].cursor is None and not main_list("staff").filters.get("date")
    jobs = ACCELO_STREAMS["jobs"].columns
    assert not {"contact", "description", "value"} & set(jobs)
    assert {"against_type", "against_id", "affiliation", "job_type", "date_commenced", "rate_charged"} <= set(jobs)
    assert ACCELO_STREAMS["payments"].cursor == "date_created"


def _classify(resource: str, name: str, args: list[str]) -> str | None:
    """The kind of filter the docs list that `name(args)` is for this resource, or None when they list none."""
    endpoint = RESOURCES[resource]
    if name in ("order_by_asc", "order_by_desc"):
        return "order" if len(args) == 1 and endpoint.allows("order", args[0]) else None
    for suffix in ("_after", "_before"):
        if name.endswith(suffix) and endpoint.allows("date", name[: -len(suffix)]):
            return "date"
    for suffix in RANGE_SUFFIXES:
        if name.endswith(suffix) and endpoint.allows("range", name[: -len(suffix)]):
            return "range"
    return "basic" if endpoint.allows("basic", name) else None


class _Watching(httpx.AsyncBaseTransport):
    """Records every Accelo list/count request's parameters on their way to the simulator."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/api/v0/"):
            self.seen.append((path, dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))))
        return await self.inner.handle_async_request(request)


def test_every_filter_and_order_syncflow_sends_is_documented_for_its_resource(make_sim: Any) -> None:
    sim: Simulator = make_sim()
    watching = _Watching(sim.transport())
    state = StateDocument()
    for _ in range(2):  # a first (sliced) sync, then an incremental one with date windows
        settings = Settings.from_mapping(sim_configuration(sources="accelo", streams=""))
        result = run_sync(settings, RecordingSink(), state, transport=watching)
        assert set(result.completed) == {f"accelo.{name}" for name in ACCELO_STREAMS}
    sent: dict[str, set[str]] = {}
    by_path = {stream.endpoint: name for name, stream in RESOURCES.items()}
    for path, params in watching.seen:
        resource = by_path[path.removesuffix("/count")]
        if path.endswith("/count"):
            assert RESOURCES[resource].count, f"{path}: the docs give no /count"
        for name, args in split_filters(params.get("_filters", "")):
            kind = _classify(resource, name, args)
            assert kind is not None, f"{resource}: {name}({','.join(args)}) is not a filter the docs list"
            sent.setdefault(resource, set()).add(f"{kind}:{name}")
        fields = [f for f in params.get("_fields", "").split(",") if f]
        documented = set(RESOURCES[resource].columns)
        assert set(fields) <= documented, (resource, set(fields) - documented)
    # The syncs did use filters (windows, keysets), and none on staff orders it.
    assert "date:date_modified_after" in sent["companies"] and "range:id_greater_than" in sent["invoices"]
    assert "order:order_by_asc" in sent["jobs"]
    assert not any(item.startswith("order:") for item in sent.get("staff", set()))


def test_the_simulator_lists_exactly_the_documented_filters_and_fields(make_sim: Any) -> None:
    sim: Simulator = make_sim()
    for name, resource in RESOURCES.items():
        spec = sim._tables[name].spec
        documented = list(object_fields(resource.doc_resource, resource.path))
        assert dict(spec.filters) == dict(list_endpoint(resource.doc_resource, resource.path).filters), name
        assert list(spec.fields) == documented, name
        for record in sim.ground_truth()["accelo"][name][:50]:
            assert list(record) == documented, name


def test_a_mock_sync_fills_every_documented_column(make_sim: Any) -> None:
    sim: Simulator = make_sim()
    sink = RecordingSink()
    result, _ = sync_once(sim, sink, sources="accelo", streams=["accelo.*"])
    for name, stream in ACCELO_STREAMS.items():
        rows = list(sink.tables[f"accelo.{name}"].values())
        assert rows, name
        assert set(rows[0]) == set(stream.columns), name
        for column, kind in stream.columns.items():
            if kind == "JSON":
                continue
            assert any(row[column] is not None for row in rows), f"{name}.{column} is always null"
    assert not result.warnings, result.warnings
