"""Sources are plug-ins: a third REST API (examples/custom_source.py) synced from public names alone, with the
ordering, checkpoint and rate-limit guarantees of the built-in ones; and the engine imports no test double."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import syncflow
from syncflow.sim import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET, SimConfig, Simulator

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_source.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custom_source_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_the_example_imports_only_public_names() -> None:
    tree = ast.parse(EXAMPLE.read_text(encoding="utf-8"))
    private: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("syncflow"):
            parts = node.module.split(".")
            private += [node.module] if any(p.startswith("_") for p in parts) else []
            private += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            private += [a.name for a in node.names if any(p.startswith("_") for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "syncflow":
            private += [f"syncflow.{node.attr}"] if node.attr.startswith("_") else []
            assert node.attr in syncflow.__all__, f"syncflow.{node.attr} is not in syncflow.__all__"
    assert not private, f"the example reaches private names: {private}"
    imported = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "syncflow"]
    assert imported, "the example imports from syncflow (the check above saw its names)"
    for node in imported:
        for alias in node.names:
            assert alias.name in syncflow.__all__, f"{alias.name} is not in syncflow.__all__"


def test_the_example_runs_as_a_script() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "tickets.ticket: 230 rows in 6 requests (1 answered 429)" in done.stdout, done.stdout
    assert "next sync: 0 rows" in done.stdout, done.stdout


def test_a_third_source_delivers_every_row_in_order_with_its_own_figures(example: ModuleType) -> None:
    api = example.TicketsAPI(tickets=230, answer_429=1)
    sink = example.ListSink()
    result = example.sync(api, sink)
    assert sink.rows[("tickets", "ticket")] == {r["id"]: r for r in _typed(example, api.records)}
    assert sink.order == sorted(sink.order) and len(sink.order) == 230, "in order, each row once"
    summary = result.streams["tickets.ticket"]
    # Statistics are keyed by the stream the source labelled its requests with (5 pages and the 429'd retry).
    assert (summary.requests, summary.rate_limited, summary.retries) == (len(api.requests), 1, 1) == (6, 1, 1)
    assert summary.status == "completed" and result.completed == ("tickets.ticket",)
    assert sink.state["sources"] == {"tickets": "https://tickets.example.com"}
    assert set(sink.state["streams"]) == {"tickets.ticket"} and "cursor" in sink.state["streams"]["tickets.ticket"]


class _Crash(Exception):
    pass


def test_a_crash_resumes_from_the_last_checkpoint_without_losing_a_row(example: ModuleType) -> None:
    api = example.TicketsAPI(tickets=230)
    durable = example.ListSink()

    class Crashing(example.ListSink):  # type: ignore[misc,name-defined]
        def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
            if len(self.order) == 120:
                raise _Crash
            super().upsert(schema, table, row)
            durable.upsert(schema, table, row)

        def checkpoint(self, state: Mapping[str, Any]) -> None:
            super().checkpoint(state)
            durable.checkpoint(state)

    with pytest.raises(_Crash):
        example.sync(api, Crashing())
    saved = durable.state
    assert saved is not None and saved["streams"]["tickets.ticket"]["run"]["after_id"] == 100, saved
    api.requests.clear()
    resumed = example.ListSink()
    example.sync(api, resumed, state=saved)
    first = api.requests[0].url.params
    assert first["after_id"] == "100", "the resumed sync starts after the last checkpointed id, not from scratch"
    assert set(durable.rows[("tickets", "ticket")]) | set(resumed.rows[("tickets", "ticket")]) == set(range(1, 231))
    assert resumed.order == list(range(101, 231))


def test_a_spent_rate_budget_stops_the_source_cleanly_and_the_next_sync_carries_on(example: ModuleType) -> None:
    api = example.TicketsAPI(tickets=230, remaining=0)  # the server says: none left, reset in an hour
    sink = example.ListSink()
    result = syncflow.sync(
        example.configuration(api, max_rate_limit_wait_seconds="1"), sink, sources=[example.TicketsSource()],
        transport=api.transport(),
    )  # fmt: skip
    assert result.stopped_early and result.streams["tickets.ticket"].status == "stopped"
    # The first answer said "none left": its page is delivered and checkpointed, and no request follows it.
    assert len(api.requests) == 1 and sink.order == list(range(1, 51))
    api.remaining = 10_000
    again = example.ListSink()
    example.sync(api, again, state=sink.state)
    assert again.order == list(range(51, 231)), "the next sync carries on after the checkpointed page"


def test_a_plugin_syncs_beside_the_built_in_sources_and_fails_alone(example: ModuleType) -> None:
    simulator = Simulator(SimConfig(seed=5, accelo_counts={"staff": 12}))
    sim = simulator.transport()
    api = example.TicketsAPI(tickets=60, api_key="right-key")

    class Route(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.host == "tickets.example.com":
                return api.handle(request)
            return await sim.handle_async_request(request)

    configuration = {
        **example.configuration(api, tickets_api_key="wrong-key"),
        "accelo_deployment": "syncflow-sim", "accelo_client_id": ACCELO_CLIENT_ID,
        "accelo_client_secret": ACCELO_CLIENT_SECRET, "accelo_base_url": "http://127.0.0.1:9",
    }  # fmt: skip
    sink = example.ListSink()
    with pytest.raises(syncflow.StreamsFailed) as failed:
        syncflow.sync(configuration, _AnySink(sink), streams=["accelo.staff", "tickets"],
                      sources=[example.TicketsSource()], transport=Route())  # fmt: skip
    result = failed.value.result
    assert set(result.failed) == {"tickets.ticket"} and "401" in result.failed["tickets.ticket"]
    assert result.completed == ("accelo.staff",) and result.rows["accelo.staff"] == 12
    assert "wrong-key" not in str(failed.value)


class _AnySink:
    """Accelo's staff key on `id` too: the example's sink serves for both."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        self.inner.upsert(schema, table, row)

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        self.inner.checkpoint(state)


def test_sources_that_share_a_name_or_a_key_are_refused(example: ModuleType) -> None:
    api = example.TicketsAPI()
    with pytest.raises(syncflow.ConfigurationError, match="share a name"):
        syncflow.list_streams(example.configuration(api), sources=[example.TicketsSource(), example.TicketsSource()])

    class Clash(example.TicketsSource):  # type: ignore[misc,name-defined]
        name = "clash"

    with pytest.raises(syncflow.ConfigurationError, match="tickets_api_key: declared twice"):
        syncflow.list_streams(example.configuration(api), sources=[example.TicketsSource(), Clash()])
    assert syncflow.list_streams(example.configuration(api), sources=[example.TicketsSource()]) == ["tickets.ticket"]


def test_a_real_configuration_imports_neither_the_simulator_nor_uvicorn() -> None:
    code = (
        "import sys, syncflow, syncflow.fivetran\n"
        "cfg = {'accelo_deployment': 'acme', 'accelo_client_id': 'i', 'accelo_client_secret': 's'}\n"
        "settings = syncflow.load_settings(cfg)\n"
        "assert syncflow.list_streams(cfg) and syncflow.fivetran.schema(cfg)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('syncflow.sim', 'uvicorn'))))\n"
        "syncflow.load_settings({'use_mock': 'true'})\n"
        "print('syncflow.sim' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # The second line shows the check can fail: a mock configuration does load the simulator.
    assert done.stdout.splitlines() == ["[]", "True"], done.stdout


def test_the_engine_names_no_source() -> None:
    # The engine: what runs any source. (`_edge.py` is where the user enters; it may reach the simulator.)
    engine = ["_sync.py", "_config.py", "_state.py", "_pipeline.py", "_source.py", "_http"]
    found: list[str] = []
    for name in engine:
        path = ROOT / "src" / "syncflow" / name
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            tree = ast.parse(file.read_text(encoding="utf-8"))
            # Docstrings may explain with an example ("accelo.companies"); code may not name a source.
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
            }  # fmt: skip
            for node in ast.walk(tree):
                text = node.value.lower() if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
                if id(node) not in docstrings and any(word in text for word in ("accelo", "awardco")):
                    found.append(f"{file.name}: {text[:60]!r}")
                if isinstance(node, ast.ImportFrom) and node.module:
                    parts = node.module.split(".")
                    # Only the one list of built-in sources may be read (the default registry), nothing of one.
                    registry = parts[-1] == "sources" and [a.name for a in node.names] == ["BUILTIN_SOURCES"]
                    if "sim" in parts or ("sources" in parts and not registry):
                        found.append(f"{file.name}: imports {node.module}")
    assert docstrings, "the docstring filter sees docstrings"
    assert not found, found


def _typed(example: ModuleType, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    converter = example.TICKET.converter()
    return [converter.convert(record) for record in records]
