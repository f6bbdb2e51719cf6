"""The notebook paths against the network bound: `python -m benchmarks.duckdb_bound --scale 10 --repeats 2`.

For each latency, one loopback simulator (`python -m syncflow.sim` in a subprocess) serves every run; each repeat runs
every system once, in alternating order, so the figures compared were taken in the same minute:

- `extract`: iterate every page of every stream (the rows are counted, not kept), in this process;
- `to_duckdb`: the same sync into a fresh DuckDB file, in this process;
- `discard`: the same sync into a sink that drops rows (`syncflow.sync`): the engine's own floor, what `to_duckdb`
  costs beyond the DuckDB writes;
- `fivetran`: `fivetran debug`'s path (the SDK's local runner) in a fresh worker and simulator
  (`benchmarks._measure.run_system`), start-up excluded.

The clock covers the public call only (imports and the simulator's start-up are before it). The bound is the
network's: pages x latency / max_concurrency for the slower API (`benchmarks.run.network_bound`), plus the round
trips that must precede any page: the token, then the count that sizes each window (asked together with the first
page, which the pages already count). Every run is checked against the simulator's ground truth: every key once, and
every cursor value (to_duckdb and fivetran read back from their files; extract from the rows it yielded).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

import syncflow
from syncflow._edge import resolve_settings
from syncflow._naming import destination_column
from syncflow._sync import select_streams

from ._measure import run_system
from ._sim import SimOptions, SimProcess, expected_rows
from .run import network_bound
from .verify import _epoch, _tables
from .worker import connector_configuration

__all__ = ["main"]

PLANNING_ROUND_TRIPS = 2  # the token; the count (in flight with the first page) that sizes each Accelo window
SYSTEMS = ("extract", "to_duckdb", "discard", "fivetran")  # also: to_duckdb_ndjson, and each --baseline NAME


@dataclass
class Run:
    system: str
    wall: float
    cpu: float | None
    rows: int
    requests: int | None
    problems: list[str] = field(default_factory=list)
    first_rows: float | None = None  # seconds from the call to the first batch with rows
    tail: float | None = None  # seconds from the last batch to the call's return (final checkpoint, close)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _check(
    found: Mapping[str, list[tuple[Any, Any]]], truth: Mapping[str, Mapping[str, list[dict[str, Any]]]]
) -> list[str]:
    """`found`: "source.table" -> [(primary key, cursor value)]; compared with the ground truth's keys and cursors."""
    problems: list[str] = []
    for source, table, key, cursor in _tables():
        rows = found.get(f"{source}.{table}", [])
        records = truth[source][table]
        keys = [str(k) for k, _ in rows]
        if len(keys) != len(set(keys)):
            problems.append(f"{source}.{table}: {len(keys) - len(set(keys))} duplicate keys")
        expected = {str(r[key]): _epoch(r[cursor]) if cursor else None for r in records}
        if set(keys) != set(expected):
            problems.append(
                f"{source}.{table}: {len(set(expected) - set(keys))} keys missing, "
                f"{len(set(keys) - set(expected))} extra"
            )
        if cursor:
            wrong = sum(1 for k, c in rows if str(k) in expected and _epoch(c) != expected[str(k)])
            if wrong:
                problems.append(f"{source}.{table}: {wrong} rows with a wrong {cursor}")
    return problems


class _Discard:
    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        return None

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        return None


class _Clock:
    """A `syncflow.Progress` that only notes when the first and the last batch were handed over."""

    def __init__(self) -> None:
        self.started = self.first = self.last = 0.0
        self.rows = 0

    def on_start(self, budgets: Any) -> None:
        return None

    def on_batch(self, batch: Any) -> None:
        self.last = time.perf_counter()
        if batch.rows and not self.rows:
            self.first = self.last
        self.rows += len(batch.rows)

    def close(self) -> None:
        return None


def _sink_class(system: str, baselines: Mapping[str, Path]) -> Any:
    """The DuckDB sink a `to_duckdb*` system writes through: this tree's (`to_duckdb`), its NDJSON fallback
    (`to_duckdb_ndjson`), or a `--baseline`."""
    from syncflow._duckdb import DuckDBSink

    if system == "to_duckdb_ndjson":
        return functools.partial(DuckDBSink, arrow=False)
    if system in baselines:
        # Loaded as a module of the syncflow package, so its relative imports resolve against this tree.
        spec = importlib.util.spec_from_file_location(f"syncflow._duckdb_{system}", baselines[system])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.DuckDBSink
    return DuckDBSink


def _in_process(
    system: str,
    sim: SimProcess,
    configuration: Mapping[str, str],
    truth: Any,
    workdir: Path,
    baselines: Mapping[str, Path],
) -> Run:
    columns = {f"{source}.{table}": (key, cursor) for source, table, key, cursor in _tables()}
    found: dict[str, list[tuple[Any, Any]]] = {}
    clock = _Clock()
    before = sim.stats()["requests"]
    cpu = _cpu()
    started = clock.started = time.perf_counter()
    path = workdir / f"{system}-{time.monotonic_ns()}.duckdb"
    if system == "extract":
        pages = list(syncflow.extract(configuration, progress=clock))  # kept, and checked off the clock
    elif system == "discard":
        syncflow.sync(configuration, _Discard(), progress=clock)
    elif system == "to_duckdb":
        syncflow.to_duckdb(configuration, path, progress=clock)
    else:  # what to_duckdb does on a new file (no saved state), through another sink
        streams = select_streams(resolve_settings(configuration, None), None)
        sink = _sink_class(system, baselines)(path, streams)
        try:
            syncflow.sync(configuration, sink, progress=clock)
        finally:
            sink.close()
    wall = time.perf_counter() - started
    cpu = _cpu() - cpu
    if system == "extract":
        for page in pages:
            key, cursor = columns[page.stream]
            found.setdefault(page.stream, []).extend((r[key], r.get(cursor) if cursor else None) for r in page.rows)
    elif system != "discard":
        with duckdb.connect(str(path), read_only=True) as db:
            for stream, (key, cursor) in columns.items():
                select = f"{destination_column(key)}, {destination_column(cursor) if cursor else 'NULL'}"
                found[stream] = db.execute(f"SELECT {select} FROM {stream}").fetchall()
        path.unlink()
    rows = clock.rows if system == "discard" else sum(len(v) for v in found.values())
    requests = sim.stats()["requests"] - before
    problems = _check(found, truth) if system != "discard" else []
    return Run(system, wall, cpu, rows, requests, problems, clock.first - started, started + wall - clock.last)


def _fivetran(options: SimOptions, workdir: Path) -> Run:
    result = run_system("duckdb_bound", "syncflow", options, workdir=workdir)  # the SDK runner, as `fivetran debug`
    return Run("fivetran", result.wall, None, result.rows, result.requests, list(result.problems))


def _sink_only(args: argparse.Namespace, systems: Sequence[str], baselines: Mapping[str, Path]) -> None:
    """The DuckDB sinks alone: the same typed pages (from the in-process simulator) upserted into each sink, with a
    checkpoint every `checkpoint_every_rows` rows as the drain takes them; then every row once more (replacements).
    No network and no fetching thread, so the CPU seconds are the sink's own."""
    configuration = {
        "use_mock": "true",
        "mock_scale": str(args.scale),
        "streams": connector_configuration("")["streams"],
    }
    pages = list(syncflow.extract(configuration, progress=False))
    streams = select_streams(resolve_settings(configuration, None), None)
    every = resolve_settings(configuration, None).checkpoint_every_rows
    workdir = Path(tempfile.mkdtemp(prefix="duckdb-sink-"))
    figures: dict[str, list[tuple[float, float]]] = {}
    for repeat in range(args.repeats):
        for system in systems if repeat % 2 == 0 else systems[::-1]:
            for passes in (1, 2):
                path = workdir / f"{system}-{passes}-{repeat}.duckdb"
                cpu, started = _cpu(), time.perf_counter()
                sink = _sink_class(system, baselines)(path, streams)
                for _ in range(passes):
                    since = 0
                    for page in pages:
                        schema, _, table = page.stream.partition(".")
                        for row in page.rows:
                            sink.upsert(schema, table, row)
                        since += len(page.rows)
                        if since >= every:
                            sink.checkpoint({"since": since})
                            since = 0
                    sink.checkpoint({"since": since})
                sink.close()
                figures.setdefault(f"{system} x{passes}", []).append((time.perf_counter() - started, _cpu() - cpu))
                path.unlink()
    rows = sum(len(page.rows) for page in pages)
    for name, runs in figures.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        print(
            f"sink only, {rows} rows, {name:<22} wall median {statistics.median(walls):5.2f} s "
            f"({', '.join(f'{w:.2f}' for w in walls)}), cpu median {statistics.median(cpus):5.2f} s "
            f"({', '.join(f'{c:.2f}' for c in cpus)})",
            flush=True,
        )


def _timeline(args: argparse.Namespace, latency: float) -> None:
    """When each request of one `extract` was in flight (a recording transport): the round trips before the first
    rows, how many requests are in flight over time, and the latency actually observed."""
    import httpx

    log: list[tuple[float, float, str]] = []
    origin = [0.0]

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent = time.perf_counter() - origin[0]
            response = await super().handle_async_request(request)
            await response.aread()
            log.append((sent, time.perf_counter() - origin[0], request.url.path))
            return response

    with SimProcess(SimOptions(scale=args.scale, latency=latency, jitter=0.03 if latency else 0.0)) as sim:
        configuration = {**connector_configuration(sim.url), "max_concurrency": str(args.concurrency)}
        syncflow.list_streams(configuration)
        firsts: dict[str, float] = {}
        origin[0] = time.perf_counter()
        for page in syncflow.extract(configuration, progress=False, transport=Recording()):
            firsts.setdefault(page.stream, time.perf_counter() - origin[0])
        wall = time.perf_counter() - origin[0]
    accelo = sorted(entry for entry in log if entry[2].startswith("/api/v0"))
    token = next(entry for entry in log if "token" in entry[2])
    counts = [entry for entry in accelo if entry[2].endswith("/count")]
    latencies = sorted(end - sent for sent, end, _ in accelo)
    end = max(done for _, done, _ in accelo)

    def in_flight(at: float) -> int:
        return sum(1 for sent, done, _ in accelo if sent <= at < done)

    print(
        f"timeline at {latency * 1000:.0f} ms: wall {wall:.2f} s; token {token[0]:.2f}-{token[1]:.2f} s; "
        f"first count {counts[0][0]:.2f}-{counts[0][1]:.2f} s; "
        f"the other counts from {min(c[0] for c in counts[1:]):.2f} s; "
        f"first Accelo rows at {min(t for k, t in firsts.items() if k.startswith('accelo.')):.2f} s; "
        f"last Accelo response {end:.2f} s; {len(accelo)} Accelo requests, observed latency median "
        f"{latencies[len(latencies) // 2]:.3f} s, p90 {latencies[int(len(latencies) * 0.9)]:.3f} s; "
        f"sum of latencies / {args.concurrency} = {sum(latencies) / args.concurrency:.2f} s",
        flush=True,
    )
    print(
        "  Accelo requests in flight every 0.25 s: " + " ".join(str(in_flight(t / 4)) for t in range(int(end * 4) + 1))
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.duckdb_bound", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latencies", default="0.15,0", help="comma list of seconds per request")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--baseline", action="append", default=[], metavar="NAME=PATH",
        help="another _duckdb.py (e.g. `git show main:src/syncflow/_duckdb.py`) to run as system NAME; repeatable",
    )  # fmt: skip
    parser.add_argument("--sink-only", action="store_true", help="time the DuckDB sinks alone (no network)")
    parser.add_argument("--timeline", action="store_true", help="the request timeline of one extract per latency")
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    baselines = {name: Path(path) for name, _, path in (b.partition("=") for b in args.baseline)}
    if args.sink_only:
        _sink_only(args, [s for s in systems if s not in ("extract", "discard", "fivetran")], baselines)
        return 0
    if args.timeline:
        for latency in (float(x) for x in args.latencies.split(",") if float(x) > 0):
            _timeline(args, latency)
        return 0
    ok = True
    workdir = Path(tempfile.mkdtemp(prefix="duckdb-bound-"))
    expected = sum(expected_rows(args.scale).values())
    for latency in (float(x) for x in args.latencies.split(",")):
        options = SimOptions(scale=args.scale, latency=latency, jitter=0.03 if latency else 0.0)
        bound = network_bound(args.scale, latency, args.concurrency) + PLANNING_ROUND_TRIPS * latency
        runs: dict[str, list[Run]] = {name: [] for name in systems}
        with SimProcess(options) as sim:
            configuration = {**connector_configuration(sim.url), "max_concurrency": str(args.concurrency)}
            truth = sim.ground_truth()
            syncflow.list_streams(configuration)  # imports and the first configuration parse, off the clock
            for repeat in range(args.repeats):
                order = systems if repeat % 2 == 0 else systems[::-1]
                for system in order:
                    run = (
                        _fivetran(options, workdir)
                        if system == "fivetran"
                        else _in_process(system, sim, configuration, truth, workdir, baselines)
                    )
                    runs[system].append(run)
                    ok = ok and not run.problems
                    cpu = f", cpu {run.cpu:5.2f} s" if run.cpu is not None else ""
                    if run.first_rows is not None and run.tail is not None:
                        cpu += f", first rows at {run.first_rows:4.2f} s, tail {run.tail:4.2f} s"
                    print(
                        f"latency {latency * 1000:3.0f} ms  {system:<9} wall {run.wall:6.2f} s{cpu}, "
                        f"{run.rows / run.wall:8.0f} rows/s, {run.rows} rows (of {expected}), {run.requests} requests, "
                        f"{'ok' if not run.problems else 'MISMATCH ' + '; '.join(run.problems)}",
                        flush=True,
                    )
        for name in systems:
            walls = [r.wall for r in runs[name]]
            best = min(walls)
            line = f"latency {latency * 1000:3.0f} ms  {name:<9} best {best:6.2f} s"
            line += f", median {statistics.median(walls):6.2f} s"
            line += f", {expected / best:8.0f} rows/s at best"
            if latency > 0:
                line += f"; bound {bound:.2f} s -> {best / bound:.2f}x"
            print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
