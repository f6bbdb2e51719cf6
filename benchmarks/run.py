"""`python -m benchmarks.run --out BENCHMARKS.md`: every scenario, every system, one after the other; then the report.

    python -m benchmarks.run --out BENCHMARKS.md                   # the full run (~10 min on 2 cores)
    python -m benchmarks.run --quick --out /tmp/BENCH.md           # small data, a minute or so
    python -m benchmarks.run --scenarios clean,zero_latency        # a subset

Raw figures go to benchmarks/results.json, the charts to benchmarks/wall_time.png and benchmarks/concurrency.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._measure import RunResult, run_system
from ._sim import SimOptions, expected_pages

__all__ = ["SCENARIOS", "Plan", "main", "network_bound"]

HERE = Path(__file__).resolve().parent
LATENCY, JITTER = 0.15, 0.03
CONCURRENCY_SWEEP = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Plan:
    """Workload sizes (simulator --scale; 1.0 = 1,740 rows over the seven tables)."""

    clean_scale: float = 20.0  # 34,800 rows, 348 pages
    rate_scale: float = 15.0
    rate_limit: int = 40  # Accelo requests per window: 8/s, well below what the drain can take
    rate_window: float = 5.0
    memory_scale: float = 10.0  # and 10x that
    sweep_scale: float = 10.0
    peers_in_rate_limited: bool = False

    @classmethod
    def quick(cls) -> Plan:
        return cls(clean_scale=2.0, rate_scale=3.0, rate_limit=10, rate_window=2.0, memory_scale=1.0, sweep_scale=2.0)


def network_bound(
    scale: float, latency: float, concurrency: int, sources: Sequence[str] = ("accelo", "awardco")
) -> float:
    """pages x latency / allowed concurrency. syncflow's limit is per API and the APIs run side by side, so the bound
    is the slower API's: max over APIs of (its pages x latency / max_concurrency)."""
    pages = expected_pages(scale)
    per_api = [sum(n for t, n in pages.items() if t.startswith(api + ".")) for api in sources]
    return max(per_api) * latency / concurrency


def _say(result: RunResult) -> None:
    verdict = "ok" if result.ok else "MISMATCH: " + "; ".join(result.problems)
    print(
        f"  {result.scenario:<13} {result.system:<12} scale {result.scale:g} c={result.max_concurrency}: "
        f"{result.wall:7.2f} s, {result.rows_per_second:8.0f} rows/s, {result.requests} requests, "
        f"{result.rate_limited} x 429, {result.peak_rss / 2**20:.0f} MiB, {verdict}",
        flush=True,
    )


def _clean(plan: Plan, out: list[RunResult]) -> None:
    sim = SimOptions(scale=plan.clean_scale, latency=LATENCY, jitter=JITTER)
    for system in ("syncflow", "sequential", "lockstep5", "dlt", "bare_upsert"):
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


def _scale10(plan: Plan, out: list[RunResult]) -> None:
    for scale in (plan.memory_scale, plan.memory_scale * 10):
        out.append(run_system("scale10", "syncflow", SimOptions(scale=scale, latency=LATENCY, jitter=JITTER)))
        _say(out[-1])


def _zero_latency(plan: Plan, out: list[RunResult]) -> None:
    sim = SimOptions(scale=plan.clean_scale, latency=0.0, jitter=0.0)
    for system in ("syncflow", "bare_upsert"):
        out.append(run_system("zero_latency", system, sim))
        _say(out[-1])


def _concurrency(plan: Plan, out: list[RunResult]) -> None:
    sim = SimOptions(scale=plan.sweep_scale, latency=LATENCY, jitter=JITTER)
    for concurrency in CONCURRENCY_SWEEP:
        out.append(run_system("concurrency", "syncflow", sim, max_concurrency=concurrency))
        _say(out[-1])


SCENARIOS: dict[str, Callable[[Plan, list[RunResult]], None]] = {
    "clean": _clean,
    "rate_limited": _rate_limited,
    "scale10": _scale10,
    "zero_latency": _zero_latency,
    "concurrency": _concurrency,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the Markdown report here (e.g. BENCHMARKS.md)")
    parser.add_argument("--quick", action="store_true", help="small data: checks the machinery in about a minute")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    parser.add_argument("--results", type=Path, default=HERE / "results.json", help="raw figures (JSON)")
    parser.add_argument("--charts", type=Path, default=HERE, help="directory for wall_time.png and concurrency.png")
    parser.add_argument(
        "--keep", type=Path, help="a previous results.json: keep its figures for the scenarios not run now"
    )
    parser.add_argument("--rate-peers", action="store_true", help="also run the peers in the rate-limited scenario")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    plan = Plan.quick() if args.quick else Plan()
    if args.rate_peers:
        plan = Plan(**{**plan.__dict__, "peers_in_rate_limited": True})
    results: list[RunResult] = []
    started = time.monotonic()
    for name in chosen:
        print(f"scenario {name}", flush=True)
        SCENARIOS[name](plan, results)
    elapsed = time.monotonic() - started
    if args.keep is not None:
        # Re-running one scenario (e.g. after a fix) without re-running the other ten minutes' worth.
        previous = json.loads(args.keep.read_text(encoding="utf-8"))
        kept = previous["results"]
        elapsed = max(elapsed, float(previous.get("elapsed", 0.0)))  # the report quotes the full run's duration
        fields = set(RunResult.__dataclass_fields__)
        old = [RunResult(**{k: v for k, v in r.items() if k in fields}) for r in kept if r["scenario"] not in chosen]
        results = old + results
    print(f"all scenarios in {elapsed:.0f} s", flush=True)
    args.results.write_text(
        json.dumps({"plan": plan.__dict__, "quick": args.quick, "elapsed": elapsed,
                    "results": [r.as_json() for r in results]}, indent=1),
        encoding="utf-8",
    )  # fmt: skip
    from .report import render  # matplotlib is imported only once there is something to draw

    markdown = render(results, plan, quick=args.quick, elapsed=elapsed, charts=args.charts, out=args.out)
    if args.out is not None:
        args.out.write_text(markdown, encoding="utf-8")
        print(f"wrote {args.out}", flush=True)
    else:
        print(markdown)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
