"""Big ids and exact money: LONG ids past 2^31, DECIMAL money, and a value that fits no declared type is null.

The end-to-end test drives the Fivetran SDK's own local runner (its `op.upsert` type checks and the DuckDB warehouse
it writes), so what is asserted is what a destination really receives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from support.loopback import serve_on_loopback
from syncflow import Stream
from syncflow.sim import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET, SimConfig, Simulator
from syncflow.sources import ACCELO_STREAMS

BIG = 2**31  # one past Fivetran's INT: the SDK raised "Value out of range" for it when ids were INT
MONEY = "24950.99"  # Fivetran's 32-bit FLOAT reads it back as 24950.990234375


def test_ids_counts_and_links_are_long_and_money_is_decimal() -> None:
    jobs = ACCELO_STREAMS["jobs"].columns
    assert jobs["id"] == "LONG" and jobs["manager"] == "LONG" and jobs["paused"] == "LONG"
    assert ACCELO_STREAMS["invoices"].columns["amount"] == "DECIMAL(28,6)"
    assert ACCELO_STREAMS["prospects"].columns["progress"] == "DECIMAL(28,6)"
    assert ACCELO_STREAMS["jobs"].columns["rate_charged"] == "DECIMAL(28,6)"
    entry = ACCELO_STREAMS["invoices"].schema_entry()
    assert entry["columns"]["amount"] == {"type": "DECIMAL", "precision": 28, "scale": 6}
    assert entry["columns"]["id"] == "LONG"
    every_type = {kind for stream in ACCELO_STREAMS.values() for kind in stream.columns.values()}
    assert "INT" not in every_type and "FLOAT" not in every_type


def test_values_that_do_not_fit_become_null_and_are_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    stream = Stream("s", "t", {"id": "LONG", "n": "INT", "money": "DECIMAL(6,2)"}, ("id",), None)
    converter = stream.converter()
    with caplog.at_level(logging.WARNING, logger="syncflow"):
        rows = [
            converter.convert({"id": str(BIG), "n": "2147483647", "money": "1234.50"}),
            converter.convert({"id": str(2**63 - 1), "n": str(BIG), "money": "12345.67"}),  # 5 digits before .
            converter.convert({"id": "7", "n": "-2147483649", "money": "0.125"}),  # 3 after the point
            converter.convert({"id": str(2**63), "money": "1e2"}),  # past LONG: no usable key
        ]
    assert rows[0] == {"id": BIG, "n": 2**31 - 1, "money": "1234.50"}
    assert rows[1] == {"id": 2**63 - 1, "n": None, "money": None}
    assert rows[2] == {"id": 7, "n": None, "money": None}
    assert rows[3] is None
    assert converter.failures == {"n": 2, "money": 2, "id": 1}
    assert converter.missing_key == 1
    warned = [r.getMessage() for r in caplog.records if "stored as null" in r.getMessage()]
    assert len(warned) == 3  # once per column
    assert converter.convert({"id": "1", "money": "-9999.99"}) == {"id": 1, "n": None, "money": "-9999.99"}
    assert converter.convert({"id": "1", "money": "100.000"}) == {"id": 1, "n": None, "money": "100"}  # 0s drop
    assert converter.convert({"id": "1", "money": " 7.5 "}) == {"id": 1, "n": None, "money": "7.5"}
    assert converter.convert({"id": "1", "money": 12.25}) == {"id": 1, "n": None, "money": "12.25"}


@pytest.fixture
def big_id_sim() -> Iterator[tuple[str, Simulator]]:
    sim = Simulator(
        SimConfig(
            accelo_id_base=BIG - 1,
            accelo_counts={"companies": 8, "invoices": 12, "payments": 4, "prospects": 4, "jobs": 6, "staff": 3},
            awardco_users=3,
        )
    )
    invoices, jobs = sim._tables["invoices"], sim._tables["jobs"]
    invoices.records[0]["amount"] = MONEY
    invoices.json.changed(0)
    jobs.records[1]["manager"] = str(2**63)  # a link past LONG: null and reported, never a failed sync
    jobs.json.changed(1)
    with serve_on_loopback(sim) as url:
        yield url, sim


def test_big_ids_and_exact_money_arrive_in_the_sdk_warehouse(
    big_id_sim: tuple[str, Simulator], tmp_path: Path, capfd: Any
) -> None:
    from fivetran_connector_sdk import Connector, Logging
    from fivetran_connector_sdk_cli import core_adapter

    from syncflow.fivetran import schema, update

    url, sim = big_id_sim
    configuration = {
        "accelo_deployment": "acme",
        "accelo_client_id": ACCELO_CLIENT_ID,
        "accelo_client_secret": ACCELO_CLIENT_SECRET,
        "accelo_base_url": url,
        "sources": "accelo",
        "max_retry_seconds": "10",
    }
    Logging.LOG_LEVEL = Logging.Level.INFO
    connector = Connector(update=update, schema=schema)
    connector.project_path = str(tmp_path)
    connector.configuration = configuration
    core_adapter.run(connector, str(tmp_path), configuration, {})  # raises if the sync fails
    output = capfd.readouterr()
    truth = sim.ground_truth()["accelo"]
    # The SDK's local warehouse prefixes each schema with "tester_".
    with duckdb.connect(str(tmp_path / "files" / "warehouse.db"), read_only=True) as db:
        invoice_ids = [row[0] for row in db.sql("select id from tester_accelo.invoices order by id").fetchall()]
        amount = db.sql(
            f"select amount from tester_accelo.invoices where id = {int(truth['invoices'][0]['id'])}"
        ).fetchone()
        staff_ids = [row[0] for row in db.sql("select id from tester_accelo.staff order by id").fetchall()]
        managers = dict(db.sql("select id, manager from tester_accelo.jobs").fetchall())
    assert invoice_ids == [int(r["id"]) for r in truth["invoices"]]
    assert BIG in invoice_ids and BIG in staff_ids
    assert amount is not None and amount[0] == Decimal(MONEY)
    assert managers[int(truth["jobs"][1]["id"])] is None
    assert managers[int(truth["jobs"][0]["id"])] == int(truth["jobs"][0]["manager"])
    logged = output.out + output.err
    assert logged.count("accelo.jobs.manager: value") == 1, "reported once for the column"


def test_to_duckdb_into_a_file_of_the_earlier_schema_adds_the_new_columns_typed(tmp_path: Path) -> None:
    import syncflow

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as db:  # the earlier jobs table: INT-era columns, money as DOUBLE
        db.execute("create schema accelo")
        db.execute("create table accelo.jobs (id BIGINT primary key, title VARCHAR, value DOUBLE, description VARCHAR)")
    syncflow.to_duckdb({"use_mock": "true"}, path, streams=["accelo.jobs"], progress=False)
    with duckdb.connect(str(path), read_only=True) as db:
        kinds = dict(
            db.sql(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = 'accelo' and table_name = 'jobs'"
            ).fetchall()
        )
        charged = db.sql("select count(*) from accelo.jobs where rate_charged is not null").fetchone()
    assert kinds["rate_charged"] == "DECIMAL(28,6)" and kinds["date_commenced"] == "TIMESTAMP WITH TIME ZONE"
    assert kinds["job_type"] == "BIGINT" and kinds["value"] == "DOUBLE"  # the removed column stays, unfilled
    assert charged is not None and charged[0] > 0
