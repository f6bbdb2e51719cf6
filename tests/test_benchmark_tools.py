"""Keeps the measurement tools of issue 16 working (benchmarks/value_forms.py, floor_ratio's worker figures).

No timing assertions: what is checked is what the tools conclude from the SDK's behaviour (which forms it accepts,
that accepted forms encode to the same cells) and that the worker reports CPU per thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("requests", reason="the benchmark's peers need the 'bench' extra")

# `benchmarks` lives at the repository root, next to `tests`; pytest only puts `tests` on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._measure import run_system
from benchmarks._sim import SimOptions

REPO = Path(__file__).resolve().parent.parent


def test_value_forms_reports_each_form_through_the_sdk_runner() -> None:
    # A subprocess: the SDK runner sets module-level state (its sink, DEBUGGING) that must not leak into this one.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.value_forms", "--rows", "20", "--repeats", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    out = done.stdout
    # What the SDK refuses is reported as refused, with its own error, rather than timed or crashing the run.
    assert "| DECIMAL | Decimal | rejected: TypeError" in out
    assert "| UTC_DATETIME | epoch int | rejected:" in out
    # Every accepted form of a type encodes to the cells of the best form (else the timings compare unlike work).
    assert "| NO |" not in out
    assert "| UTC_DATETIME | iso str Z |" in out and "| LONG | str |" in out
    assert "every column (today)" in out and "None-valued keys left out" in out
    assert "3 sink.record (rename, decode, pending)" in out


def test_worker_reports_process_and_per_thread_cpu(tmp_path: Path) -> None:
    result = run_system("tools", "syncflow", SimOptions(scale=0.1, latency=0.0, jitter=0.0), workdir=tmp_path,
                        timeout=60)  # fmt: skip
    assert result.ok, result.problems
    measured = json.loads(Path(result.log).with_name("result.json").read_text(encoding="utf-8"))
    assert measured["cpu"] > 0
    assert measured["voluntary_switches"] >= 0
    threads = measured["thread_cpu"]
    # The writer (main thread) and syncflow's event-loop thread are both seen, each with its own CPU.
    assert "MainThread" in threads
    assert len([name for name in threads if name not in ("MainThread", "thread-cpu-sampler")]) >= 1
    assert all(seconds >= 0 for seconds in threads.values())


def test_the_connector_fetches_in_its_child_process_and_the_worker_reports_its_cpu(tmp_path: Path) -> None:
    result = run_system("tools", "syncflow", SimOptions(scale=0.1, latency=0.0, jitter=0.0), workdir=tmp_path,
                        timeout=60)  # fmt: skip
    assert result.ok, (result.problems, result.log)
    assert result.rows == result.expected_rows
    measured = json.loads(Path(result.log).with_name("result.json").read_text(encoding="utf-8"))
    assert measured["children_cpu"] > 0  # the fetching happened in the child, and its CPU is reported apart


def test_ground_truth_narrows_to_the_tables_and_fields_asked_for() -> None:
    # A million-row check reads keys and cursors only: the whole records would be gigabytes of JSON.
    from syncflow.sim import SimConfig, Simulator

    sim = Simulator(SimConfig())
    whole = sim.ground_truth()
    narrow = sim.ground_truth(["accelo.invoices", "awardco.user"], ["id", "date_modified", "employeeId"])
    assert set(narrow) == {"accelo", "awardco"} and set(narrow["accelo"]) == {"invoices"}
    assert narrow["accelo"]["invoices"] == [
        {"id": r["id"], "date_modified": r["date_modified"]} for r in whole["accelo"]["invoices"]
    ]
    assert narrow["awardco"]["user"] == [{"employeeId": r["employeeId"]} for r in whole["awardco"]["user"]]
    assert set(sim.ground_truth(["accelo.staff"])) == {"accelo"}
