"""Which value form the Connector SDK's write path encodes cheapest, per declared column type.

    python -m benchmarks.value_forms                 # ~1 min on a quiet core
    python -m benchmarks.value_forms --rows 500 --repeats 5

Everything goes through `op.upsert` inside the SDK's own runner (`core_adapter.run`, as `fivetran debug` calls it
after its requirements lint; see `_sdk.py`). One `update()` holds every measurement, so all forms are timed side by
side in one process: each round times every (type, form) block once, in a shuffled order, and the figure is the
median over rounds (this machine is shared and noisy; medians of interleaved rounds are what survives that).

What is timed is `op.upsert` only: encoding (`encode_row_data`), building the record, and the runner's
`_Sync.record` (column renaming, decoding the cells, pending map). A checkpoint after each block, outside the timer,
keeps the pending map bounded; its DuckDB flush does not depend on the value form (the cells are identical bytes
whichever form produced them — checked below: every accepted form of a type must encode to the same cells).

Each table has a LONG key and COLUMNS columns of the type under test, so the per-column cost of a form is
(µs/row of the form - µs/row of the all-null row) / COLUMNS.

The renaming figures toggle `Renaming.apply` of the running sink between blocks: the column names here are already
snake_case, so both settings write the same names and only the cost differs. That is what `fivetran debug
--naming SOURCE_NAMING`-style source naming would save; a connector cannot choose it (it is the user's, fixed by the
first run), which is why it is reported as the SDK's cost, not as a lever.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["FORMS", "main"]

COLUMNS = 8
CHUNK = 20  # rows timed at a time before moving to the next block
BASE_SECONDS = 1_600_000_000

Make = Callable[[int, int], Any]  # (row index, column index) -> value


def _seconds(i: int, j: int) -> int:
    return BASE_SECONDS + i * 37 + j * 86_400


def _money(i: int, j: int) -> Decimal:
    return Decimal(i * 101 + j * 7) / 100


# type -> form name -> value maker. Forms the SDK rejects are kept: the run reports the exception instead of a time.
FORMS: dict[str, dict[str, Make]] = {
    "LONG": {
        "int": lambda i, j: i * 1000 + j,
        "str": lambda i, j: str(i * 1000 + j),
        "float(integral)": lambda i, j: float(i * 1000 + j),
    },
    "DOUBLE": {
        "float": lambda i, j: (i * 1000 + j) / 8,
        "str": lambda i, j: str((i * 1000 + j) / 8),
        "int (other values)": lambda i, j: i * 1000 + j,
    },
    "DECIMAL": {
        "str": lambda i, j: str(_money(i, j)),
        "int (other values)": lambda i, j: i * 1000 + j,
        "Decimal": _money,
        "float": lambda i, j: float(_money(i, j)),
    },
    "UTC_DATETIME": {
        "datetime(utc)": lambda i, j: datetime.fromtimestamp(_seconds(i, j), tz=timezone.utc),
        "iso str +00:00": lambda i, j: datetime.fromtimestamp(_seconds(i, j), tz=timezone.utc).isoformat(),
        "iso str Z": lambda i, j: datetime.fromtimestamp(_seconds(i, j), tz=timezone.utc)
        .isoformat()
        .replace("+00:00", "Z"),
        "epoch int": _seconds,
        "epoch str": lambda i, j: str(_seconds(i, j)),
    },
    "BOOLEAN": {
        "bool": lambda i, j: (i + j) % 2 == 0,
        "str 0/1": lambda i, j: "1" if (i + j) % 2 == 0 else "0",
        "int 0/1": lambda i, j: int((i + j) % 2 == 0),
    },
    "STRING": {
        "str": lambda i, j: str(i * 1000 + j),
        "int": lambda i, j: i * 1000 + j,
        "longer str (other values)": lambda i, j: f"value {i} {j} lorem ipsum",
    },
}


def _type_entry(kind: str) -> Any:
    return {"type": "DECIMAL", "precision": 18, "scale": 2} if kind == "DECIMAL" else kind


def _table(kind: str) -> str:
    return "t_" + kind.lower()


def _schema(configuration: Mapping[str, Any]) -> list[dict[str, Any]]:
    tables = [
        {
            "table": _table(kind),
            "primary_key": ["id"],
            "columns": {"id": "LONG", **{f"c{j}": _type_entry(kind) for j in range(COLUMNS)}},
        }
        for kind in FORMS
    ]
    # A realistic Accelo-shaped table for the renaming and dict-shape figures: jobs as syncflow declares them.
    tables.append({"table": "jobs", "primary_key": ["id"], "columns": dict(_JOBS_COLUMNS)})
    return tables


_JOBS_COLUMNS: Mapping[str, str] = {
    "id": "INT", "title": "STRING", "status": "INT", "standing": "STRING", "date_created": "UTC_DATETIME",
    "date_started": "UTC_DATETIME", "date_due": "UTC_DATETIME", "date_completed": "UTC_DATETIME",
    "date_modified": "UTC_DATETIME", "manager": "INT", "company": "INT", "contact": "INT", "description": "STRING",
    "value": "FLOAT",
}  # fmt: skip


def _jobs_row(i: int) -> dict[str, Any]:
    """A typed jobs row as syncflow's RowConverter makes it: ~1/3 of the optional dates null, as the sim has them."""
    when = datetime.fromtimestamp(BASE_SECONDS + i * 37, tz=timezone.utc)
    return {
        "id": i, "title": f"Job {i}", "status": 3, "standing": "active", "date_created": when,
        "date_started": when if i % 3 else None, "date_due": when if i % 2 else None,
        "date_completed": None, "date_modified": when, "manager": 12, "company": 1000 + i % 50,
        "contact": None if i % 4 == 0 else 77, "description": "" if i % 5 else "Some words about the job",
        "value": i * 1.25,
    }  # fmt: skip


def _jobs_variants(rows: int) -> dict[str, list[dict[str, Any]]]:
    full = [_jobs_row(i) for i in range(rows)]
    return {
        "jobs: every column (today)": full,
        "jobs: None-valued keys left out": [{k: v for k, v in r.items() if v is not None} for r in full],
    }


class _Result:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.rejected: dict[str, str] = {}
        self.cells: dict[str, dict[str, bytes]] = {}
        self.stages: dict[str, list[float]] = {}


def _bench_update(rows: int, repeats: int, seed: int, result: _Result) -> Callable[[Mapping[str, Any], Any], None]:
    from fivetran_connector_sdk import Operations as op
    from fivetran_connector_sdk_cli import runtime
    from fivetran_connector_sdk_cli.operations import _get_columns
    from fivetran_connector_sdk_cli.records import RecordType, make_record
    from fivetran_connector_sdk_cli.type_coercion import encode_row_data

    def update(configuration: Mapping[str, Any], state: Any) -> None:
        blocks: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        for kind, forms in FORMS.items():
            table = _table(kind)
            blocks[f"{kind}: all null"] = (table, [{"id": i, **dict.fromkeys(f"c{j}" for j in range(COLUMNS))}
                                                   for i in range(rows)])  # fmt: skip
            for form, make in forms.items():
                data = [{"id": i, **{f"c{j}": make(i, j) for j in range(COLUMNS)}} for i in range(rows)]
                name = f"{kind}: {form}"
                try:
                    op.upsert(table, data[0], schema=None)
                except Exception as exc:
                    result.rejected[name] = f"{type(exc).__name__}: {exc}"
                    continue
                result.cells[name] = encode_row_data(_get_columns(None, table), data[1])
                blocks[name] = (table, data)
        for name, data in _jobs_variants(rows).items():
            blocks[name] = ("jobs", data)
        op.checkpoint({})
        sink = runtime.current()
        renaming = sink.renaming
        plan = [(name, apply) for name in blocks for apply in (True, False) if name.startswith("jobs")]
        plan += [(name, True) for name in blocks if not name.startswith("jobs")]
        rng = random.Random(seed)
        upsert = op.upsert
        for _ in range(repeats):
            # Every block advances CHUNK rows at a time, in a shuffled order, so that all forms share the same
            # moments of this shared machine; a round's figure per block is the sum over its chunks.
            rng.shuffle(plan)
            spent = dict.fromkeys(plan, 0.0)
            for start in range(0, rows, CHUNK):
                for name, apply in plan:
                    table, data = blocks[name]
                    chunk = data[start : start + CHUNK]
                    renaming.apply = apply
                    started = time.thread_time()  # CPU of this thread: the SDK's record path runs in the caller
                    for row in chunk:
                        upsert(table, row, schema=None)
                    spent[(name, apply)] += time.thread_time() - started
                    renaming.apply = True
            op.checkpoint({})  # flushes (same keys every round, so at most `rows` rows a table); outside the timer
            for (name, apply), seconds in spent.items():
                key = name if apply else name + " [source naming]"
                result.samples.setdefault(key, []).append(seconds / rows * 1e6)
        _stages(sink, rows, repeats, result)

    def _stages(sink: Any, rows: int, repeats: int, result: _Result) -> None:
        """op.upsert of today's jobs row, split into its three steps (each timed on inputs prepared before)."""
        columns = _get_columns(None, "jobs")
        data = _jobs_variants(rows)["jobs: every column (today)"]
        encoded = [encode_row_data(columns, row) for row in data]
        records = [make_record("jobs", RecordType.UPSERT, cells, None) for cells in encoded]
        steps: dict[str, Callable[[int], object]] = {
            "1 encode_row_data (type coercion)": lambda i: encode_row_data(columns, data[i]),
            "2 make_record (wire checks)": lambda i: make_record("jobs", RecordType.UPSERT, encoded[i], None),
            "3 sink.record (rename, decode, pending)": lambda i: sink.record(records[i]),
        }
        for _ in range(repeats):
            spent = dict.fromkeys(steps, 0.0)
            for start in range(0, rows, CHUNK):
                for name, step in steps.items():
                    started = time.thread_time()
                    for i in range(start, min(rows, start + CHUNK)):
                        step(i)
                    spent[name] += time.thread_time() - started
            op.checkpoint({})
            for name, seconds in spent.items():
                result.stages.setdefault(name, []).append(seconds / rows * 1e6)

    return update


def _report(result: _Result, rows: int, repeats: int) -> str:
    med = {name: statistics.median(v) for name, v in result.samples.items()}
    lines = [
        f"value forms through op.upsert in the SDK runner: {rows} rows per block, {repeats} interleaved rounds, "
        f"{COLUMNS} columns of the type per row plus a LONG key; median CPU µs/row of the calling thread (min-max)",
        "",
        "| type | form | µs/row | x best form (median of per-round ratios) | µs per column over all-null "
        "| cells equal best form's |",
        "|---|---|---:|---:|---:|---|",
    ]
    for kind, forms in FORMS.items():
        null = med.get(f"{kind}: all null", 0.0)
        accepted = [f for f in forms if f"{kind}: {f}" in med and "other values" not in f]
        best = min(accepted, key=lambda f: med[f"{kind}: {f}"]) if accepted else None
        for form in forms:
            name = f"{kind}: {form}"
            if name in result.rejected:
                lines.append(f"| {kind} | {form} | rejected: {result.rejected[name][:70]} | | | |")
                continue
            assert best is not None
            v = med[name]
            same = result.cells[name] == result.cells[f"{kind}: {best}"]
            shown = "n/a" if "other values" in form or "other values" in best else ("yes" if same else "NO")
            lo, hi = min(result.samples[name]), max(result.samples[name])
            pairs = zip(result.samples[name], result.samples[f"{kind}: {best}"], strict=True)
            ratio = statistics.median(a / b for a, b in pairs)
            lines.append(
                f"| {kind} | {form} | {v:.1f} ({lo:.1f}-{hi:.1f}) | {ratio:.2f} | "
                f"{(v - null) / COLUMNS:.2f} | {shown} |"
            )
        lines.append(f"| {kind} | (all null) | {null:.1f} | | 0 | |")
    lines += ["", "| jobs row (14 columns, syncflow's typed row) | Fivetran naming CPU µs/row | x today | "
              "source naming CPU µs/row | renaming share |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    today = result.samples["jobs: every column (today)"]
    for name in ("jobs: every column (today)", "jobs: None-valued keys left out"):
        on, off = result.samples[name], result.samples[name + " [source naming]"]
        share = statistics.median(1 - b / a for a, b in zip(on, off, strict=True))
        vs = statistics.median(a / b for a, b in zip(on, today, strict=True))
        lines.append(f"| {name.split(': ', 1)[1]} | {statistics.median(on):.1f} | {vs:.2f} | "
                     f"{statistics.median(off):.1f} | {share:.0%} |")  # fmt: skip
    total = sum(statistics.median(v) for v in result.stages.values())
    lines += ["", "| op.upsert of today's jobs row, by step | CPU µs/row | share |", "|---|---:|---:|"]
    for name, values in result.stages.items():
        lines.append(f"| {name} | {statistics.median(values):.1f} | {statistics.median(values) / total:.0%} |")
    return "\n".join(lines)


def _renaming_micro() -> str:
    """The per-call cost of `Renaming.column` on an already-safe name (called twice per column per row)."""
    import timeit

    from fivetran_connector_sdk_core.renaming import Renaming

    renaming = Renaming(True)
    names = list(_JOBS_COLUMNS)
    n = 2000
    timer = timeit.Timer(lambda: [renaming.column(c) for c in names], timer=time.thread_time)
    per = min(timer.repeat(number=n, repeat=5)) / n / len(names)
    return f"Renaming.column on an already snake_case name: {per * 1e6:.2f} µs per call (best of 5 x {n})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.value_forms", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400, help="rows per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (the median is reported)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    from ._sdk import run_in_sdk_runner

    result = _Result()
    with tempfile.TemporaryDirectory(prefix="value_forms-") as tmp:
        run_in_sdk_runner(_bench_update(args.rows, args.repeats, args.seed, result), _schema, Path(tmp), {})
    print(_report(result, args.rows, args.repeats))
    print()
    print(_renaming_micro())
    return 0


if __name__ == "__main__":
    sys.exit(main())
