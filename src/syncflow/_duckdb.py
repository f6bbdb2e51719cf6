"""A DuckDB sink for scripts and notebooks: typed tables per source schema, upserts by primary key, and the sync
state stored in the same file, committed in the same transaction as the rows it covers.

Tables and columns get Fivetran's destination names (`_naming`: `employeeId` → `employee_id`), so a query written
against this file runs against the warehouse `fivetran debug` or a Fivetran destination fills, and back.

Rows are buffered per table and written at each checkpoint inside one transaction with the new state, so a crash
leaves the file at the last checkpoint: rows and state always agree, and the next run resumes from there. Each
table's rows go in as one `INSERT OR REPLACE` of an Arrow table (with pyarrow, the `duckdb` extra) or of an NDJSON
file DuckDB reads; the last upsert of a key since the checkpoint is the one kept.

Deletes are soft, as Fivetran's: every table has a `_fivetran_deleted` BOOLEAN column, false on each upsert and set
true by a delete, so a DuckDB file and a Fivetran destination hold the same rows and agree on which are gone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from operator import itemgetter
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
# A batch as Arrow (the `duckdb` extra installs pyarrow): (pyarrow type factory, its arguments) per DuckDB type.
# DECIMAL travels as its text (exact) and JSON as its text; DuckDB casts both on insert.
_ARROW_TYPES: dict[str, tuple[Any, ...]] = {
    "BIGINT": ("int64",),
    "DOUBLE": ("float64",),
    "BOOLEAN": ("bool_",),
    "VARCHAR": ("string",),
    "TIMESTAMPTZ": ("timestamp", "us", "UTC"),
}
STATE_TABLE = "_syncflow.state"
DELETED_COLUMN = "_fivetran_deleted"
_BATCH_VIEW = "_syncflow_batch"


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
        # The batch's rows whose primary key is already stored (`DuckDBSink._flush`): the key as the batch carries
        # it, cast to the table's type.
        self.key_match = " AND ".join(
            f"_stored.{_quote(name)} = CAST(_batch.{_quote(name)} AS {self.types.get(name, 'VARCHAR')})"
            for name in (destination_column(key) for key in stream.primary_key)
        )
        self.pending: list[Mapping[str, Any]] = []
        # Keys deleted since the last checkpoint; applied after the pending rows (an upsert after a delete of the
        # same key cancels the delete, so the order of the two is kept).
        self.pending_deletes: dict[tuple[Any, ...], None] = {}

    def key_of(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[name] for name in self.stream.primary_key)


class DuckDBSink:
    """Upserts rows into `path` (a DuckDB file); `checkpoint` commits buffered rows together with the state."""

    def __init__(self, path: str | PathLike[str], streams: Iterable[Stream], *, arrow: bool | None = None) -> None:
        # `arrow`: hand batches over as Arrow tables; None = when pyarrow is installed (`pip install
        # syncflow[duckdb]`). Without it, batches go through an NDJSON file DuckDB reads: same rows, more CPU.
        self._arrow = importlib.util.find_spec("pyarrow") is not None if arrow is None else arrow
        # What the Arrow hand-over imports, on a thread `prepare_writes` starts (see there); `_batch` joins it.
        self._arrow_imports: threading.Thread | None = None
        self._arrow_requested = False  # prepare_writes was called, or the sink is closed: never start another
        self._connection = duckdb.connect(str(path))
        self._tables = {(s.source, s.table): _Table(s) for s in streams}
        self._threads: int | None = None
        try:
            # Batches are a few thousand rows: DuckDB's thread pool only adds hand-offs on them, and its threads
            # compete for the cores with the thread fetching the pages. One thread halved the INSERT time of a
            # sink-only run on 2 cores; the setting is the database's (a user's connection to the same file in this
            # process shares it), so close() puts the previous one back.
            (threads,) = self._connection.execute("SELECT current_setting('threads')").fetchone() or (None,)
            self._connection.execute("SET threads = 1")
            self._threads = None if threads is None else int(threads)
            # One transaction for the ~30 DDL statements: each would otherwise commit (and sync the WAL) alone, and
            # they run before the sync sends its first request (~0.07 -> ~0.03 s for the seven tables).
            self._connection.execute("BEGIN TRANSACTION")
            self._connection.execute("CREATE SCHEMA IF NOT EXISTS _syncflow")
            self._connection.execute(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (id INTEGER PRIMARY KEY, state JSON)")
            for table in self._tables.values():
                self._create(table)
            self._connection.execute("COMMIT")
        except BaseException:
            # Nothing of a failed setup is kept; "no transaction is active" when it failed before BEGIN or at COMMIT.
            with contextlib.suppress(duckdb.TransactionException):
                self._connection.execute("ROLLBACK")
            self.close()  # the caller never gets the sink, so it cannot close the file itself
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
        committing = False
        try:
            for table in self._tables.values():
                self._flush(table)
                self._soft_delete(table)
            connection.execute(f"INSERT OR REPLACE INTO {STATE_TABLE} VALUES (1, ?)", [document])
            committing = True
            connection.execute("COMMIT")
        except BaseException:
            try:
                connection.execute("ROLLBACK")
            except duckdb.TransactionException:
                if not committing:
                    raise
                # "no transaction is active": the COMMIT that failed had already rolled the transaction back
            for table in self._tables.values():  # a column added in the transaction is gone with it
                table.columns = [row[0] for row in connection.execute(f"DESCRIBE {table.name}").fetchall()]
            raise
        for table in self._tables.values():
            table.pending.clear()
            table.pending_deletes.clear()

    def _soft_delete(self, table: _Table) -> None:
        if not table.pending_deletes:
            return
        names = [destination_column(name) for name in table.stream.primary_key]
        kinds = [table.types.get(name, "VARCHAR") for name in names]
        keys = list(table.pending_deletes)
        cells = [_cells([key[index] for key in keys], kind) for index, kind in enumerate(kinds)]
        on = " AND ".join(f"{table.name}.{_quote(name)} = _gone.{_quote(name)}" for name in names)
        with self._batch(names, kinds, cells) as source:
            self._connection.execute(
                f"UPDATE {table.name} SET {_quote(DELETED_COLUMN)} = true FROM (SELECT "
                + ", ".join(f"CAST({_quote(n)} AS {k}) AS {_quote(n)}" for n, k in zip(names, kinds, strict=True))
                + f" FROM {source}) AS _gone WHERE {on}"
            )

    def _flush(self, table: _Table) -> None:
        if not table.pending:
            return
        # Every field name of every row, gathered in C (`set.union` iterates each row's keys): ~14 ms per 34,800
        # rows against ~25 ms for a comprehension, on the caller's thread, holding the GIL the fetches need.
        fields = sorted(set().union(*table.pending) - set(table.sources.values()))
        for field in fields:  # AwardCo may return fields beyond the declared ones: keep them, as text
            name = destination_column(field)
            if name in table.sources:
                continue  # renames onto a column already filled by an earlier field: the first is kept
            table.sources[name] = field
            table.types[name] = "VARCHAR"
        for name in table.sources:
            if name not in table.columns:  # new in this batch, or added in a transaction that was rolled back
                self._connection.execute(f"ALTER TABLE {table.name} ADD COLUMN {_quote(name)} {table.types[name]}")
                table.columns.append(name)
        columns = [name for name in table.columns if name in table.sources]
        kinds = [table.types[name] for name in columns]
        rows = _latest(table.pending, table.stream.primary_key)
        # Column lists, not rows, for one bulk conversion each in Arrow (or DuckDB).
        cells = [
            _cells(values, kind)
            for values, kind in zip(_columns(rows, [table.sources[n] for n in columns]), kinds, strict=True)
        ]
        names = ", ".join(_quote(name) for name in [*columns, DELETED_COLUMN])
        select = ", ".join(f"CAST({_quote(name)} AS {kind})" for name, kind in zip(columns, kinds, strict=True))
        with self._batch(columns, kinds, cells) as source:
            # A plain INSERT where no key of the batch is stored yet (every batch of a first sync): DuckDB plans an
            # INSERT OR REPLACE as a MERGE (a join and a grouping besides the insert), ~7 ms more per statement
            # whatever its size, and the sink issues one per table per checkpoint; the check costs ~2 ms, even
            # against a million stored rows. The batch holds each key once (`_latest`), so the two are the same.
            clash = self._connection.execute(
                f"SELECT EXISTS (SELECT 1 FROM {table.name} AS _stored, {source} AS _batch WHERE {table.key_match})"
            ).fetchone()
            verb = "INSERT" if clash == (False,) else "INSERT OR REPLACE"
            # `false`: an upsert (re)creates the row, as in Fivetran.
            self._connection.execute(f"{verb} INTO {table.name} ({names}) SELECT {select}, false FROM {source}")

    @contextmanager
    def _batch(self, names: Sequence[str], kinds: Sequence[str], cells: Sequence[list[Any]]) -> Iterator[str]:
        """The columns `cells` as a relation DuckDB can select from: an Arrow table (pyarrow installed) or an
        NDJSON file it reads itself. Both hand DuckDB the whole batch in one statement: row-at-a-time executemany
        manages a few hundred rows/s."""
        if self._arrow:
            self._arrow_imported()
            import pyarrow

            arrays = [_arrow_array(pyarrow, values, kind) for values, kind in zip(cells, kinds, strict=True)]
            self._connection.register(_BATCH_VIEW, pyarrow.Table.from_arrays(arrays, names=list(names)))
            try:
                yield _BATCH_VIEW
            finally:
                self._connection.unregister(_BATCH_VIEW)
            return
        with tempfile.NamedTemporaryFile("w", suffix=".ndjson", encoding="utf-8", delete=False) as handle:
            for values in zip(*cells, strict=True):
                handle.write(json.dumps(dict(zip(names, values, strict=True)), default=_json_default))
                handle.write("\n")
        try:
            spec = ", ".join(
                f"'{_escape(name)}': '{_read_type(kind)}'" for name, kind in zip(names, kinds, strict=True)
            )
            escaped = handle.name.replace("'", "''")
            yield (
                f"read_json('{escaped}', format = 'newline_delimited', columns = {{{spec}}}, "
                "timestampformat = '%Y-%m-%dT%H:%M:%S%z')"
            )
        finally:
            os.unlink(handle.name)

    def prepare_writes(self) -> None:
        """Start importing what the Arrow hand-over needs, on a thread; call it once the sync's fetch is started
        (the blocking `to_duckdb` does, through the pipeline's `on_fetching`). At most one thread per sink, none
        after `close`; without it, the first write imports them itself.

        pyarrow, its compute module (decimals) and its dataset module (DuckDB's Arrow scan imports it) take ~0.3 s
        of GIL-holding work to import. At the first write, that is the middle of the sync, starving the thread that
        fetches. During the sync's first round trips (token, rate probe, counts) little else runs. But not before
        the fetch starts: started with the sink, the import tripled the table set-up (each DDL statement releases
        the GIL and waits up to a switch interval to get it back: ~0.02 -> 0.10-0.16 s) and slowed the event loop's
        start, and the first request left at ~0.2 s instead of ~0.07 s."""
        if self._arrow_requested:
            return
        self._arrow_requested = True
        if self._arrow and "pyarrow.dataset" not in sys.modules:
            self._arrow_imports = threading.Thread(target=_import_arrow, name="syncflow-pyarrow-import", daemon=True)
            self._arrow_imports.start()

    def _arrow_imported(self) -> None:
        if self._arrow_imports is not None:
            self._arrow_imports.join()
            self._arrow_imports = None

    def close(self) -> None:
        self._arrow_requested = True  # a prepare_writes after this starts nothing
        try:
            self._arrow_imported()  # no import outlives the sink
            if self._threads is not None:
                self._connection.execute(f"SET threads = {self._threads}")
        finally:
            self._connection.close()


def _import_arrow() -> None:
    """What the Arrow path imports (see `DuckDBSink.prepare_writes`): pyarrow, pyarrow.compute, and pyarrow.dataset
    where this pyarrow has it (DuckDB uses it to scan a registered table)."""
    importlib.import_module("pyarrow.compute")  # imports pyarrow too
    if importlib.util.find_spec("pyarrow.dataset") is not None:
        importlib.import_module("pyarrow.dataset")


def _latest(rows: Sequence[Mapping[str, Any]], key: Sequence[str]) -> Sequence[Mapping[str, Any]]:
    """`rows` with one row per primary key, the last upserted: one INSERT OR REPLACE given a key twice keeps the
    first (DuckDB 1.x), where upserts one after the other leave the last."""
    pick = itemgetter(*key)
    latest = dict(zip(map(pick, rows), rows, strict=True))  # in C; a later row of a key keeps the first one's place
    return rows if len(latest) == len(rows) else list(latest.values())


def _columns(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[list[Any]]:
    """`rows` as one list per field (None where a row lacks it).

    Rows almost always hold every field (the decoders fill missing ones with None): then `itemgetter` and `zip`
    transpose them in C, ~65 ms per 34,800 Accelo and AwardCo rows against ~95 ms for a `row.get` comprehension per
    column, on the caller's thread, where it holds the GIL the fetching thread needs."""
    if not fields:
        return []
    try:
        if len(fields) == 1:
            return [list(map(itemgetter(fields[0]), rows))]
        return [list(column) for column in zip(*map(itemgetter(*fields), rows), strict=True)]
    except KeyError:  # a row without some field (a plug-in's): that cell is null
        return [[row.get(field) for row in rows] for field in fields]


_PLAIN_TEXT = frozenset({str, type(None)})


def _cells(values: list[Any], kind: str) -> list[Any]:
    """A column's values as the batch carries them: JSON as its text, text as text, the rest as they are."""
    if kind == "JSON":
        return [None if value is None else json.dumps(value, sort_keys=True, default=str) for value in values]
    if kind == "VARCHAR":
        if _PLAIN_TEXT.issuperset(map(type, values)):  # the usual case, checked in C: nothing to convert
            return values
        return [value if value is None or type(value) is str else _text(value) for value in values]
    return values


def _text(value: Any) -> str:
    """A non-text value in a text column (a field beyond the declared ones): its JSON text (5 -> "5", true)."""
    return json.dumps(value, sort_keys=True, default=str)


def _arrow_array(pyarrow: Any, values: list[Any], kind: str) -> Any:
    arrow_type = _ARROW_TYPES.get(kind)
    if arrow_type is not None:
        try:
            return pyarrow.array(values, type=getattr(pyarrow, arrow_type[0])(*arrow_type[1:]))
        except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass  # not the declared Python type (a plug-in's value): as text, and DuckDB's CAST decides
    text = pyarrow.array(_cells(values, "VARCHAR"), type=pyarrow.string())
    params = decimal_params(kind)
    if params is not None:
        return _arrow_decimal(pyarrow, text, *params)
    return text


# A number as the decimal converter passes it on ("125.00", "-0.5"): the only text given to Arrow's cast, so any other
# form (an exponent, spaces, a sign) keeps DuckDB's reading of it.
_PLAIN_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"


def _arrow_decimal(pyarrow: Any, text: Any, precision: int, scale: int) -> Any:
    """A DECIMAL column's text as Arrow decimals where Arrow converts every value exactly, else the text itself.

    DuckDB 1.5 casts text to a DECIMAL wider than 18 digits (Accelo's are DECIMAL(28,6)) at ~13 µs a value, ~75x
    Arrow's cast: ~0.5 s of the sink's CPU for 34,800 Accelo rows. Arrow refuses a value it would round or that
    overflows; the column then stays text and DuckDB's CAST rounds or refuses it, as before. Where Arrow accepts,
    both give the same number (checked in the tests)."""
    import pyarrow.compute as compute

    if compute.all(compute.match_substring_regex(text, _PLAIN_DECIMAL)).as_py() is False:
        return text
    try:
        return compute.cast(text, pyarrow.decimal128(precision, scale))
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
        return text  # a value Arrow would round or that does not fit: DuckDB's CAST decides, as for any text


def _read_type(kind: str) -> str:
    # JSON arrives as its text (`_cells`): read as text, then cast, or read_json would store a JSON string of it.
    return "VARCHAR" if kind == "JSON" else kind


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000")
    return str(value)


def _escape(name: str) -> str:
    return name.replace("'", "''")
