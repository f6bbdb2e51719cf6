"""A DuckDB sink for scripts and notebooks: typed tables per source schema, upserts by primary key, and the sync
state stored in the same file, committed in the same transaction as the rows it covers.

Tables and columns get Fivetran's destination names (`_naming`: `employeeId` → `employee_id`), so a query written
against this file runs against the warehouse `fivetran debug` or a Fivetran destination fills, and back.

Rows are buffered per table and written at each checkpoint inside one transaction with the new state, so a crash
leaves the file at the last checkpoint: rows and state always agree, and the next run resumes from there.

Deletes are soft, as Fivetran's: every table has a `_fivetran_deleted` BOOLEAN column, false on each upsert and set
true by a delete, so a DuckDB file and a Fivetran destination hold the same rows and agree on which are gone.
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

from ._exceptions import ConfigurationError
from ._naming import destination_column, destination_table
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
DELETED_COLUMN = "_fivetran_deleted"


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
        self.name = f"{_quote(stream.source)}.{_quote(destination_table(stream.table))}"
        # Destination column → the field it is read from. Of two fields that rename to one name, the first is kept,
        # as in Fivetran.
        self.sources: dict[str, str] = {}
        for field in stream.columns:
            self.sources.setdefault(destination_column(field), field)
        self.types = {dest: _duckdb_type(stream.columns[src]) for dest, src in self.sources.items()}
        self.columns: list[str] = list(self.sources)
        self.pending: list[Mapping[str, Any]] = []
        # Keys deleted since the last checkpoint; applied after the pending rows (an upsert after a delete of the
        # same key cancels the delete, so the order of the two is kept).
        self.pending_deletes: dict[tuple[Any, ...], None] = {}

    def key_of(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[name] for name in self.stream.primary_key)


class DuckDBSink:
    """Upserts rows into `path` (a DuckDB file); `checkpoint` commits buffered rows together with the state."""

    def __init__(self, path: str | PathLike[str], streams: Iterable[Stream]) -> None:
        self._connection = duckdb.connect(str(path))
        self._tables = {(s.source, s.table): _Table(s) for s in streams}
        try:
            self._connection.execute("CREATE SCHEMA IF NOT EXISTS _syncflow")
            self._connection.execute(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (id INTEGER PRIMARY KEY, state JSON)")
            for table in self._tables.values():
                self._create(table)
        except BaseException:
            self._connection.close()  # the caller never gets the sink, so it cannot close the file itself
            raise

    def __repr__(self) -> str:
        return f"DuckDBSink(tables={len(self._tables)})"

    def _create(self, table: _Table) -> None:
        stream = table.stream
        self._connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(stream.source)}")
        columns = ", ".join(f"{_quote(name)} {kind}" for name, kind in table.types.items())
        key = ", ".join(_quote(destination_column(name)) for name in stream.primary_key)
        self._connection.execute(f"CREATE TABLE IF NOT EXISTS {table.name} ({columns}, PRIMARY KEY ({key}))")
        self._connection.execute(
            f"ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS {_quote(DELETED_COLUMN)} BOOLEAN DEFAULT false"
        )
        existing = [row[0] for row in self._connection.execute(f"DESCRIBE {table.name}").fetchall()]
        renamed = [
            src for dest, src in table.sources.items() if src != dest and src in existing and dest not in existing
        ]
        if renamed:
            # A file an older syncflow wrote with the API's own names: appending renamed columns would split the data.
            raise ConfigurationError(
                f"{table.name}: this DuckDB file has columns under the API's names ({', '.join(renamed[:3])}), from an "
                "older syncflow; write to a new file, or drop the table to sync it again with Fivetran's names"
            )
        for name, kind in table.types.items():
            if name not in existing:
                # A declared column missing from a file written with an earlier schema: added with its declared type.
                self._connection.execute(f"ALTER TABLE {table.name} ADD COLUMN {_quote(name)} {kind}")
                existing.append(name)
        table.columns = existing

    def load_state(self) -> dict[str, Any] | None:
        row = self._connection.execute(f"SELECT state FROM {STATE_TABLE} WHERE id = 1").fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        target = self._tables[(schema, table)]
        target.pending.append(row)
        if target.pending_deletes:
            target.pending_deletes.pop(target.key_of(row), None)

    def delete(self, schema: str, table: str, keys: Sequence[Mapping[str, Any]]) -> None:
        target = self._tables[(schema, table)]
        for key in keys:
            target.pending_deletes[target.key_of(key)] = None

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        document = json.dumps(state)
        connection = self._connection
        connection.execute("BEGIN TRANSACTION")
        try:
            for table in self._tables.values():
                self._flush(table)
                self._soft_delete(table)
            connection.execute(f"INSERT OR REPLACE INTO {STATE_TABLE} VALUES (1, ?)", [document])
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        for table in self._tables.values():
            table.pending.clear()
            table.pending_deletes.clear()

    def _soft_delete(self, table: _Table) -> None:
        if not table.pending_deletes:
            return
        where = " AND ".join(f"{_quote(destination_column(name))} = ?" for name in table.stream.primary_key)
        self._connection.executemany(
            f"UPDATE {table.name} SET {_quote(DELETED_COLUMN)} = true WHERE {where}",
            [list(key) for key in table.pending_deletes],
        )

    def _flush(self, table: _Table) -> None:
        if not table.pending:
            return
        fields = sorted({name for row in table.pending for name in row} - set(table.sources.values()))
        for field in fields:  # AwardCo may return fields beyond the declared ones: keep them, as text
            name = destination_column(field)
            if name in table.sources:
                continue  # renames onto a column already filled by an earlier field: the first is kept
            table.sources[name] = field
            table.types[name] = "VARCHAR"
            if name not in table.columns:
                self._connection.execute(f"ALTER TABLE {table.name} ADD COLUMN {_quote(name)} VARCHAR")
                table.columns.append(name)
        columns: Sequence[str] = [name for name in table.columns if name in table.sources]
        types = {name: table.types[name] for name in columns}
        types[DELETED_COLUMN] = "BOOLEAN"
        # Row-at-a-time executemany manages a few hundred rows/s; one NDJSON file read by DuckDB is ~100x faster.
        with tempfile.NamedTemporaryFile("w", suffix=".ndjson", encoding="utf-8", delete=False) as handle:
            for row in table.pending:
                cells = {name: _cell(row.get(table.sources[name])) for name in columns}
                cells[DELETED_COLUMN] = False  # an upsert (re)creates the row
                handle.write(json.dumps(cells, default=_json_default))
                handle.write("\n")
        try:
            spec = "{" + ", ".join(f"'{_escape(name)}': '{kind}'" for name, kind in types.items()) + "}"
            names = ", ".join(_quote(name) for name in [*columns, DELETED_COLUMN])
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
