"""Peak memory of syncflow alone, without the SDK runner: `python -m benchmarks.memory_probe [--scales 10,100]`.

The benchmark's 10x scenario measures the whole process, SDK runner included; the runner's own memory grows with the
sync (it keeps a hash of every key upserted, and DuckDB caches the growing warehouse). This probe separates the two:
for each scale it syncs every stream from the loopback simulator into a sink that discards rows, in a fresh process,
and prints that process's peak RSS (VmHWM) — what syncflow itself holds: the bounded queue, the pages in flight, the
first pages held while planning, and the interpreter.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._sim import SimOptions, SimProcess
from .worker import connector_configuration


class _DiscardingSink:
    rows = 0

    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        self.rows += 1

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        return None


def _child(url: str, sources: str) -> None:
    from syncflow import sync

    sink = _DiscardingSink()
    sync(connector_configuration(url, sources=sources), sink, progress=False)
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            print(f"{sink.rows} {int(line.split()[1]) * 1024}")


def probe(scale: float, sources: str = "accelo,awardco", timeout: float = 1800) -> tuple[int, int, float]:
    """(rows synced, syncflow's peak RSS in bytes, simulator start-up seconds) for one scale, zero latency."""
    with SimProcess(SimOptions(scale=scale, latency=0.0, jitter=0.0)) as sim:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory_probe", "--child", sim.url, "--sources", sources],
            capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip
    rows, peak = done.stdout.split()
    return int(rows), int(peak), sim.started_in


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_probe")
    parser.add_argument("--scales", default="10,100", help="comma list of simulator scales")
    parser.add_argument("--sources", default="accelo,awardco")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.sources)
        return 0
    for scale in (float(s) for s in args.scales.split(",")):
        rows, peak, _ = probe(scale, args.sources)
        print(f"scale {scale:g}: {rows:,} rows, syncflow peak RSS {peak / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
