"""Requests an Accelo sync costs, in-process against the default simulator: `python -m benchmarks.request_costs`.

Three figures, all counted by the simulator (data requests; the token request on its own):
1. a full sync of the six Accelo tables;
2. the next incremental sync with nothing new (the lookback overlaps the last window; nothing was modified in it);
3. an incremental sync after 150 invoices and 50 companies were modified just before the full sync, i.e. inside the
   lookback: the cost of re-reading what a late commit could hide among.
Requests do not depend on latency, so this runs at zero latency; `--lookback` compares other settings.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from typing import Any

from syncflow import Settings
from syncflow._state import StateDocument
from syncflow._sync import run_sync
from syncflow.sim import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET, Mutation, SimConfig, Simulator


class _DiscardingSink:
    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        return None

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        return None


def _measure(lookback: int, edits_in_lookback: bool) -> tuple[tuple[int, int], tuple[int, int], int]:
    offset = [0.0]
    simulator = Simulator(SimConfig(clock=lambda: time.time() + offset[0]))
    if edits_in_lookback:
        simulator.apply_mutation(Mutation(1, "accelo", "invoices", modify=150))
        simulator.apply_mutation(Mutation(1, "accelo", "companies", modify=50))
        offset[0] += 2
    settings = Settings.from_mapping(
        {
            "accelo_deployment": "sim",
            "accelo_client_id": ACCELO_CLIENT_ID,
            "accelo_client_secret": ACCELO_CLIENT_SECRET,
            "accelo_base_url": "http://sim.test",
            "accelo_lookback_seconds": str(lookback),
        }
    )
    state = StateDocument()
    run_sync(settings, _DiscardingSink(), state, transport=simulator.transport())
    full = simulator.stats()
    simulator.reset_stats()
    offset[0] += 5  # the next scheduled sync, a little later on the server's clock
    result = run_sync(settings, _DiscardingSink(), state, transport=simulator.transport())
    again = simulator.stats()
    return (
        (full.data_requests, full.token_requests),
        (again.data_requests, again.token_requests),
        sum(result.rows.values()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookback", type=int, action="append", help="accelo_lookback_seconds (repeatable)")
    args = parser.parse_args()
    for lookback in args.lookback or [300, 0]:
        (full, full_token), (quiet, quiet_token), quiet_rows = _measure(lookback, edits_in_lookback=False)
        _, (busy, busy_token), busy_rows = _measure(lookback, edits_in_lookback=True)
        print(
            f"lookback {lookback:>4} s: full sync {full} data + {full_token} token; "
            f"incremental, nothing new: {quiet} + {quiet_token} ({quiet_rows} rows, staff's full refresh); "
            f"incremental after 200 edits inside the lookback: {busy} + {busy_token} ({busy_rows} rows)"
        )


if __name__ == "__main__":
    main()
