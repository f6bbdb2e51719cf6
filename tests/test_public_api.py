"""syncflow for people: the public API in scripts, inside a running event loop, and the example notebook."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import io
import json
import shutil
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import duckdb
import pytest

import syncflow
from support.sim import RecordingSink, sim_configuration
from syncflow.sim import SimConfig, Simulator

ROOT = Path(__file__).resolve().parent.parent


def test_to_duckdb_writes_typed_tables_and_resumes_incrementally(tmp_path: Path) -> None:
    path = tmp_path / "out.duckdb"
    first = syncflow.to_duckdb({"use_mock": "true"}, path, progress=False)
    assert first.rows["accelo.companies"] > 0 and not first.stopped_early
    with duckdb.connect(str(path), read_only=True) as db:
        assert db.sql("select count(*) from accelo.companies").fetchone() == (first.rows["accelo.companies"],)
        kinds = dict(db.sql("select column_name, data_type from information_schema.columns "
                            "where table_schema = 'accelo' and table_name = 'prospects'").fetchall())  # fmt: skip
        assert (
            kinds["id"] == "BIGINT" and kinds["success"] == "BOOLEAN" and kinds["date_modified"].startswith("TIMESTAMP")
        )
    second = syncflow.to_duckdb({"use_mock": "true"}, path, progress=False)
    assert second.rows.get("accelo.companies", 0) == 0, "the state saved in the file makes the second run incremental"


def test_extract_yields_pages_in_order_and_a_resumable_state() -> None:
    sim = Simulator(SimConfig(accelo_counts={"invoices": 450, "companies": 1, "payments": 1, "prospects": 1,
                                             "jobs": 1, "staff": 1}))  # fmt: skip
    pages = syncflow.extract(sim_configuration(), "accelo.invoices", transport=sim.transport())
    first = next(pages)
    assert first.stream == "accelo.invoices" and len(first.rows) == 100
    pages.close()  # stop early: the state covers the page we took, and resuming reads the rest
    resumed = syncflow.extract(sim_configuration(), "accelo.invoices", state=pages.state, transport=sim.transport())
    ids = {row["id"] for row in first.rows} | {row["id"] for page in resumed for row in page.rows}
    assert ids == {int(record["id"]) for record in sim.ground_truth()["accelo"]["invoices"]}
    assert resumed.result is not None


def test_unknown_stream_names_fail_before_any_request() -> None:
    with pytest.raises(syncflow.ConfigurationError, match=r"unknown or unconfigured stream 'accelo\.widgets'"):
        syncflow.extract({"use_mock": "true"}, "accelo.widgets")


def test_the_blocking_api_works_inside_a_running_event_loop() -> None:
    async def notebook_cell() -> dict[str, int]:
        # Jupyter runs cells inside its loop; asyncio.run() would fail here, syncflow must not.
        rows = list(syncflow.iter_rows({"use_mock": "true"}, "accelo.staff"))
        result = await syncflow.sync_async({"use_mock": "true"}, RecordingSink(), streams="awardco.user")
        return {"staff": len(rows), "users": result.rows["awardco.user"]}

    counts = asyncio.run(notebook_cell())
    assert counts["staff"] > 0 and counts["users"] > 0


def test_a_plain_script_using_the_readme_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent("""
        import syncflow
        result = syncflow.to_duckdb({"use_mock": "true"}, "warehouse.duckdb", streams=["accelo.jobs"])
        print(result.rows["accelo.jobs"])
    """)
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip().splitlines()[-1]) > 0
    # progress=None (the default) shows bars only where someone watches (a terminal, Jupyter): a pipe stays clean.
    assert "accelo.jobs" not in done.stderr, done.stderr


def test_the_example_notebook_runs(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook_path = tmp_path / "syncflow_quickstart.ipynb"
    shutil.copy(ROOT / "examples" / "syncflow_quickstart.ipynb", notebook_path)
    notebook = nbformat.read(notebook_path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()
    outputs: list[Any] = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.get("output_type") == "error"]
    assert (tmp_path / "syncflow.duckdb").exists()


def test_a_saved_extraction_state_does_not_change_as_iteration_continues() -> None:
    sim = Simulator(SimConfig(accelo_counts={"invoices": 450, "companies": 1, "payments": 1, "prospects": 1,
                                             "jobs": 1, "staff": 1}))  # fmt: skip
    with syncflow.extract(sim_configuration(), "accelo.invoices", transport=sim.transport()) as pages:
        next(pages)
        saved = pages.state
        frozen = json.dumps(saved, sort_keys=True)
        for _ in pages:
            pass
        assert json.dumps(saved, sort_keys=True) == frozen, "a state handed out is a snapshot, not a live view"
        assert json.dumps(pages.state, sort_keys=True) != frozen, "the live state moved on"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_progress_rule_for_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from syncflow._api import _progress
    from syncflow._notebook import TqdmProgress

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a log: nobody watches
    assert _progress(None) is None
    shown = _progress(True)
    assert isinstance(shown, TqdmProgress) and shown.kind == "text", "True shows plain lines where bars cannot draw"
    assert _progress(False) is None
    monkeypatch.setattr(sys, "stderr", _Terminal())
    auto = _progress(None)
    assert isinstance(auto, TqdmProgress) and auto.kind == "terminal"
    mine = RecordingProgress()
    assert _progress(mine) is mine
    calls = [syncflow.extract, syncflow.extract_async, syncflow.sync, syncflow.sync_async, syncflow.to_duckdb,
             syncflow.to_duckdb_async]  # fmt: skip
    for call in calls:
        parameters = inspect.signature(call).parameters
        names = list(parameters)
        assert names.index("streams") == (1 if call in (syncflow.extract, syncflow.extract_async) else 2), call
        assert parameters["streams"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, call
        assert parameters["streams"].default is None and parameters["state"].default is None, call
        assert parameters["progress"].default is None, call
        assert parameters["state"].kind is parameters["progress"].kind is inspect.Parameter.KEYWORD_ONLY, call


class RecordingProgress:
    def on_start(self, budgets: Any) -> None: ...

    def on_batch(self, batch: syncflow.Batch) -> None: ...

    def on_checkpoint(self) -> None: ...

    def close(self) -> None: ...


def _syncflow_classes(hint: Any) -> set[type]:
    """The syncflow classes a type hint names, through unions, generics, callables and containers."""
    found: set[type] = set()
    if isinstance(hint, type) and hint.__module__.split(".")[0] == "syncflow":
        found.add(hint)
    for argument in typing.get_args(hint):
        found |= _syncflow_classes(argument)
    return found


def _hints(target: Any) -> dict[str, Any]:
    # Names imported only for type checking (to avoid import cycles) resolve against what syncflow exports: a type
    # that is not exported fails to resolve, which is the point of this check.
    module = sys.modules.get(getattr(target, "__module__", ""), None)
    namespace = {**vars(syncflow), **(vars(module) if module is not None else {})}
    return typing.get_type_hints(target, globalns=namespace)


def _signature_hints(obj: Any) -> list[Any]:
    hints: list[Any] = []
    for name, member in vars(obj).items() if isinstance(obj, type) else [("", obj)]:
        if isinstance(member, property):
            member = member.fget
        if name.startswith("_") and name not in ("__next__", "__anext__", "__enter__", "__aenter__"):
            continue
        if callable(member):
            hints.extend(_hints(member).values())
    if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        hints.extend(_hints(obj).values())
    return hints


def test_all_is_honest_every_public_name_documented_and_every_signature_type_exported() -> None:
    assert len(set(syncflow.__all__)) == len(syncflow.__all__)
    exported = {getattr(syncflow, name) for name in syncflow.__all__ if name != "__version__"}
    missing_types: dict[str, set[str]] = {}
    for name in syncflow.__all__:
        assert hasattr(syncflow, name), f"__all__ names {name}, which syncflow does not have"
        if name == "__version__":
            continue
        obj = getattr(syncflow, name)
        doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
        auto = f"{name}("  # what @dataclass writes when a class has no docstring
        assert doc and doc.strip() and not doc.startswith(auto), f"syncflow.{name} has no docstring"
        for hint in _signature_hints(obj):
            unexported = {cls.__name__ for cls in _syncflow_classes(hint) if cls not in exported}
            if unexported:
                missing_types.setdefault(name, set()).update(unexported)
    # Extraction and AsyncExtraction are returned by extract/extract_async; their constructors are not for users.
    assert not missing_types, f"public signatures use types syncflow does not export: {missing_types}"
    assert "__version__" in syncflow.__all__


def test_the_version_is_written_once_and_sent_as_the_user_agent() -> None:
    from syncflow._sync import USER_AGENT

    assert USER_AGENT.startswith(f"syncflow/{syncflow.__version__} ")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "syncflow._version.__version__" in pyproject
    assert syncflow.__version__ not in pyproject
