"""One naming scheme: `to_duckdb` names tables and columns as Fivetran does (the SDK's renaming rule)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

import syncflow
from syncflow._naming import destination_column, destination_table
from syncflow.sources import ACCELO_STREAMS, AWARDCO_STREAMS

renaming = pytest.importorskip("fivetran_connector_sdk_core.renaming")

NAMES = st.text(alphabet=st.sampled_from("aZbY09_-. $éÅ日ß"), max_size=12) | st.text(max_size=8)


@given(NAMES)
def test_column_and_table_names_follow_the_sdks_rule(name: str) -> None:
    assert destination_column(name) == renaming.redshift_safe(name)
    assert destination_table(name) == renaming.safe_drop_underscores(name)


def test_the_declared_columns_rename_as_fivetran_renames_them() -> None:
    assert destination_column("employeeId") == "employee_id"
    assert destination_column("firstName") == "first_name"
    assert destination_column("currencyCode") == "currency_code"
    for stream in [*ACCELO_STREAMS.values(), *AWARDCO_STREAMS.values()]:
        for name in stream.columns:
            assert destination_column(name) == renaming.redshift_safe(name)


def test_to_duckdb_writes_fivetrans_names(tmp_path: Path) -> None:
    path = tmp_path / "out.duckdb"
    syncflow.to_duckdb({"use_mock": "true"}, path, streams=["awardco.user", "accelo.staff"], progress=False)
    with duckdb.connect(str(path), read_only=True) as db:
        columns = {row[0] for row in db.sql("describe awardco.user").fetchall()}
        keys = db.sql("select count(*), count(distinct employee_id) from awardco.user").fetchone()
    assert {"employee_id", "first_name", "last_name", "currency_code", "updated_at"} <= columns
    assert not {"employeeId", "firstName"} & columns
    assert keys is not None and keys[0] == keys[1] > 0


def test_a_file_written_with_the_apis_names_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as db:
        db.execute('create schema awardco; create table awardco.user ("employeeId" varchar primary key)')
    with pytest.raises(syncflow.ConfigurationError, match=r"columns under the API's names \(employeeId\)"):
        syncflow.to_duckdb({"use_mock": "true"}, path, streams=["awardco.user"], progress=False)
    with duckdb.connect(str(path), read_only=True) as db:  # the refused file is left as it was
        assert [row[0] for row in db.sql("describe awardco.user").fetchall()] == ["employeeId"]
        assert db.sql("select count(*) from duckdb_schemas() where schema_name = '_syncflow'").fetchone() == (0,)
