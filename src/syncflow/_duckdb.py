"""A DuckDB sink for scripts and notebooks: typed tables per source schema, upserts by primary key, and the sync
state stored in the same file, committed in the same transaction as the rows it covers.

Rows are buffered per table and written at each checkpoint inside one transaction with the new state, so a crash
leaves the file at the last checkpoint: rows and state always agree, and the next run resumes from there.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from os import PathLike
from typing import Any

import duckdb

from ._streams import Stream, decimal_params

__all__ = ["DuckDBSink"]

_DUCKDB_TYPES = {
    "INT": "BIGINT",
    "LONG": "BIGINT",
    "FLOAT": "DOUBLE",
    "DOUBLE": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "STRING": "VARCHAR",
    "UTC_DATETIME": "TIMESTAMPTZ",
    "JSON": "JSON",
}
STATE_TABLE = "_syncflow.state"


def _duckdb_type(kind: str) -> str:
    params = decimal_params(kind)
    if params is not None:
        return f"DECIMAL({min(params[0], 38)},{params[1]})"  # DuckDB's widest decimal has 38 digits
    return _DUCKDB_TYPES[kind.upper()]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Table:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.name = f"{_quote(stream.source)}.{_quote(stream.table)}"
        self.columns: list[str] = list(stream.columns)
        self.pending: list[Mapping[str, Any]] = []


class DuckDBSink:
    """Upserts rows into `path` (a DuckDB file); `checkpoint` commits buffered rows together with the state."""

    def __init__(self, path: str | PathLike[str], streams: Iterable[Stream]) -> None:
        self._connection = duckdb.connect(str(path))
        self._tables = {(s.source, s.table): _Table(s) for s in streams}
        self._connection.execute("CREATE SCHEMA IF NOT EXISTS _syncflow")
        self._connection.execute(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (id INTEGER PRIMARY KEY, state JSON)")
        for table in self._tables.values():
            self._create(table)

    def __repr__(self) -> str:
        return f"DuckDBSink(tables={len(self._tables)})"

    def _create(self, table: _Table) -> None:
        stream = table.stream
        self._connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(stream.source)}")
        columns = ", ".join(f"{_quote(name)} {_duckdb_type(kind)}" for name, kind in stream.columns.items())
        key = ", ".join(_quote(name) for name in stream.primary_key)
        self._connection.execute(f"CREATE TABLE IF NOT EXISTS {table.name} ({columns}, PRIMARY KEY ({key}))")
        existing = [row[0] for row in self._connection.execute(f"DESCRIBE {table.name}").fetchall()]
        table.columns = existing

    def load_state(self) -> dict[str, Any] | None:
        row = self._connection.execute(f"SELECT state FROM {STATE_TABLE} WHERE id = 1").fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        self._tables[(schema, table)].pending.append(row)

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        document = json.dumps(state)
        connection = self._connection
        connection.execute("BEGIN TRANSACTION")
        try:
            for table in self._tables.values():
                self._flush(table)
            connection.execute(f"INSERT OR REPLACE INTO {STATE_TABLE} VALUES (1, ?)", [document])
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        for table in self._tables.values():
            table.pending.clear()

    def _flush(self, table: _Table) -> None:
        if not table.pending:
            return
        extra = sorted({name for row in table.pending for name in row} - set(table.columns))
        declared = table.stream.columns
        for name in extra:
            # AwardCo may return fields beyond the declared ones: kept as text. A declared column missing from an
            # existing file (one written with an earlier schema) is added with its declared type.
            kind = _duckdb_type(declared[name]) if name in declared else "VARCHAR"
            self._connection.execute(f"ALTER TABLE {table.name} ADD COLUMN {_quote(name)} {kind}")
            table.columns.append(name)
        columns: Sequence[str] = table.columns
        types = {name: _duckdb_type(table.stream.columns[name]) if name in table.stream.columns else "VARCHAR"
                 for name in columns}  # fmt: skip
        # Row-at-a-time executemany manages a few hundred rows/s; one NDJSON file read by DuckDB is ~100x faster.
        with tempfile.NamedTemporaryFile("w", suffix=".ndjson", encoding="utf-8", delete=False) as handle:
            for row in table.pending:
                handle.write(json.dumps({name: _cell(row.get(name)) for name in columns}, default=_json_default))
                handle.write("\n")
        try:
            spec = "{" + ", ".join(f"'{_escape(name)}': '{kind}'" for name, kind in types.items()) + "}"
            names = ", ".join(_quote(name) for name in columns)
            self._connection.execute(
                f"INSERT OR REPLACE INTO {table.name} ({names}) SELECT {names} FROM "
                f"read_json(?, format = 'newline_delimited', columns = {spec}, "
                "timestampformat = '%Y-%m-%dT%H:%M:%S%z')",
                [handle.name],
            )
        finally:
            os.unlink(handle.name)

    def close(self) -> None:
        self._connection.close()


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000")
    return str(value)


def _escape(name: str) -> str:
    return name.replace("'", "''")
