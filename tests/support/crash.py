"""Harness for crash tests: run the connector with `fivetran debug` in a scratch copy of the project, kill it with
SIGKILL at a chosen moment, and read back files/warehouse.db and files/state.json.

`fivetran debug` first runs `pipreqs`, which tries the network and spends ~12 s in retries where there is none. A
stub `pipreqs` (write an empty requirements file to `--savepath`, exit 0) is put first on PATH so each run starts at
once; nothing else about the SDK's run changes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.processes import fetch_processes
from support.sim import CLASSIC_STREAMS

REPO = Path(__file__).resolve().parents[2]
# The embedded simulator's configuration the crash trials were sized for: the classic tables (the catalogue has its
# own tests), small and a little slow, so that kills land between checkpoints. Trials override what they vary.
TRIAL_CONFIGURATION = {
    "use_mock": "true",
    "streams": ",".join(CLASSIC_STREAMS),
    "mock_seed": "11",
    "mock_scale": "2",
    "mock_latency_seconds": "0.02",
    "checkpoint_every_rows": "250",
    "max_concurrency": "4",
}
FIVETRAN = Path(sys.executable).parent / "fivetran"

_PIPREQS_STUB = """#!/bin/sh
# Stub for tests: `fivetran debug` runs pipreqs, which would spend ~12 s retrying the network.
while [ $# -gt 0 ]; do
  if [ "$1" = "--savepath" ]; then : > "$2"; fi
  shift
done
exit 0
"""

CHECKPOINT_LINE = re.compile(r"checkpoint recorded")
# The connector's end-of-sync summary, one line per stream ("accelo.companies: 500 rows, ..." or "... rows upserted");
# progress lines have the same start and count up, so the last match per stream is the summary.
ROWS_LINE = re.compile(r"connector\s+((?:accelo|awardco)\.\w+): (\d+) rows\b")
# The SDK's own operation count (its summary table).
UPSERTS_LINE = re.compile(r"Upserts\s*\|\s*(\d+)")


def make_project(root: Path, configuration: Mapping[str, str]) -> Path:
    """A scratch copy of the connector (connector.py, requirements.txt, configuration.json, src/ symlinked)."""
    project = root / "project"
    project.mkdir()
    for name in ("connector.py", "requirements.txt"):
        shutil.copy(REPO / name, project / name)
    (project / "src").symlink_to(REPO / "src", target_is_directory=True)
    (project / "configuration.json").write_text(json.dumps(configuration), encoding="utf-8")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "pipreqs"
    stub.write_text(_PIPREQS_STUB, encoding="utf-8")
    stub.chmod(0o755)
    return project


@dataclass
class Run:
    returncode: int
    killed: bool
    output: str
    checkpoints_seen: int
    rows: dict[str, int] = field(default_factory=dict)  # the connector's per-stream rows summary
    upserts: int | None = None  # the SDK's count of upserts in this run


def _no_fetch_process_outlives(project: Path, grace: float = 5.0) -> None:
    """A killed `fivetran debug` takes its fetch process with it (the child watches its stdin): within `grace`."""
    deadline = time.monotonic() + grace
    while left := fetch_processes(cwd=project):
        if time.monotonic() > deadline:
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"the connector's fetch process outlived fivetran debug: {left}")
        time.sleep(0.05)


def run_debug(
    project: Path, *, kill_after_checkpoints: int | None = None, kill_delay: float = 0.0, timeout: float = 120.0
) -> Run:
    """Run `fivetran debug` in `project`; with `kill_after_checkpoints`, SIGKILL it `kill_delay` seconds after that
    many checkpoints were recorded (or when it finishes first, whichever comes first)."""
    env = dict(os.environ)
    env["PATH"] = f"{project.parent / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    process = subprocess.Popen(
        [str(FIVETRAN), "debug", "--configuration", "configuration.json"],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    checkpoints = 0
    killed = False
    armed = threading.Event()

    def killer() -> None:
        nonlocal killed
        if not armed.wait(timeout):
            return
        time.sleep(kill_delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed = True

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    try:
        for line in process.stdout:
            lines.append(line)
            if CHECKPOINT_LINE.search(line):
                checkpoints += 1
                if kill_after_checkpoints is not None and checkpoints == kill_after_checkpoints:
                    armed.set()
            if time.monotonic() > deadline:
                raise TimeoutError("fivetran debug did not finish in time")
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        armed.set()  # release the killer thread (it does nothing once the process is gone)
        thread.join(timeout=5)
    _no_fetch_process_outlives(project)
    output = "".join(lines)
    rows = {m.group(1): int(m.group(2)) for m in ROWS_LINE.finditer(output)}
    upserts = [int(m.group(1)) for m in UPSERTS_LINE.finditer(output)]
    return Run(process.returncode, killed, output, checkpoints, rows, upserts[-1] if upserts else None)


def read_warehouse(project: Path) -> dict[str, dict[Any, Any]]:
    """Per table ("accelo.companies", "awardco.user"): primary key -> cursor value (epoch seconds; None for staff).

    Also asserts the table holds no duplicate primary keys."""
    import duckdb

    from syncflow.sources._accelo_catalog import RESOURCES

    path = project / "files" / "warehouse.db"
    if not path.exists():
        return {}
    tables: dict[str, dict[Any, Any]] = {}
    connection = duckdb.connect(str(path), read_only=True)
    try:
        found = connection.sql(
            "select table_schema, table_name from information_schema.tables where table_schema like 'tester_%'"
        ).fetchall()
        for schema, table in found:
            source = schema.removeprefix("tester_")
            key = "employee_id" if source == "awardco" else "id"
            cursor = "updated_at" if source == "awardco" else RESOURCES[table].cursor
            column = f"epoch({cursor})::BIGINT" if cursor else "NULL"
            rows = connection.sql(f'select {key}, {column} from "{schema}"."{table}"').fetchall()
            values = {k: v for k, v in rows}
            assert len(values) == len(rows), f"{source}.{table} holds duplicate primary keys"
            tables[f"{source}.{table}"] = values
    finally:
        connection.close()
    return tables


def truth_table(configuration: Mapping[str, str]) -> dict[str, dict[Any, Any]]:
    """The same shape as `read_warehouse`, from the simulator `use_mock` builds from this configuration."""
    from datetime import datetime

    from syncflow import Settings
    from syncflow._sync import select_streams
    from syncflow.sim import mock_simulator
    from syncflow.sources._accelo_catalog import RESOURCES

    settings = Settings.from_mapping(configuration)
    chosen = {stream.key for stream in select_streams(settings, None)}  # the tables this configuration syncs
    simulator = mock_simulator(settings)
    truth = simulator.ground_truth()
    tables: dict[str, dict[Any, Any]] = {}
    for entity, records in truth["accelo"].items():
        cursor = RESOURCES[entity].cursor
        tables[f"accelo.{entity}"] = {int(r["id"]): (int(r[cursor]) if cursor else None) for r in records}
    tables["awardco.user"] = {
        u["employeeId"]: int(datetime.fromisoformat(u["updated_at"].replace("Z", "+00:00")).timestamp())
        for u in truth["awardco"]["user"]
    }
    return {key: table for key, table in tables.items() if key in chosen}


def read_state(project: Path) -> dict[str, Any] | None:
    path = project / "files" / "state.json"
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def seeded_kill_points(seed: int, trials: int, max_checkpoints: int) -> list[tuple[int, float]]:
    """(checkpoints to wait for, extra delay in seconds) per trial: mid-table, between checkpoints, mid-slice."""
    rng = random.Random(seed)
    return [(rng.randint(1, max_checkpoints), round(rng.uniform(0.0, 0.35), 3)) for _ in range(trials)]
