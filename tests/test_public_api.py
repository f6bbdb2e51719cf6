"""syncflow for people: the public API in scripts, inside a running event loop, and the example notebook."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import textwrap
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
    assert "accelo.jobs" in done.stderr, "tqdm shows a progress bar per stream"


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
