"""The DuckDB sink's two write paths (Arrow batches with pyarrow, NDJSON files without) write exactly the simulator's
records, typed, with Fivetran's names; they resume after a hard kill to exactly those records; and upserts, deletes,
JSON and fields beyond the declared ones behave the same on both."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

import syncflow
from support.sim import CLASSIC_STREAMS
from syncflow import Settings
from syncflow._duckdb import DuckDBSink
from syncflow._naming import destination_column, destination_table
from syncflow._streams import Stream
from syncflow._sync import select_streams
from syncflow.sim import mock_simulator

CONFIGURATION = {
    "use_mock": "true",
    "streams": ",".join(CLASSIC_STREAMS),
    "mock_seed": "5",
    "mock_scale": "0.5",  # 870 rows over the seven tables: several pages and slices per table
    "checkpoint_every_rows": "150",
    "max_concurrency": "4",
}
REPO = Path(__file__).resolve().parents[1]

# The Arrow path needs pyarrow (the `duckdb` extra; the dev install has it). Without it this test says so instead of
# passing unseen.
PATHS = [pytest.param(True, id="arrow"), pytest.param(False, id="ndjson")]


@pytest.fixture(params=PATHS)
def arrow(request: pytest.FixtureRequest) -> bool:
    if request.param:
        pytest.importorskip("pyarrow")
    return bool(request.param)


def _streams(configuration: Mapping[str, str]) -> list[Stream]:
    return select_streams(Settings.from_mapping(configuration), None)


def _expected(configuration: Mapping[str, str]) -> dict[str, dict[Any, dict[str, Any]]]:
    """Every stream's rows as the file must hold them: the simulator's records through the stream's converter, under
    Fivetran's names, by primary key (values in the form DuckDB returns them)."""
    truth = mock_simulator(Settings.from_mapping(configuration)).ground_truth()
    tables: dict[str, dict[Any, dict[str, Any]]] = {}
    for stream in _streams(configuration):
        converter = stream.converter()
        rows: dict[Any, dict[str, Any]] = {}
        for record in truth[stream.source][stream.table]:
            row = converter.convert(record)
            assert row is not None
            cells: dict[str, Any] = {}
            for field, value in row.items():
                kind = stream.columns.get(field)
                name = destination_column(field)
                cells.setdefault(name, _as_duckdb(value, kind))
            cells["_fivetran_deleted"] = False
            rows[row[stream.primary_key[0]]] = cells
        tables[f"{stream.source}.{destination_table(stream.table)}"] = rows
    return tables


def _as_duckdb(value: Any, kind: str | None) -> Any:
    if value is None:
        return None
    if kind is None:  # a field beyond the declared ones: kept as text
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if kind.startswith("DECIMAL"):
        return Decimal(value)  # equal whatever the scale DuckDB pads it to
    if kind == "JSON":
        return value  # compared with the stored JSON parsed back
    return value


def _read(path: Path, configuration: Mapping[str, str]) -> dict[str, dict[Any, dict[str, Any]]]:
    tables: dict[str, dict[Any, dict[str, Any]]] = {}
    with duckdb.connect(str(path), read_only=True) as db:
        for stream in _streams(configuration):
            name = f"{stream.source}.{destination_table(stream.table)}"
            relation = db.sql(f"SELECT * FROM {name}")
            columns = [column[0] for column in relation.description]
            types = dict(zip(columns, (str(t) for t in relation.types), strict=True))
            key = destination_column(stream.primary_key[0])
            rows: dict[Any, dict[str, Any]] = {}
            for values in relation.fetchall():
                row = {
                    column: json.loads(value) if types[column] == "JSON" and value is not None else value
                    for column, value in zip(columns, values, strict=True)
                }
                assert row[key] not in rows, f"{name}: key {row[key]} twice"
                rows[row[key]] = row
            tables[name] = rows
    return tables


def _assert_exact(path: Path, configuration: Mapping[str, str]) -> None:
    expected = _expected(configuration)
    found = _read(path, configuration)
    assert set(found) == set(expected)
    for table, rows in expected.items():
        assert set(found[table]) == set(rows), f"{table}: keys differ"
        for key, row in rows.items():
            got = found[table][key]
            for column, value in row.items():
                assert got[column] == value, f"{table} {key} {column}: {got[column]!r} != {value!r}"
            # No column beyond the declared ones and the extra fields the records carried is filled.
            assert {c for c, v in got.items() if v is not None} <= set(row), f"{table} {key}: unexpected values"


def _sync(path: Path, arrow: bool, configuration: Mapping[str, str]) -> syncflow.SyncResult:
    """What `to_duckdb` does (the file's saved state, then the sync), through the chosen write path."""
    sink = DuckDBSink(path, _streams(configuration), arrow=arrow)
    try:
        return syncflow.sync(configuration, sink, state=sink.load_state(), progress=False)
    finally:
        sink.close()


def test_every_row_equals_the_simulators_record_typed(tmp_path: Path, arrow: bool) -> None:
    path = tmp_path / "out.duckdb"
    result = _sync(path, arrow, CONFIGURATION)
    assert not result.failed and result.checkpoints > 3  # several checkpoints, so several batches per table
    _assert_exact(path, CONFIGURATION)


def test_to_duckdb_writes_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ... and asks the sink to prepare its writes once, from the pipeline once its fetch is started (not when it
    # opens the sink).
    prepared: list[bool] = []
    original = DuckDBSink.prepare_writes

    def prepare_writes(self: DuckDBSink) -> None:
        prepared.append(any(frame.function == "iterate_pipeline" for frame in inspect.stack()))
        original(self)

    monkeypatch.setattr(DuckDBSink, "prepare_writes", prepare_writes)
    path = tmp_path / "out.duckdb"
    syncflow.to_duckdb(CONFIGURATION, path, progress=False)
    _assert_exact(path, CONFIGURATION)
    assert prepared == [True]


_KILLED_RUN = """
import os, sys
sys.path.insert(0, {src!r})
import syncflow
from syncflow import Settings
from syncflow._duckdb import DuckDBSink
from syncflow._sync import select_streams

configuration = {configuration!r}

class KillAfter:
    rows = 0
    def on_start(self, budgets): pass
    def on_batch(self, batch):
        self.rows += len(batch.rows)
        if self.rows >= {rows}:
            os._exit(9)  # a hard kill: no final checkpoint, no close, a transaction possibly open
    def close(self): pass

sink = DuckDBSink({path!r}, select_streams(Settings.from_mapping(configuration), None), arrow={arrow!r})
syncflow.sync(configuration, sink, progress=KillAfter())
sys.exit(0)  # reaching this means the kill never came
"""


@pytest.mark.parametrize("rows", [300, 600])  # past the first checkpoint (every 150 rows), early and late
def test_a_hard_kill_then_resume_leaves_exactly_the_records(tmp_path: Path, arrow: bool, rows: int) -> None:
    path = tmp_path / "out.duckdb"
    script = _KILLED_RUN.format(
        src=str(REPO / "src"), configuration=CONFIGURATION, rows=rows, path=str(path), arrow=arrow
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr[-2000:]
    with duckdb.connect(str(path), read_only=True) as db:
        saved = db.sql("SELECT state FROM _syncflow.state").fetchall()
        written = sum(db.sql(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _expected(CONFIGURATION))  # type: ignore[index]
    assert saved, "no checkpoint was committed before the kill"
    total = sum(len(rows) for rows in _expected(CONFIGURATION).values())
    assert 0 < written < total  # killed mid-way, with the rows of the committed checkpoints in the file
    result = _sync(path, arrow, CONFIGURATION)
    assert not result.failed
    assert sum(result.rows.values()) < total  # it resumed: what the committed state covered is not read again
    _assert_exact(path, CONFIGURATION)


STREAM = Stream(
    source="src",
    table="things",
    columns={"id": "LONG", "part": "STRING", "doc": "JSON", "amount": "DECIMAL(12,2)", "at": "UTC_DATETIME"},
    primary_key=("id", "part"),
    cursor=None,
    keep_extra_fields=True,
)
AT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


@pytest.fixture
def sink(tmp_path: Path, arrow: bool) -> Iterator[tuple[DuckDBSink, Path]]:
    path = tmp_path / "unit.duckdb"
    opened = DuckDBSink(path, [STREAM], arrow=arrow)
    try:
        yield opened, path
    finally:
        opened.close()


def _rows(path: Path) -> dict[tuple[int, str], dict[str, Any]]:
    # A second connection to the sink's open database (same process): it sees what the sink committed.
    with duckdb.connect(str(path)) as db:
        relation = db.sql("SELECT *, json_type(doc) AS doc_type FROM src.things")
        columns = [column[0] for column in relation.description]
        found = [dict(zip(columns, values, strict=True)) for values in relation.fetchall()]
    return {(row["id"], row["part"]): row for row in found}


def _row(id_: int, part: str = "a", **fields: Any) -> dict[str, Any]:
    return {"id": id_, "part": part, "doc": None, "amount": None, "at": None, **fields}


def test_the_last_upsert_of_a_key_between_checkpoints_wins(sink: tuple[DuckDBSink, Path]) -> None:
    db, path = sink
    db.upsert("src", "things", _row(1, amount="1.00"))
    db.upsert("src", "things", _row(2, amount="2.00"))
    db.upsert("src", "things", _row(1, amount="3.50"))  # the same key again in the same batch
    db.upsert("src", "things", _row(1, "b", amount="4.00"))  # another key: the second column of the key differs
    db.checkpoint({"n": 1})
    rows = _rows(path)
    assert {key: row["amount"] for key, row in rows.items()} == {
        (1, "a"): Decimal("3.50"),
        (2, "a"): Decimal("2.00"),
        (1, "b"): Decimal("4.00"),
    }
    db.upsert("src", "things", _row(2, amount="5.00"))  # a later batch replaces the stored row
    db.checkpoint({"n": 2})
    assert _rows(path)[(2, "a")]["amount"] == Decimal("5.00")
    assert db.load_state() == {"n": 2}


def test_json_is_stored_as_json_and_extra_fields_as_text(sink: tuple[DuckDBSink, Path]) -> None:
    db, path = sink
    db.upsert("src", "things", _row(1, doc={"b": [1, 2], "a": None}, at=AT, colour="red", count=3))
    db.upsert("src", "things", _row(2, doc=[1, "x"], colour='{"hex": "#f00"}', count=True))
    db.upsert("src", "things", _row(3, doc="plain", count=1.5))
    db.checkpoint({})
    rows = _rows(path)
    assert [(rows[(i, "a")]["doc"], rows[(i, "a")]["doc_type"]) for i in (1, 2, 3)] == [
        ('{"a": null, "b": [1, 2]}', "OBJECT"),  # keys sorted, as the Fivetran path writes JSON
        ('[1, "x"]', "ARRAY"),
        ('"plain"', "VARCHAR"),  # a JSON string value
    ]
    assert rows[(1, "a")]["at"] == AT
    assert [(rows[(i, "a")]["colour"], rows[(i, "a")]["count"]) for i in (1, 2, 3)] == [
        ("red", "3"),
        ('{"hex": "#f00"}', "true"),
        (None, "1.5"),
    ]


def test_deletes_are_soft_and_ordered_with_the_upserts(sink: tuple[DuckDBSink, Path]) -> None:
    db, path = sink
    for i in range(1, 301):
        db.upsert("src", "things", _row(i))
    db.checkpoint({})
    db.delete("src", "things", [{"id": i, "part": "a"} for i in range(1, 201)])  # many keys: one statement
    db.upsert("src", "things", _row(5))  # an upsert after its delete revives the row
    db.upsert("src", "things", _row(250))
    db.delete("src", "things", [{"id": 250, "part": "a"}])  # a delete after the upsert wins
    db.delete("src", "things", [{"id": 999, "part": "a"}])  # a key never upserted: nothing to mark
    db.checkpoint({})
    deleted = {key[0] for key, row in _rows(path).items() if row["_fivetran_deleted"]}
    assert deleted == (set(range(1, 201)) - {5}) | {250}
    assert len(_rows(path)) == 300


def test_the_databases_thread_setting_is_put_back_on_close(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    with duckdb.connect(str(path)) as mine:  # the user's own connection to the same file, in the same process
        mine.execute("SET threads = 3")
        sink = DuckDBSink(path, [STREAM])
        sink.upsert("src", "things", _row(1))
        sink.checkpoint({})
        sink.close()
        assert mine.sql("SELECT current_setting('threads')").fetchone() == (3,)
        assert mine.sql("SELECT count(*) FROM src.things").fetchone() == (1,)


def test_without_pyarrow_the_sink_takes_the_ndjson_path(tmp_path: Path) -> None:
    # A fresh interpreter where pyarrow cannot be found: the sink works and says which path it took.
    script = (
        f"import sys; sys.path.insert(0, {str(REPO / 'src')!r}); import importlib.util as u; real = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'pyarrow' else real(name, *a)\n"
        "from syncflow._duckdb import DuckDBSink\n"
        "from syncflow._streams import Stream\n"
        "s = Stream('src', 't', {'id': 'LONG'}, ('id',), None)\n"
        f"k = DuckDBSink({str(tmp_path / 'n.duckdb')!r}, [s]); k.upsert('src', 't', {{'id': 7}}); k.checkpoint({{}})\n"
        "print(k._arrow, 'pyarrow' in sys.modules); k.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "False"]
    with duckdb.connect(str(tmp_path / "n.duckdb"), read_only=True) as db:
        assert db.sql("SELECT id FROM src.t").fetchall() == [(7,)]
    assert os.path.exists(tmp_path / "n.duckdb")


_FRESH_PREAMBLE = (
    "import sys, threading; sys.path.insert(0, {src!r})\n"
    "from syncflow._duckdb import DuckDBSink\n"
    "from syncflow._streams import Stream\n"
    "assert 'pyarrow' not in sys.modules\n"
    "def running(): return [t for t in threading.enumerate() if t.name == 'syncflow-pyarrow-import']\n"
)


def _in_fresh_interpreter(body: str) -> list[str]:
    """What `body` prints, run in a new interpreter (pyarrow not imported yet) after `_FRESH_PREAMBLE`."""
    script = _FRESH_PREAMBLE.format(src=str(REPO / "src")) + body
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_pyarrow_is_imported_on_a_thread_of_its_own_once_asked_and_joined_before_use(tmp_path: Path) -> None:
    # Opening the sink imports nothing (the import would slow its table set-up and the sync's start);
    # `prepare_writes` starts importing it (and the modules DuckDB's Arrow scan and the decimals need) on one thread
    # however often it is called; the first write uses it once that thread is done, and no thread is left behind
    # when the sink closes. Without `prepare_writes`, the first write imports it itself.
    pytest.importorskip("pyarrow")
    for name, ask in (("a", "k.prepare_writes(); first = k._arrow_imports; k.prepare_writes()"), ("b", "first = None")):
        printed = _in_fresh_interpreter(
            "s = Stream('src', 't', {'id': 'LONG', 'amount': 'DECIMAL(28,6)'}, ('id',), None)\n"
            f"k = DuckDBSink({str(tmp_path / f'{name}.duckdb')!r}, [s])\n"
            "at_open = len(running())\n"
            f"{ask}\n"
            "started = int(first is not None and k._arrow_imports is first)\n"
            "k.upsert('src', 't', {'id': 7, 'amount': '1.50'}); k.checkpoint({})\n"
            "k.close()\n"
            "imported = all(m in sys.modules for m in ('pyarrow.compute', 'pyarrow.dataset'))\n"
            "print(at_open, started, len(running()), imported)\n"
        )
        assert printed == ["0", "1" if name == "a" else "0", "0", "True"]
        with duckdb.connect(str(tmp_path / f"{name}.duckdb"), read_only=True) as db:
            assert db.sql("SELECT id, amount FROM src.t").fetchall() == [(7, Decimal("1.5"))]


def test_a_sink_closed_before_any_write_joins_its_import_and_starts_none_after(tmp_path: Path) -> None:
    # A sink closed unused (a sync that failed at once) starts no import when asked afterwards; one closed after
    # prepare_writes with nothing written (the failed-sync path) joins its import thread.
    pytest.importorskip("pyarrow")
    printed = _in_fresh_interpreter(
        "s = Stream('src', 't', {'id': 'LONG'}, ('id',), None)\n"
        f"unused = DuckDBSink({str(tmp_path / 'u.duckdb')!r}, [s]); unused.close(); unused.prepare_writes()\n"
        "after_close = len(running()) + ('pyarrow' in sys.modules)\n"
        f"k = DuckDBSink({str(tmp_path / 'c.duckdb')!r}, [s])\n"
        "k.prepare_writes(); started = k._arrow_imports is not None\n"
        "k.close()\n"
        "print(after_close, started, len(running()))\n"
    )
    assert printed == ["0", "True", "0"]


class _FailingCommit:
    """The sink's connection, except that the next COMMIT fails (a full disk, say) after DuckDB rolled back."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self.fail = True

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.fail:
            self.fail = False
            self._connection.execute("ROLLBACK")
            raise duckdb.IOException("IO Error: no space left on device")
        return self._connection.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def test_the_rows_of_a_failed_checkpoint_are_written_by_the_next(sink: tuple[DuckDBSink, Path]) -> None:
    db, path = sink
    db._connection = _FailingCommit(db._connection)  # type: ignore[assignment]
    many = 2500
    for i in range(many):
        db.upsert("src", "things", _row(i, amount=f"{i}.25"))
    db.upsert("src", "things", _row(many, colour="blue"))  # a field beyond the declared ones: a new column
    with pytest.raises(duckdb.IOException):
        db.checkpoint({"n": 1})
    with duckdb.connect(str(path)) as other:  # nothing of the failed checkpoint is kept, not even the new column
        assert other.sql("SELECT count(*) FROM src.things").fetchone() == (0,)
        assert "colour" not in [row[0] for row in other.sql("DESCRIBE src.things").fetchall()]
    assert db.load_state() is None
    db.upsert("src", "things", _row(many + 1))
    db.checkpoint({"n": 2})
    rows = _rows(path)
    assert sorted(key[0] for key in rows) == list(range(many + 2))
    assert rows[(7, "a")]["amount"] == Decimal("7.25") and rows[(many, "a")]["colour"] == "blue"
    assert db.load_state() == {"n": 2}


def test_a_row_that_cannot_be_stored_fails_the_checkpoint_and_commits_nothing(sink: tuple[DuckDBSink, Path]) -> None:
    db, path = sink
    db.upsert("src", "things", _row(1, amount="1.00"))
    db.checkpoint({"n": 1})
    for i in range(2, 1500):
        db.upsert("src", "things", _row(i))
    db.upsert("src", "things", _row(9999, amount="not a number"))  # a plug-in's row its converter did not check
    with pytest.raises(duckdb.Error, match="not a number"):
        db.checkpoint({"n": 2})
    assert set(_rows(path)) == {(1, "a")} and db.load_state() == {"n": 1}  # the last checkpoint holds


def test_decimal_text_is_stored_as_duckdbs_own_cast_would_store_it(sink: tuple[DuckDBSink, Path]) -> None:
    # The Arrow path hands DECIMAL text over as Arrow decimals where Arrow converts it exactly, and as text otherwise
    # (DuckDB then casts it, rounding where it must): either way the stored number is what DuckDB's CAST makes of it.
    db, path = sink
    plain = ["19616.47", "-0.50", "0", "-0", "0000012.5", "9999999999.99", None]
    for i, amount in enumerate(plain):
        db.upsert("src", "things", _row(i, amount=amount))
    db.checkpoint({"n": 1})
    odd = ["1.125", "-2.345", "1e2", " 7.5", "+3"]  # rounded, an exponent, spaces, a sign: DuckDB's reading
    for i, amount in enumerate(odd, start=100):
        db.upsert("src", "things", _row(i, amount=amount))
    db.checkpoint({"n": 2})
    stored = {key[0]: row["amount"] for key, row in _rows(path).items()}
    with duckdb.connect() as plain_duckdb:
        expected = {
            i: plain_duckdb.execute("SELECT CAST(? AS DECIMAL(12,2))", [amount]).fetchone()[0]  # type: ignore[index]
            for i, amount in [*enumerate(plain), *enumerate(odd, start=100)]
        }
    assert stored == expected
    assert stored[100] == Decimal("1.13") and stored[101] == Decimal("-2.35") and stored[5] == Decimal("9999999999.99")


def test_a_decimal_too_wide_for_its_column_still_fails_the_checkpoint(sink: tuple[DuckDBSink, Path]) -> None:
    db, path = sink
    db.upsert("src", "things", _row(1, amount="12345678901.5"))  # 11 digits before the point; the column holds 10
    with pytest.raises(duckdb.Error):
        db.checkpoint({"n": 1})
    assert db.load_state() is None and not _rows(path)


def test_arrow_takes_plain_decimal_text_and_leaves_the_rest_to_duckdb() -> None:
    pyarrow = pytest.importorskip("pyarrow")
    from syncflow._duckdb import _arrow_array

    fast = _arrow_array(pyarrow, ["19616.47", "-0.50", None], "DECIMAL(28,6)")
    assert fast.type == pyarrow.decimal128(28, 6) and fast.to_pylist() == [Decimal("19616.47"), Decimal("-0.5"), None]
    for odd in (["1.1234567"], ["1e2"], ["12345678901234567890123"]):  # rounded, an exponent, too wide
        assert _arrow_array(pyarrow, odd, "DECIMAL(28,6)").type == pyarrow.string()
