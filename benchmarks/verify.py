"""Does a system's output equal the simulator's ground truth? Primary keys per table, and the cursor column's values.

The SDK runner writes `tester_<schema>.<table>` with Fivetran naming (employeeId -> employee_id); dlt writes
`bench.<table>` with its own snake_case naming. Both are read back with DuckDB, read-only, after the writer exited.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from syncflow._time import parse_iso8601
from syncflow.sources._accelo_catalog import RESOURCES, STREAM_NAMES
from syncflow.sources.awardco import USER

# The benchmarks compare systems on the six tables every peer implements (not the whole catalogue).
ACCELO_STREAMS = {name: RESOURCES[name] for name in STREAM_NAMES}

__all__ = ["Verdict", "truth_query", "verify"]


@dataclass
class Verdict:
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _epoch(value: Any) -> int | None:
    """A ground-truth or warehouse timestamp as whole epoch seconds (Accelo: "1724523681"; AwardCo: ISO-8601)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return int(value.timestamp())
    text = str(value)
    if text.lstrip("-").isdigit():
        seconds = int(text)
        return seconds if seconds > 0 else None  # syncflow stores Accelo's 0 ("never") as null
    return int(parse_iso8601(text).timestamp())  # an offset-less value is UTC, as syncflow writes it


def _tables() -> list[tuple[str, str, str, str | None]]:
    """(source, table, primary key, cursor column or None) for all seven tables."""
    out: list[tuple[str, str, str, str | None]] = [
        ("accelo", name, stream.primary_key[0], stream.cursor) for name, stream in ACCELO_STREAMS.items()
    ]
    out.append(("awardco", USER.table, USER.primary_key[0], USER.cursor))
    return out


def truth_query(sources: str = "accelo,awardco") -> tuple[list[str], list[str]]:
    """The tables and fields of `/_sim/ground_truth` that `verify` reads: keys and cursors of the compared tables."""
    chosen = [t for t in _tables() if t[0] in sources.split(",")]
    fields = sorted({key for *_, key, _ in chosen} | {cursor for *_, cursor in chosen if cursor})
    return [f"{source}.{table}" for source, table, *_ in chosen], fields


def verify(
    database: Path,
    layout: str,
    ground_truth: Mapping[str, Mapping[str, list[dict[str, Any]]]],
    *,
    check_cursor: bool,
) -> Verdict:
    verdict = Verdict()
    if not database.exists():
        verdict.problems.append(f"{database} was not written")
        return verdict
    with duckdb.connect(str(database), read_only=True) as con:
        for source, table, key, cursor in _tables():
            if source not in ground_truth:
                continue  # a scenario that syncs one API only (the rate-limited one)
            # sdk: the SDK runner's tester_<schema>; duckdb: syncflow.to_duckdb's own <source>.<table>; dlt: bench.
            relation = {"sdk": f"tester_{source}.{table}", "duckdb": f"{source}.{table}"}.get(layout, f"bench.{table}")
            pk_col = _snake(key)
            columns = [pk_col] + ([_snake(cursor)] if check_cursor and cursor else [])
            try:
                found = con.execute(f"SELECT {', '.join(columns)} FROM {relation}").fetchall()
            except duckdb.Error as exc:
                verdict.problems.append(f"{source}.{table}: cannot read {relation}: {exc}".splitlines()[0])
                continue
            verdict.rows += len(found)
            truth = ground_truth[source][table]
            expected_keys = {str(r[key]) for r in truth}
            got_keys = [str(r[0]) for r in found]
            if len(got_keys) != len(set(got_keys)):
                verdict.problems.append(f"{source}.{table}: {len(got_keys) - len(set(got_keys))} duplicate keys")
            if set(got_keys) != expected_keys:
                missing = len(expected_keys - set(got_keys))
                extra = len(set(got_keys) - expected_keys)
                verdict.problems.append(f"{source}.{table}: {missing} keys missing, {extra} unexpected")
            if len(columns) == 2 and cursor is not None:
                expected = {str(r[key]): _epoch(r[cursor]) for r in truth}
                wrong = sum(1 for k, c in found if str(k) in expected and _epoch(c) != expected[str(k)])
                if wrong:
                    verdict.problems.append(f"{source}.{table}: {wrong} rows with a wrong {cursor}")
    return verdict
