"""`python -m benchmarks.run --out BENCHMARKS.md`: every scenario, every system, one after the other; then the report.

    python -m benchmarks.run --keep benchmarks/results.json --out BENCHMARKS.md   # make bench: all but scale_1m
    python -m benchmarks.run --scenarios scale_1m --keep benchmarks/results.json --out BENCHMARKS.md  # bench-scale
    python -m benchmarks.run --quick --out /tmp/BENCH.md --results /tmp/r.json    # small data, a few minutes
    python -m benchmarks.run --scenarios none --keep benchmarks/results.json --out BENCHMARKS.md  # re-render only

Raw figures go to benchmarks/results.json (with when and how long each scenario ran), the charts to benchmarks/*.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import memory_probe
from ._measure import RunResult, run_system, run_twice
from ._sim import SimOptions, expected_pages, expected_rows

__all__ = ["DEFAULT_SCENARIOS", "PLANNING_ROUND_TRIPS", "SCENARIOS", "Plan", "accelo_scale", "main", "network_bound"]

HERE = Path(__file__).resolve().parent
LATENCY, JITTER = 0.15, 0.03
CONCURRENCY_SWEEP = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Plan:
    """Workload sizes (simulator --scale; 1.0 = 1,740 rows over the seven tables, 1,490 of them Accelo's)."""

    clean_scale: float = 20.0  # 34,800 rows, 348 pages
    floor_repeats: int = 3  # interleaved syncflow / bare_upsert pairs per latency: a median and a range
    rate_scale: float = 15.0
    rate_limit: int = 40  # Accelo requests per window: 8/s, well below what the drain can take
    rate_window: float = 5.0
    requests_scale: float = 2.0
    memory_scale: float = 10.0  # and 10x that
    sweep_scale: float = 10.0
    peers_in_rate_limited: bool = False
    big_rows: int = 1_000_000  # scale_1m: Accelo rows; its memory is compared with a tenth of that
    kill_at: float = 0.75  # scale_1m: the first attempt is killed once it has requested this share of the pages

    @classmethod
    def quick(cls) -> Plan:
        return cls(clean_scale=2.0, floor_repeats=2, rate_scale=3.0, rate_limit=10, rate_window=2.0,
                   requests_scale=0.5, memory_scale=1.0, sweep_scale=2.0, big_rows=20_000)  # fmt: skip


def accelo_scale(rows: int) -> float:
    """The simulator scale at which the six Accelo tables hold `rows` rows (within rounding)."""
    return rows / sum(n for t, n in expected_rows(1.0).items() if t.startswith("accelo."))


def network_bound(
    scale: float, latency: float, concurrency: int, sources: Sequence[str] = ("accelo", "awardco")
) -> float:
    """pages x latency / allowed concurrency. syncflow's limit is per API and the APIs run side by side, so the bound
    is the slower API's: max over APIs of (its pages x latency / max_concurrency)."""
    pages = expected_pages(scale)
    per_api = [sum(n for t, n in pages.items() if t.startswith(api + ".")) for api in sources]
    return max(per_api) * latency / concurrency


#: Round trips any client waits for before its pages: the Accelo token (the simulator adds no latency to it, so 0)
#: and planning (the `/count` requests, sent side by side: one latency). Added to the network bound for `to_duckdb`.
PLANNING_ROUND_TRIPS = 1
REQUEST_COSTS_TIMEOUT = 600.0
# A million rows through the SDK runner took more than the default 15 min on a busy 2-vCPU machine (the first
# bench-scale run was cut off there): only a hang may trip this one.
SCALE_TIMEOUT = 3 * 3600.0


def _say(result: RunResult) -> None:
    verdict = "ok" if result.ok else "MISMATCH: " + "; ".join(result.problems)
    print(
        f"  {result.scenario:<13} {result.system:<12} scale {result.scale:g} c={result.max_concurrency}: "
        f"{result.wall:7.2f} s (cpu {result.cpu:6.2f} s), {result.rows_per_second:8.0f} rows/s, "
        f"{result.requests} requests, {result.rate_limited} x 429, {result.peak_rss / 2**20:.0f} MiB, {verdict}",
        flush=True,
    )


def _floor(plan: Plan, out: list[RunResult]) -> None:
    # syncflow and the bare op.upsert loop over the same rows, alternating which goes first, at 150 ms and at 0 ms:
    # each repeat gives one ratio, and the report quotes their median and range (wall and CPU).
    for latency in (LATENCY, 0.0):
        sim = SimOptions(scale=plan.clean_scale, latency=latency, jitter=JITTER if latency else 0.0)
        for repeat in range(plan.floor_repeats):
            order = ("syncflow", "bare_upsert") if repeat % 2 == 0 else ("bare_upsert", "syncflow")
            for system in order:
                result = run_system("floor", system, sim)
                result.repeat = repeat
                out.append(result)
                _say(result)


def _clean(plan: Plan, out: list[RunResult]) -> None:
    sim = SimOptions(scale=plan.clean_scale, latency=LATENCY, jitter=JITTER)
    for system in ("syncflow", "to_duckdb", "sequential", "lockstep5", "dlt", "bare_upsert"):
        out.append(run_system("clean", system, sim))
        _say(out[-1])


def _rate_limited(plan: Plan, out: list[RunResult]) -> None:
    # Only Accelo is synced: its budget is the one that binds, and AwardCo's separate budget would not change it.
    sim = SimOptions(
        scale=plan.rate_scale, latency=LATENCY, jitter=JITTER,
        accelo_rate_limit=plan.rate_limit, rate_window=plan.rate_window,
    )  # fmt: skip
    per_hour = round(plan.rate_limit * 3600 / plan.rate_window)
    systems = ["syncflow", *(["sequential", "lockstep5"] if plan.peers_in_rate_limited else [])]
    for system in systems:
        out.append(
            run_system("rate_limited", system, sim, accelo_per_hour=per_hour, sources="accelo", poll_budget=True)
        )
        _say(out[-1])


def _requests(plan: Plan, out: list[RunResult]) -> None:
    # A full sync, then at once the next one against the same simulator: nothing is new, so every request of the
    # second is the incremental overhead (requests per stream, and the token).
    sim = SimOptions(scale=plan.requests_scale, latency=0.0, jitter=0.0)
    for system in ("syncflow", "to_duckdb"):
        out.append(run_twice("requests", system, sim, kill_after=None))
        _say(out[-1])
    out.append(_request_costs())


def _request_costs() -> RunResult:
    """HOOK: `python -m benchmarks.request_costs` (another change owns that file: the lookback's cost, edits inside
    it), run as its CLI and quoted in the report as it prints it; a failure is reported there, with its error."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.request_costs"], cwd=HERE.parent, capture_output=True, text=True,
            timeout=REQUEST_COSTS_TIMEOUT, env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        )  # fmt: skip
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        code, stdout, stderr = -9, "", f"no answer within {REQUEST_COSTS_TIMEOUT:.0f} s"
    tail = (stderr.strip().splitlines() or [""])[-1]
    print(f"  requests      request_costs exit {code}: {stdout.strip() or tail}", flush=True)
    # ok means "its own figures are in the report" either way; the report marks a failed run as failed.
    return RunResult("requests", "request_costs", 1.0, 0.0, 16, 0, ok=True,
                     extra={"exit": code, "stdout": stdout, "stderr_tail": tail})  # fmt: skip


def _scale10(plan: Plan, out: list[RunResult]) -> None:
    for scale in (plan.memory_scale, plan.memory_scale * 10):
        out.append(run_system("scale10", "syncflow", SimOptions(scale=scale, latency=LATENCY, jitter=JITTER)))
        _say(out[-1])


def _zero_latency(plan: Plan, out: list[RunResult]) -> None:
    # syncflow's three paths side by side (and the bare loop, the SDK path's floor): rows/s with no network wait.
    sim = SimOptions(scale=plan.clean_scale, latency=0.0, jitter=0.0)
    for system in ("extract", "to_duckdb", "syncflow", "bare_upsert"):
        out.append(run_system("zero_latency", system, sim))
        _say(out[-1])


def _concurrency(plan: Plan, out: list[RunResult]) -> None:
    sim = SimOptions(scale=plan.sweep_scale, latency=LATENCY, jitter=JITTER)
    for concurrency in CONCURRENCY_SWEEP:
        out.append(run_system("concurrency", "syncflow", sim, max_concurrency=concurrency))
        _say(out[-1])


def _scale_1m(plan: Plan, out: list[RunResult]) -> None:
    # A million Accelo rows, zero latency, no budget, through to_duckdb and fivetran debug: one uninterrupted run
    # each (it completes; rows/s), then one killed once it has requested `kill_at` of the pages and resumed in the
    # same place; then syncflow's own memory (no SDK runner, no DuckDB: a discarding sink) at a tenth of the rows
    # and at all of them.
    big = SimOptions(scale=accelo_scale(plan.big_rows), latency=0.0, jitter=0.0)
    for system in ("to_duckdb", "syncflow"):
        full = run_system("scale_1m", system, big, sources="accelo", timeout=SCALE_TIMEOUT)
        full.extra["kind"] = "full"
        out.append(full)
        _say(full)
        resumed = run_twice("scale_1m", system, big, kill_after=None, kill_at_pages=plan.kill_at, sources="accelo",
                            timeout=SCALE_TIMEOUT)  # fmt: skip
        resumed.extra["kind"] = "kill_resume"
        out.append(resumed)
        _say(resumed)
        print(f"    killed after {resumed.extra.get('first_killed_after')} s; complete then: "
              f"{resumed.extra.get('completed_before_second')}; second run's requests per stream "
              f"{resumed.extra.get('second_requests_by_stream')}", flush=True)  # fmt: skip
    for rows in (plan.big_rows // 10, plan.big_rows):
        scale = accelo_scale(rows)
        synced, peak, started_in = memory_probe.probe(scale, "accelo")
        expected = sum(n for t, n in expected_rows(scale).items() if t.startswith("accelo."))
        extra = {"kind": "memory", "sim_start_seconds": started_in}
        result = RunResult("scale_1m", "memory_probe", scale, 0.0, 16, expected, rows=synced, peak_rss=peak,
                           ok=synced == expected, extra=extra)  # fmt: skip
        if not result.ok:
            result.problems.append(f"the discarding sink saw {synced} rows, not {expected}")
        out.append(result)
        print(f"  scale_1m      memory_probe {synced:,} rows: syncflow peak RSS {peak / 2**20:.0f} MiB "
              f"(simulator start-up {started_in:.1f} s)", flush=True)  # fmt: skip


SCENARIOS: dict[str, Callable[[Plan, list[RunResult]], None]] = {
    "floor": _floor,
    "clean": _clean,
    "rate_limited": _rate_limited,
    "requests": _requests,
    "scale10": _scale10,
    "zero_latency": _zero_latency,
    "concurrency": _concurrency,
    "scale_1m": _scale_1m,
}
#: What `make bench` runs; scale_1m (a million rows, ~18 min) is `make bench-scale`, and its figures are kept.
DEFAULT_SCENARIOS = tuple(name for name in SCENARIOS if name != "scale_1m")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the Markdown report here (e.g. BENCHMARKS.md)")
    parser.add_argument("--quick", action="store_true", help="small data: checks the machinery in about a minute")
    parser.add_argument(
        "--scenarios", default=",".join(DEFAULT_SCENARIOS),
        help=f"comma list of {', '.join(SCENARIOS)} (default: all but scale_1m); 'none' only re-renders --keep",
    )  # fmt: skip
    parser.add_argument("--results", type=Path, default=HERE / "results.json", help="raw figures (JSON)")
    parser.add_argument("--charts", type=Path, default=HERE, help="directory for the charts (PNG)")
    parser.add_argument(
        "--keep", type=Path,
        help="a previous results.json: keep its figures for the scenarios not run now (ignored if it is missing)",
    )  # fmt: skip
    parser.add_argument("--rate-peers", action="store_true", help="also run the peers in the rate-limited scenario")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip() and name.strip() != "none"]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    plan = Plan.quick() if args.quick else Plan()
    if args.rate_peers:
        plan = Plan(**{**plan.__dict__, "peers_in_rate_limited": True})
    # Read what is kept before anything is written: --keep may name the file --results overwrites.
    previous = (
        json.loads(args.keep.read_text(encoding="utf-8")) if args.keep is not None and args.keep.exists() else None
    )
    results: list[RunResult] = []
    info: dict[str, dict[str, Any]] = {}
    for name in chosen:
        print(f"scenario {name}", flush=True)
        started, at = time.monotonic(), datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        SCENARIOS[name](plan, results)
        info[name] = {"seconds": time.monotonic() - started, "measured_at": at, "quick": args.quick,
                      "plan": plan.__dict__}  # fmt: skip
        print(f"scenario {name} took {info[name]['seconds']:.0f} s", flush=True)
    if previous is not None:
        # Re-running some scenarios (e.g. after a fix, or all but the long scale_1m) keeps the others' figures, and
        # the report says when each was measured.
        fields = set(RunResult.__dataclass_fields__)
        old = [
            RunResult(**{k: v for k, v in r.items() if k in fields})
            for r in previous["results"] if r["scenario"] not in chosen
        ]  # fmt: skip
        kept_info = {k: v for k, v in previous.get("scenarios", {}).items() if k not in chosen}
        info = {**kept_info, **info}
        results = old + results
    print(f"these scenarios in {sum(info[n]['seconds'] for n in chosen):.0f} s", flush=True)
    args.results.write_text(
        json.dumps({"scenarios": info, "results": [r.as_json() for r in results]}, indent=1), encoding="utf-8"
    )
    from .report import render  # matplotlib is imported only once there is something to draw

    markdown = render(results, info, charts=args.charts, out=args.out)
    if args.out is not None:
        args.out.write_text(markdown, encoding="utf-8")
        print(f"wrote {args.out}", flush=True)
    else:
        print(markdown)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
