"""Run a `Connector` through the Fivetran Connector SDK's local runner, in this process, without `fivetran debug`.

`Connector.debug()` (what `fivetran debug` calls) first lints requirements.txt with pipreqs, which looks packages up
on PyPI: with no route that costs ~12 s of retries before the connector starts, and it is not the connector's cost.
`Connector._run_locally` then only sets two globals and calls `core_adapter.run(...)`, which declares the schema,
calls `update()` and writes `<project>/files/warehouse.db` (DuckDB) plus the state. We do exactly those steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fivetran_connector_sdk import Connector
from fivetran_connector_sdk_cli import core_adapter
from fivetran_connector_sdk_common import constants
from fivetran_connector_sdk_common.logger import Logging

__all__ = ["TableWrites", "count_table_writes", "run_in_sdk_runner", "state_path", "warehouse_path"]

UpdateFn = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
SchemaFn = Callable[[Mapping[str, Any]], list[dict[str, Any]]]


def warehouse_path(project: Path) -> Path:
    return project / "files" / "warehouse.db"


def state_path(project: Path) -> Path:
    """Where the runner saves the state after each checkpoint (`fivetran debug` resumes from it)."""
    return project / "files" / "state.json"


class TableWrites:
    """How often the local runner wrote a table (one per table with rows waiting, at each checkpoint's flush), and
    the writing thread's CPU seconds in those writes: the part of a checkpoint that grows with how many tables a
    sync keeps busy at once, not with its rows."""

    def __init__(self) -> None:
        self.writes = 0
        self.cpu = 0.0


@contextmanager
def count_table_writes() -> Iterator[TableWrites]:
    """Count the runner's table writes while inside (measurement only: it wraps `_Sync._write` of the installed
    runner, and counts nothing if that SDK version has no such method)."""
    from fivetran_connector_sdk_core import runner

    counted = TableWrites()
    original = getattr(runner._Sync, "_write", None)
    if original is None:
        yield counted
        return

    def write(self: Any, table: Any) -> Any:
        started = time.thread_time()
        try:
            return original(self, table)
        finally:
            counted.writes += 1
            counted.cpu += time.thread_time() - started

    runner._Sync._write = write
    try:
        yield counted
    finally:
        runner._Sync._write = original


def run_in_sdk_runner(
    update: UpdateFn, schema: SchemaFn, project: Path, configuration: Mapping[str, str],
    state: Mapping[str, Any] | None = None,
) -> float:
    """Wall seconds of one sync from `state` (empty: a first sync); raises what the sync raised."""
    # What _run_locally sets before core_adapter.run: the logger reads LOG_LEVEL (None would crash it).
    constants.DEBUGGING = True
    Logging.LOG_LEVEL = Logging.Level.INFO
    project.mkdir(parents=True, exist_ok=True)
    connector = Connector(update=update, schema=schema)
    started = time.perf_counter()
    core_adapter.run(connector, str(project), dict(configuration), dict(state or {}))
    return time.perf_counter() - started
