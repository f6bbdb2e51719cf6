"""Request cost of reconciliation sweeps and of AwardCo's churn-safe paging, and the state size of known keys.

    .venv/bin/python -m benchmarks.reconcile

Prints a Markdown section (pasted into BENCHMARKS.md). Everything runs in-process against `syncflow.sim`; request
counts are deterministic up to the order concurrent requests reach the simulator.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from syncflow import Settings
from syncflow._keyset import KeySet
from syncflow._state import StateDocument
from syncflow._sync import run_sync
from syncflow.sim import Mutation, SimConfig, Simulator
from syncflow.sim._data import _ids

from ._sim import in_process_configuration

COUNTS = {"companies": 3000, "invoices": 4000, "payments": 3000, "prospects": 2000, "jobs": 2500, "staff": 40}
USERS = 2500
CLASSIC = ",".join((*(f"accelo.{name}" for name in COUNTS), "awardco.user"))


class _Sink:
    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        pass

    def delete(self, schema: str, table: str, keys: Sequence[Mapping[str, Any]]) -> None:
        pass

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        self.size = len(json.dumps(state))


def _sync(sim: Simulator, state: StateDocument, **overrides: str) -> tuple[dict[str, int], int]:
    sim.reset_stats()
    sink = _Sink()
    # The six classic Accelo tables (COUNTS) and AwardCo, as this benchmark was sized for.
    sources = overrides.get("sources", "accelo,awardco").split(",")
    streams = ",".join(name for name in CLASSIC.split(",") if name.split(".")[0] in sources)
    configuration = in_process_configuration(**{"streams": streams, "max_concurrency": "8", **overrides})
    run_sync(Settings.from_mapping(configuration), sink, state, transport=sim.transport())
    by = sim.stats().by_endpoint
    accelo = sum(v for k, v in by.items() if k.startswith("GET /api/v0/"))
    return {"accelo": accelo, "awardco": by.get("GET /api/users", 0)}, sink.size


def sweep_cost(include_total: bool) -> list[str]:
    sim = Simulator(SimConfig(accelo_counts=COUNTS, awardco_users=USERS, awardco_include_total=include_total))
    state = StateDocument()
    first, _ = _sync(sim, state)
    sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="companies", modify=20))
    sim.apply_mutation(Mutation(after_requests=1, source="awardco", entity="user", modify=20))
    incremental, _ = _sync(sim, state)
    swept, size = _sync(sim, state, reconcile_every_hours="0")
    label = "with `total`" if include_total else "without `total`"
    return [
        f"| first sync ({label}) | {first['accelo']} | {first['awardco']} |",
        f"| incremental sync, 20 records changed per API ({label}) | {incremental['accelo']} | "
        f"{incremental['awardco']} |",
        f"| incremental + sweep of every stream ({label}) | {swept['accelo']} | {swept['awardco']} |",
        f"| state after the sweep ({label}) | {size:,} bytes of JSON | |",
    ]


CHURN: dict[str, dict[str, Any]] = {
    "no churn": {},
    "12 users deleted mid-sync": dict(mutations=[
        Mutation(after_requests=3, source="awardco", entity="user", delete=7),
        Mutation(after_requests=6, source="awardco", entity="user", delete=5)]),
    "13 updates mid-sync, order by updated_at (ties shuffled)": dict(awardco_order="updated_at", mutations=[
        Mutation(after_requests=3, source="awardco", entity="user", modify=9),
        Mutation(after_requests=7, source="awardco", entity="user", modify=4)]),
    "50 created + 9 deleted mid-sync": dict(mutations=[
        Mutation(after_requests=2, source="awardco", entity="user", create=30),
        Mutation(after_requests=7, source="awardco", entity="user", create=20, delete=9)]),
    "ties shuffled per request (no edits)": dict(awardco_order="updated_at"),
}  # fmt: skip


def churn_cost() -> list[str]:
    lines = []
    for case, knobs in CHURN.items():
        cells = []
        for include_total in (True, False):
            sim = Simulator(SimConfig(accelo_counts={k: 0 for k in COUNTS}, awardco_users=1200, latency=0.002,
                                      awardco_include_total=include_total, **knobs))  # fmt: skip
            counts, _ = _sync(sim, StateDocument(), sources="awardco", max_concurrency="4")
            cells.append(str(counts["awardco"]))
        lines.append(f"| {case} | {cells[0]} | {cells[1]} |")
    return lines


def key_sizes() -> list[str]:
    rng = random.Random(1)
    cases = {
        "1,000,000 ids, a gap after ~1 in 10 (the simulator's id generator)": _ids(rng, 1_000_000),
        "1,000,000 ids, 1 % missing": [i for i in range(1, 1_011_000) if rng.random() > 0.01][:1_000_000],
        "1,000,000 AwardCo employeeIds `E000001`…, a gap after ~1 in 10": [
            f"E{n:07d}" for n in _ids(rng, 1_000_000)
        ],
        "1,000,000 dense ids": list(range(1, 1_000_001)),
    }
    lines = []
    for label, keys in cases.items():
        started = time.perf_counter()
        packed = json.dumps(KeySet(keys).to_json())
        built = time.perf_counter() - started
        started = time.perf_counter()
        KeySet.from_json(json.loads(packed), "bench")
        read = time.perf_counter() - started
        lines.append(f"| {label} | {len(packed) / 1000:.1f} KB | {built:.2f} s | {read:.2f} s |")
    return lines


def main() -> None:
    print("## Reconciliation and churn-safe paging (`python -m benchmarks.reconcile`)\n")
    print(f"Requests per API, in-process simulator, Accelo {sum(COUNTS.values())} records, AwardCo {USERS} users.\n")
    print("| sync | Accelo requests | AwardCo requests |\n|---|---|---|")
    for include_total in (True, False):
        print("\n".join(sweep_cost(include_total)))
    print("\nAwardCo paging under churn: requests for one fresh sync of 1,200 users (12 pages of 100), no user "
          "skipped in any case (tests/test_reconcile.py).\n")  # fmt: skip
    print("| case | with `total` | without `total` |\n|---|---|---|")
    print("\n".join(churn_cost()))
    print("\nKnown-key state (`_keyset`): serialised size of one stream's key set, and the time to build and read "
          "it.\n")  # fmt: skip
    print("| keys | JSON size | build + encode | decode |\n|---|---|---|---|")
    print("\n".join(key_sizes()))


if __name__ == "__main__":
    main()
