"""Kill `fivetran debug` in the middle of a reconciliation sweep (SIGKILL, see tests/support/crash.py), then resume.

The connector runs with `reconcile_every_hours: "0"` (a sweep every sync) against the embedded simulator: a first
run syncs everything, a second run is killed while its sweeps are under way (the checkpointed state holds a "sweep"),
a third run resumes. Through the real SDK and its local warehouse: every row is present and current, no live row was
soft-deleted (`_fivetran_deleted` stays false everywhere: the mock deletes nothing), and no sweep is left open.
Deleted records being soft-deleted after a resumed sweep is covered in-process by tests/test_reconcile.py (the
destination as of each checkpoint, then a resumed sync), where the simulator can delete records between syncs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.crash import (
    FIVETRAN,
    TRIAL_CONFIGURATION,
    make_project,
    read_state,
    read_warehouse,
    run_debug,
    truth_table,
)
from syncflow._state import StateDocument

CONFIGURATION = {**TRIAL_CONFIGURATION, "reconcile_every_hours": "0"}

pytestmark = pytest.mark.skipif(not FIVETRAN.exists(), reason="the fivetran CLI is not installed next to python")


def _deleted_rows(project: Path) -> list[tuple[str, str, int]]:
    import duckdb

    connection = duckdb.connect(str(project / "files" / "warehouse.db"), read_only=True)
    try:
        tables = connection.sql(
            "select table_schema, table_name from information_schema.columns "
            "where table_schema like 'tester_%' and column_name = '_fivetran_deleted'"
        ).fetchall()
        return [
            (schema, table, count)
            for schema, table in tables
            for (count,) in [connection.sql(
                f'select count(*) from "{schema}"."{table}" where _fivetran_deleted'
            ).fetchone() or (0,)]
            if count
        ]  # fmt: skip
    finally:
        connection.close()


def _trial(tmp_path: Path, extra_checkpoints: int, delay: float, configuration: dict[str, str]) -> None:
    truth = truth_table(configuration)
    # The first run only sets the stage (everything synced once, sweeps recorded), so it checkpoints at the default
    # cadence: at this test's 100 rows it would cost the SDK's local writer ~30 checkpoints that nothing here reads.
    # The killed and the resumed runs use `configuration`, whose short cadence puts the kill mid-sweep.
    project = make_project(tmp_path, {k: v for k, v in configuration.items() if k != "checkpoint_every_rows"})
    first = run_debug(project)
    assert first.returncode == 0 and "SYNC SUCCEEDED" in first.output, first.output[-3000:]
    assert "reconciliation" in first.output
    (project / "configuration.json").write_text(json.dumps(configuration), encoding="utf-8")
    # The second run's incremental part checkpoints about once per stream (7); then the sweeps checkpoint as rows land.
    second = run_debug(project, kill_after_checkpoints=7 + extra_checkpoints, kill_delay=delay)
    assert second.killed and second.returncode == -9, f"the sync was not killed mid-way:\n{second.output[-2000:]}"
    state = read_state(project)
    assert state is not None
    StateDocument.load(state)
    assert any("sweep" in entry for entry in state["streams"].values()), "the kill did not land mid-sweep"
    assert not _deleted_rows(project), "a live row was soft-deleted before the sweep completed"

    resumed = run_debug(project)
    assert resumed.returncode == 0 and "SYNC SUCCEEDED" in resumed.output, resumed.output[-3000:]
    final = read_warehouse(project)
    for stream, rows in truth.items():
        got = final.get(stream, {})
        assert set(got) == set(rows), f"{stream}: missing {sorted(set(rows) - set(got))[:10]}"
        assert all(got[key] == value for key, value in rows.items()), f"{stream}: stale values"
    assert not _deleted_rows(project), "a live row was soft-deleted"
    done = read_state(project)
    assert done is not None
    assert all("sweep" not in entry and "run" not in entry for entry in done["streams"].values()), done


def test_sigkill_mid_sweep_then_resume_keeps_every_live_row(tmp_path: Path) -> None:
    short = {**CONFIGURATION, "mock_scale": "1", "checkpoint_every_rows": "100"}
    _trial(tmp_path, extra_checkpoints=4, delay=0.05, configuration=short)


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "delay"), [(1, 0.0), (2, 0.2), (5, 0.1), (8, 0.3), (10, 0.05)])
def test_sigkill_mid_sweep_soak(tmp_path: Path, extra: int, delay: float) -> None:
    _trial(tmp_path, extra, delay, {**CONFIGURATION, "mock_scale": "4", "mock_seed": str(extra)})
