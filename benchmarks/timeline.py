"""Where `to_duckdb`'s time goes at 150 ms: `python -m benchmarks.timeline --scale 20 --repeats 1`.

A benchmark-only recording transport notes each request's send and end (body read) on the event-loop thread, with
its API, stream and kind (`count`, `page` = by page number, `keyset`, `token`); the DuckDB sink's checkpoints are
timed with the thread they ran on; the simulator's CPU (its process) and this process's CPU per thread are read
around the call. It prints, per API: the round trips before the first data page, requests in flight every 0.1 s,
the slot-seconds left idle (16 x wall less the seconds requests were in flight) split into ramp-up, middle and tail,
each stream's first/last request and longest keyset chain; and what the sink cost on which thread.

Nothing here changes syncflow: the transport is passed through `to_duckdb(transport=...)` and the sink is timed by
wrapping `DuckDBSink.checkpoint` in this process only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

import syncflow
from syncflow import _duckdb

from ._sim import SimOptions, SimProcess
from .run import network_bound
from .worker import connector_configuration

__all__ = ["main"]

KINDS = ("count", "first", "page", "keyset")


@dataclass
class Request:
    sent: float
    done: float
    api: str
    stream: str
    kind: str


def _classify(request: httpx.Request) -> tuple[str, str, str]:
    path = request.url.path
    if "token" in path:
        return "accelo", "token", "token"
    query = parse_qs(request.url.query.decode())
    if path.startswith("/api/v0/"):
        table = path.removeprefix("/api/v0/").split("/")[0]
        api = "accelo"
    else:
        table = path.rstrip("/").split("/")[-1]
        api = "awardco"
    if path.endswith("/count"):
        kind = "count"
    elif "id_greater_than" in "".join(query.get("_filters", [])):
        kind = "keyset"
    elif "_page" in query or "page" in query:
        kind = "page"
    else:
        kind = "first"
    return api, f"{api}.{table}", kind


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process (name from /proc), user + system."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[f"{name}:{tid}"] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _report(log: list[Request], wall: float, concurrency: int, sink: list[tuple[float, float, str]]) -> None:
    for api in ("accelo", "awardco"):
        mine = sorted((r for r in log if r.api == api and r.kind != "token"), key=lambda r: r.sent)
        if not mine:
            continue
        end = max(r.done for r in mine)
        step = 0.1
        flights = [sum(1 for r in mine if r.sent <= t * step < r.done) for t in range(int(end / step) + 1)]
        busy = sum(r.done - r.sent for r in mine)
        first_keyset = min((r.sent for r in mine if r.kind == "keyset"), default=end)
        full_from = next((i * step for i, n in enumerate(flights) if n >= concurrency - 1), None)
        last_full = max((i * step for i, n in enumerate(flights) if n >= concurrency - 1), default=None)
        latencies = sorted(r.done - r.sent for r in mine)
        kinds = ", ".join(f"{k} {sum(1 for r in mine if r.kind == k)}" for k in KINDS)
        print(
            f"{api}: {len(mine)} requests ({kinds}); "
            f"first sent {mine[0].sent:.2f} s, first keyset {first_keyset:.2f} s, last done {end:.2f} s; "
            f"latency median {latencies[len(latencies) // 2]:.3f} p90 {latencies[int(len(latencies) * 0.9)]:.3f}; "
            f"sum of latencies / {concurrency} = {busy / concurrency:.2f} s"
        )
        if full_from is not None and last_full is not None:
            ramp = sum(concurrency - n for n in flights[: int(full_from / step)]) * step
            steady = flights[int(full_from / step) : int(last_full / step) + 1]
            middle = sum(max(0, concurrency - n) for n in steady) * step
            tail = sum(concurrency - n for n in flights[int(last_full / step) + 1 :]) * step
            print(
                f"  idle slot-seconds: ramp-up to {full_from:.1f} s {ramp:.2f}, middle {middle:.2f}, "
                f"tail after {last_full:.1f} s {tail:.2f}  (/ {concurrency} = {ramp / concurrency:.2f} + "
                f"{middle / concurrency:.2f} + {tail / concurrency:.2f} s)"
            )
        print("  in flight every 0.1 s: " + " ".join(str(n) for n in flights))
        for stream in sorted({r.stream for r in mine}):
            rs = [r for r in mine if r.stream == stream]
            kinds = ", ".join(f"{k} {sum(1 for r in rs if r.kind == k)}" for k in KINDS if any(r.kind == k for r in rs))
            print(
                f"    {stream:<20} {len(rs):3d} requests, {rs[0].sent:5.2f} .. {max(r.done for r in rs):5.2f} s"
                f" ({kinds})"
            )
    if sink:
        threads = {name for _, _, name in sink}
        for started, ended, _ in sink:
            print(f"    checkpoint {started:5.2f} .. {ended:5.2f} s ({ended - started:.2f} s)")
        print(
            f"sink: {len(sink)} checkpoints, {sum(e - s for s, e, _ in sink):.2f} s inside them "
            f"on {', '.join(threads)}; "
            f"last ended {max(e for _, e, _ in sink):.2f} s (wall {wall:.2f} s)"
        )


def run_once(sim: SimProcess, configuration: dict[str, str], system: str, workdir: Path) -> None:
    log: list[Request] = []
    sink_log: list[tuple[float, float, str]] = []
    origin = time.perf_counter()

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent = time.perf_counter() - origin
            response = await super().handle_async_request(request)
            await response.aread()
            api, stream, kind = _classify(request)
            log.append(Request(sent, time.perf_counter() - origin, api, stream, kind))
            return response

    checkpoint = _duckdb.DuckDBSink.checkpoint

    def timed(self: Any, state: Any) -> None:
        started = time.perf_counter() - origin
        checkpoint(self, state)
        sink_log.append((started, time.perf_counter() - origin, threading.current_thread().name))

    assert sim._proc is not None
    sim_cpu = _process_cpu(sim._proc.pid)
    cpu = _thread_cpu()
    # The event loop's thread ends with the call: a sampler keeps the last CPU figure of every thread it saw.
    seen: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            seen.update(_thread_cpu())

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    sampler.start()
    init = _duckdb.DuckDBSink.__init__

    def timed_init(self: Any, *a: Any, **k: Any) -> None:
        started = time.perf_counter() - origin
        init(self, *a, **k)
        print(f"  DuckDBSink() {started:.2f} .. {time.perf_counter() - origin:.2f} s")

    _duckdb.DuckDBSink.__init__ = timed_init  # type: ignore[method-assign]
    _duckdb.DuckDBSink.checkpoint = timed  # type: ignore[method-assign]
    try:
        origin = time.perf_counter()
        if system == "to_duckdb":
            path = workdir / f"t{time.monotonic_ns()}.duckdb"
            syncflow.to_duckdb(configuration, path, progress=False, transport=Recording())
        else:
            for _ in syncflow.extract(configuration, progress=False, transport=Recording()):
                pass
        wall = time.perf_counter() - origin
    finally:
        _duckdb.DuckDBSink.checkpoint = checkpoint  # type: ignore[method-assign]
        _duckdb.DuckDBSink.__init__ = init  # type: ignore[method-assign]
        stop.set()
        sampler.join()
    after = {**seen, **_thread_cpu()}
    sim_cpu = _process_cpu(sim._proc.pid) - sim_cpu
    token = [r for r in log if r.kind == "token"]
    print(
        f"== {system}: wall {wall:.2f} s; token {token[0].sent:.2f}-{token[0].done:.2f} s; "
        f"simulator CPU {sim_cpu:.2f} s"
    )
    print(
        "  this process's CPU by thread: "
        + ", ".join(f"{k} {v - cpu.get(k, 0.0):.2f}" for k, v in after.items() if v - cpu.get(k, 0.0) >= 0.01)
    )
    _report(log, wall, int(configuration["max_concurrency"]), sink_log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timeline", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=20.0)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--systems", default="to_duckdb,extract")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="timeline-"))
    bound = network_bound(args.scale, args.latency, args.concurrency)
    print(f"network bound {bound:.2f} s + one latency {args.latency:.2f} s = {bound + args.latency:.2f} s")
    with SimProcess(SimOptions(scale=args.scale, latency=args.latency, jitter=0.03 if args.latency else 0.0)) as sim:
        configuration = {**connector_configuration(sim.url), "max_concurrency": str(args.concurrency)}
        syncflow.list_streams(configuration)
        for _ in range(args.repeats):
            for system in args.systems.split(","):
                run_once(sim, configuration, system, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
