"""One system, one sync, in this (fresh) process: `python -m benchmarks.worker --system NAME --url URL ...`.

Writes a JSON result (wall seconds, peak RSS of this process and its children, where the output landed) to --result.
Wall time covers the sync only: imports, the simulator and (for the bare loop) converting the rows happen before.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from syncflow.sources._accelo_catalog import STREAM_NAMES

__all__ = ["SYSTEMS", "connector_configuration", "main"]

SYSTEMS = ("syncflow", "to_duckdb", "extract", "sequential", "lockstep5", "dlt", "bare_upsert")


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


class _ThreadCpu:
    """CPU seconds per thread of this process, sampled from /proc/self/task every `interval` s (last value kept).

    Threads end before the sync returns (syncflow's event-loop thread), so their CPU is read while they run; the
    figure for a thread is at most `interval` of CPU short. Linux only; elsewhere it stays empty.
    """

    def __init__(self, interval: float = 0.25) -> None:
        import threading

        self._interval = interval
        self._stop = threading.Event()
        self.seconds: dict[str, float] = {}
        self._thread = threading.Thread(target=self._loop, name="thread-cpu-sampler", daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> _ThreadCpu:
        self._baseline = self._read()  # the main thread's CPU before the sync (imports, typing the bare rows)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _read(self) -> dict[str, float]:
        import threading

        out: dict[str, float] = {}
        for thread in threading.enumerate():
            try:
                text = Path(f"/proc/self/task/{thread.native_id}/stat").read_text(encoding="ascii")
            except OSError:
                continue  # the thread ended between enumerate() and the read
            fields = text.rsplit(")", 1)[1].split()
            # utime and stime are fields 14 and 15 of stat; after the ")" split they are at 11 and 12.
            out[thread.name] = (int(fields[11]) + int(fields[12])) / self._tick
        return out

    def _sample(self) -> None:
        for name, value in self._read().items():
            self.seconds[name] = value - self._baseline.get(name, 0.0)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()


class _GcClock:
    """Seconds the cyclic garbage collector ran (every thread), by generation: a process holding more tracked
    objects pays more per collection, and the SDK's writer allocates enough to collect often."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def __enter__(self) -> _GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def _timed(fn: Callable[[], object]) -> dict[str, Any]:
    """Wall and CPU seconds of `fn()` in this process (every thread), voluntary switches, CPU per thread."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with _ThreadCpu() as per_thread, _GcClock() as gc_clock:
        started = time.perf_counter()
        fn()
        wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of every thread of this process during the sync: a CPU-bound sync on a shared machine shows its work here
    # even when the wall clock is stretched by other processes.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # syncflow's fetch process (`fetch_process`: waited for inside the sync); 0 for every other system.
    children = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    return {"wall": wall, "cpu": cpu, "voluntary_switches": after.ru_nvcsw - before.ru_nvcsw,
            "thread_cpu": per_thread.seconds, "children_cpu": children,
            "gc_seconds": gc_clock.seconds, "gc_collections": gc_clock.collections}  # fmt: skip


def _extract_keys(configuration: dict[str, str], database: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    """`syncflow.extract`: every page iterated, each row's key and cursor kept (what a consumer touches at least);
    the keys are written to `database` after the clock stops, so the ground-truth check reads them like the rest."""
    import syncflow
    from syncflow.sources._accelo_catalog import RESOURCES
    from syncflow.sources.awardco import USER

    columns = {f"accelo.{n}": (RESOURCES[n].primary_key[0], RESOURCES[n].cursor) for n in STREAM_NAMES}
    columns["awardco.user"] = (USER.primary_key[0], USER.cursor)
    seen: dict[str, list[tuple[Any, Any]]] = {}

    def run() -> None:
        with syncflow.extract(configuration, progress=False) as pages:
            for page in pages:
                key, cursor = columns[page.stream]
                seen.setdefault(page.stream, []).extend(
                    (row[key], row.get(cursor) if cursor else None) for row in page.rows
                )

    def save() -> None:
        import duckdb

        from syncflow._naming import destination_column

        with duckdb.connect(str(database)) as con:
            for stream, pairs in seen.items():
                source, table = stream.split(".")
                key, cursor = columns[stream]
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {source}")
                con.execute(
                    f"CREATE TABLE {source}.{table} ({destination_column(key)} VARCHAR, "
                    f"{destination_column(cursor or '_no_cursor')} VARCHAR)"
                )
                con.executemany(
                    f"INSERT INTO {source}.{table} VALUES (?, ?)",
                    [(str(k), None if c is None else str(c)) for k, c in pairs],
                )

    return run, save


def _run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    configuration = connector_configuration(
        args.url, max_concurrency=args.max_concurrency, accelo_per_hour=args.accelo_per_hour, sources=args.sources
    )
    if args.checkpoint_every_rows:
        configuration["checkpoint_every_rows"] = str(args.checkpoint_every_rows)
    if args.system == "dlt":
        from .dlt_pipeline import run_dlt

        database = workdir / "dlt.duckdb"
        wall = run_dlt(configuration, workdir, database)
        return {"wall": wall, "database": str(database), "layout": "dlt"}
    if args.system == "to_duckdb":
        import syncflow

        database = workdir / "syncflow.duckdb"
        # A second run in the same workdir resumes from the state saved in the file (what a notebook user gets).
        measured = _timed(lambda: syncflow.to_duckdb(configuration, database, progress=False))
        return {**measured, "database": str(database), "layout": "duckdb"}
    if args.system == "extract":
        database = workdir / "extract-keys.duckdb"
        run, save = _extract_keys(configuration, database)
        measured = _timed(run)
        save()
        return {**measured, "database": str(database), "layout": "duckdb"}

    from syncflow.fivetran import schema, update

    from . import peers
    from ._sdk import count_table_writes, run_in_sdk_runner, state_path, warehouse_path

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
    # A second run in the same workdir resumes, as `fivetran debug` does, from the state the runner saved.
    saved = state_path(project)
    state = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
    box: list[float] = []
    with count_table_writes() as writes:
        measured = _timed(lambda: box.append(run_in_sdk_runner(fn, schema, project, configuration, state)))
    # The runner's own clock (around core_adapter.run only) is the wall figure, as before.
    return {**measured, "wall": box[0], "database": str(warehouse_path(project)), "layout": "sdk",
            "table_writes": writes.writes, "table_write_cpu": writes.cpu}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--accelo-per-hour", type=int, default=1_000_000)
    parser.add_argument("--sources", default="accelo,awardco")
    parser.add_argument("--checkpoint-every-rows", type=int, default=0, help="0: syncflow's default")
    args = parser.parse_args(argv)
    result = _run(args)
    result["peak_rss"] = _peak_rss_bytes()
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
