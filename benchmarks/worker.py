"""One system, one sync, in this (fresh) process: `python -m benchmarks.worker --system NAME --url URL ...`.

Writes a JSON result (wall seconds, peak RSS of this process and its children, where the output landed) to --result.
Wall time covers the sync only: imports, the simulator and (for the bare loop) converting the rows happen before.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syncflow.sources._accelo_catalog import STREAM_NAMES

__all__ = ["SYSTEMS", "connector_configuration", "main"]

SYSTEMS = ("syncflow", "sequential", "lockstep5", "dlt", "bare_upsert")


def connector_configuration(
    url: str, *, max_concurrency: int = 16, accelo_per_hour: int = 1_000_000, sources: str = "accelo,awardco"
) -> dict[str, str]:
    """syncflow's configuration.json for the simulator at `url` (all values strings, as Fivetran passes them)."""
    return {
        "sources": sources,
        "accelo_deployment": "syncflow-sim",
        "accelo_client_id": "syncflow-sim",
        "accelo_client_secret": "syncflow-sim-secret",
        "accelo_base_url": url,
        "awardco_api_key": "syncflow-sim-key",
        "awardco_base_url": url,
        "accelo_requests_per_hour": str(accelo_per_hour),
        "awardco_requests_per_hour": "1000000",
        "max_concurrency": str(max_concurrency),
        # The six tables every peer implements (the benchmarks compare like with like), and AwardCo.
        "streams": ",".join(
            name
            for name in (*(f"accelo.{table}" for table in STREAM_NAMES), "awardco.user")
            if name.split(".")[0] in sources.split(",")
        ),
    }


def _peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM), max with its children's (none expected, but a pool would count).

    Not getrusage(RUSAGE_SELF).ru_maxrss: Linux carries it over fork+exec, so a worker forked from a parent that
    grew (the parent holds 10x ground truths) would report the parent's size. VmHWM belongs to this exec's memory.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return max(int(line.split()[1]) * 1024, children)
    except OSError:
        pass
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, children)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    configuration = connector_configuration(
        args.url, max_concurrency=args.max_concurrency, accelo_per_hour=args.accelo_per_hour, sources=args.sources
    )
    if args.system == "dlt":
        from .dlt_pipeline import run_dlt

        database = workdir / "dlt.duckdb"
        wall = run_dlt(configuration, workdir, database)
        return {"wall": wall, "database": str(database), "layout": "dlt"}

    from syncflow.fivetran import schema, update

    from . import peers
    from ._sdk import run_in_sdk_runner, warehouse_path

    project = workdir / "project"
    if args.system == "syncflow":
        fn = update
    elif args.system == "sequential":
        fn = peers.sequential_update
    elif args.system == "lockstep5":
        fn = peers.lockstep5_update
    else:  # bare_upsert: rows are fetched and typed before the clock starts; the loop itself is what is timed
        from ._sim import SimOptions, SimProcess

        probe = SimProcess(SimOptions())
        probe.url = args.url  # only its control endpoints are used; this process did not start it
        fn = peers.bare_upsert_update(list(peers.typed_rows(probe.ground_truth())))
    wall = run_in_sdk_runner(fn, schema, project, configuration)
    return {"wall": wall, "database": str(warehouse_path(project)), "layout": "sdk"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--accelo-per-hour", type=int, default=1_000_000)
    parser.add_argument("--sources", default="accelo,awardco")
    args = parser.parse_args(argv)
    result = _run(args)
    result["peak_rss"] = _peak_rss_bytes()
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
