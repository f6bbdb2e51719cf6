"""syncflow against the bare `op.upsert` floor, side by side: `python -m benchmarks.floor_ratio --scale 10 --repeats 3`.

Each repeat runs both systems (a fresh simulator and worker each, as `benchmarks.run` does), in alternating order,
at each latency; the figure is the median over repeats of the per-repeat ratio syncflow / bare, for wall seconds
and for process CPU seconds during the sync (the worker's `getrusage` around `core_adapter.run`). Every run is
checked against the simulator's ground truth.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._measure import run_system
from ._sim import SimOptions

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor_ratio", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latencies", default="0.15,0", help="comma list of seconds per request")
    parser.add_argument(
        "--systems", default="syncflow,bare_upsert",
        help="comma list; the last is the floor the others are divided by",
    )  # fmt: skip
    args = parser.parse_args(argv)
    ok = True
    for latency in (float(x) for x in args.latencies.split(",")):
        options = SimOptions(scale=args.scale, latency=latency, jitter=0.03 if latency else 0.0)
        systems = [name.strip() for name in args.systems.split(",") if name.strip()]
        floor = systems[-1]
        figures: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
        for repeat in range(args.repeats):
            order = systems if repeat % 2 == 0 else systems[::-1]
            for system in order:
                result = run_system("floor", system, options)
                ok = ok and result.ok
                measured = json.loads(Path(result.log).with_name("result.json").read_text(encoding="utf-8"))
                figures[system].append(measured)
                print(
                    f"latency {latency * 1000:.0f} ms, {system:<11} wall {measured['wall']:6.2f} s, "
                    f"cpu {measured['cpu']:6.2f} s (+ child {measured.get('children_cpu', 0.0):.2f} s), "
                    f"{measured['voluntary_switches']:6d} voluntary switches, "
                    f"{measured.get('table_writes', 0)} table writes ({measured.get('table_write_cpu', 0.0):.2f} s), "
                    f"gc {sum(measured.get('gc_seconds', [0.0])):.2f} s {measured.get('gc_collections')}, "
                    f"{result.rows} rows, {'ok' if result.ok else 'MISMATCH ' + '; '.join(result.problems)}; "
                    "CPU s by thread: "
                    + ", ".join(f"{name} {s:.2f}" for name, s in sorted(measured.get("thread_cpu", {}).items())),
                    flush=True,
                )
        for system in systems[:-1]:
            for what in ("wall", "cpu"):
                ratios = [s[what] / b[what] for s, b in zip(figures[system], figures[floor], strict=True)]
                print(
                    f"latency {latency * 1000:.0f} ms: {system} / {floor} {what} = {statistics.median(ratios):.2f} "
                    f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)}); rows/s share at median: "
                    f"{1 / statistics.median(ratios):.0%}",
                    flush=True,
                )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
