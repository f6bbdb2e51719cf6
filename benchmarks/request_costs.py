"""Requests a sync costs, per stream, in-process against the default simulator: `python -m benchmarks.request_costs`.

For two selections of streams (the six classic Accelo tables + awardco.user, and the whole catalogue: the `streams`
key left empty), each counted by the simulator from its own request log (data requests per endpoint; the token
request on its own):

1. a first full sync;
2. the next incremental sync with nothing new (the lookback overlaps the last window; nothing was modified in it);
3. an incremental sync after 150 invoices and 50 companies were modified just before the full sync, i.e. inside the
   lookback: the cost of re-reading what a late commit could hide among;

each with reconciliation not due and, in a second pass, due (the server's clock a day and a bit later, so every
incremental stream's sweep runs). Requests do not depend on latency, so this runs at zero latency; `--lookback`
compares other settings. `--json` prints the figures as JSON (for BENCHMARKS.md or a test).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncflow import Settings
from syncflow._state import StateDocument
from syncflow._sync import run_sync
from syncflow.sim import Mutation, SimConfig, Simulator
from syncflow.sim._model import SimStats
from syncflow.sources import ACCELO_STREAMS, AWARDCO_STREAMS
from syncflow.sources._accelo_catalog import STREAM_NAMES

from ._sim import in_process_configuration

CLASSIC = ",".join((*(f"accelo.{name}" for name in STREAM_NAMES), "awardco.user"))
SELECTIONS = {"classic": CLASSIC, "catalogue": ""}
RECONCILE_DUE_AFTER = 25 * 3600  # past the default reconcile_every_hours (24)


class _DiscardingSink:
    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        return None

    def delete(self, schema: str, table: str, keys: Any) -> None:
        return None

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        return None


def _endpoint_streams() -> dict[str, str]:
    """`GET <path>` and `GET <path>/count` -> stream key, for every stream the sources declare."""
    found: dict[str, str] = {}
    for stream in (*ACCELO_STREAMS.values(), *AWARDCO_STREAMS.values()):
        path = getattr(stream, "endpoint", None)
        if isinstance(path, str):
            found[f"GET {path}"] = stream.key
            found[f"GET {path}/count"] = stream.key
    return found


@dataclass
class Cost:
    """One sync's requests: data requests per stream (and how many of them were /count), and token requests."""

    per_stream: dict[str, int]
    counts: dict[str, int]
    token: int
    rows: int
    rate_limited: int

    @property
    def data(self) -> int:
        return sum(self.per_stream.values())

    @classmethod
    def of(cls, stats: SimStats, rows: int) -> Cost:
        streams = _endpoint_streams()
        per_stream: dict[str, int] = {}
        counts: dict[str, int] = {}
        for endpoint, n in stats.by_endpoint.items():
            if endpoint.startswith("POST "):
                continue
            key = streams.get(endpoint, endpoint)
            per_stream[key] = per_stream.get(key, 0) + n
            if endpoint.endswith("/count"):
                counts[key] = counts.get(key, 0) + n
        return cls(per_stream, counts, stats.token_requests, rows, stats.rate_limited)

    def as_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "token": self.token,
            "count_requests": sum(self.counts.values()),
            "rows": self.rows,
            "rate_limited": self.rate_limited,
            "per_stream": dict(sorted(self.per_stream.items())),
        }


def measure(
    selection: str, *, lookback: int = 300, edits_in_lookback: bool = False, reconcile_due: bool = False
) -> tuple[Cost, Cost]:
    """(first full sync, the next incremental sync) for a `streams` selection."""
    offset = [0.0]
    simulator = Simulator(SimConfig(clock=lambda: time.time() + offset[0]))
    if edits_in_lookback:
        simulator.apply_mutation(Mutation(1, "accelo", "invoices", modify=150))
        simulator.apply_mutation(Mutation(1, "accelo", "companies", modify=50))
        offset[0] += 2
    settings = Settings.from_mapping(
        in_process_configuration(streams=selection, accelo_lookback_seconds=str(lookback))
    )
    state = StateDocument()
    result = run_sync(settings, _DiscardingSink(), state, transport=simulator.transport())
    full = Cost.of(simulator.stats(), sum(result.rows.values()))
    simulator.reset_stats()
    # The next scheduled sync, a little later on the server's clock (or a day later: every sweep due).
    offset[0] += RECONCILE_DUE_AFTER if reconcile_due else 5
    result = run_sync(settings, _DiscardingSink(), state, transport=simulator.transport())
    again = Cost.of(simulator.stats(), sum(result.rows.values()))
    return full, again


def report(lookback: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, selection in SELECTIONS.items():
        full, quiet = measure(selection, lookback=lookback)
        _, busy = measure(selection, lookback=lookback, edits_in_lookback=True)
        _, quiet_due = measure(selection, lookback=lookback, reconcile_due=True)
        figures[name] = {"streams": len(full.per_stream), "full": full.as_json(), "quiet": quiet.as_json(),
                         "edits_in_lookback": busy.as_json(), "quiet_reconcile_due": quiet_due.as_json()}  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lookback", type=int, action="append", help="accelo_lookback_seconds (repeatable)")
    parser.add_argument("--per-stream", action="store_true", help="print every stream's requests")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    everything = {str(lookback): report(lookback) for lookback in args.lookback or [300, 0]}
    if args.json:
        print(json.dumps(everything, indent=2))
        return
    for lookback, figures in everything.items():
        for name, runs in figures.items():
            print(f"lookback {lookback:>4} s, {name} ({runs['streams']} streams):")
            for run in ("full", "quiet", "edits_in_lookback", "quiet_reconcile_due"):
                cost = runs[run]
                print(
                    f"  {run:<20} {cost['data']:>5} data + {cost['token']} token ({cost['count_requests']} /count, "
                    f"{cost['rows']} rows, {cost['rate_limited']} x 429)"
                )
                if args.per_stream:
                    extra = {k: v for k, v in cost["per_stream"].items() if v != 1}
                    print(f"      streams not at 1 request: {extra}")


if __name__ == "__main__":
    main()
