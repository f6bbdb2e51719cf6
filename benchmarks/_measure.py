"""Run one system against a fresh simulator in a fresh subprocess, and measure it (what every scenario is made of)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from syncflow.sources._accelo_catalog import RESOURCES, STREAM_NAMES

from ._sim import SimOptions, SimProcess, StatsPoller, expected_pages, expected_rows
from .verify import truth_query, verify

__all__ = ["SYNCFLOW_PATHS", "RunResult", "budget_used", "run_system", "run_twice"]

REPO = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT = 900.0  # seconds: far above any expected run, so only a hang trips it
FULL_REFRESH = frozenset(f"accelo.{name}" for name in STREAM_NAMES if RESOURCES[name].cursor is None)
KILL_POLL = 0.2  # seconds between looks at the simulator's request count while waiting to kill a worker
#: syncflow's three ways in: the Fivetran connector through the SDK runner, the notebook's DuckDB, the page iterator.
SYNCFLOW_PATHS = ("syncflow", "to_duckdb", "extract")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class RunResult:
    scenario: str
    system: str
    scale: float
    latency: float
    max_concurrency: int
    expected_rows: int
    rows: int = 0
    wall: float = 0.0
    requests: int = 0
    rate_limited: int = 0
    peak_in_flight: int = 0
    peak_rss: int = 0
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    budget_used: float | None = None  # rate-limited scenario only: fraction of the budget's full windows used
    log: str = ""
    cpu: float = 0.0  # CPU seconds of the worker process (every thread) during the sync
    repeat: int = 0  # which interleaved repeat (the floor scenario)
    measured_at: str = field(default_factory=_now)
    extra: dict[str, Any] = field(default_factory=dict)  # scenario-specific figures (requests per stream, resume)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.wall if self.wall > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": self.rows_per_second}


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # The worker imports `benchmarks` from the repo root whatever the caller's cwd; no proxy may route loopback away.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _run_worker(
    argv: list[str], log_path: Path, timeout: float, kill_when: Callable[[], bool] | None = None
) -> int:
    """The worker's exit status; -9 when it was SIGKILLed at `timeout` or once `kill_when()` (polled) was true."""
    with log_path.open("w", encoding="utf-8") as log:
        # Own session, so a timeout kills the worker and anything it started, not just the worker.
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=_worker_env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        try:
            while kill_when is not None and time.monotonic() < deadline:
                try:
                    return proc.wait(timeout=KILL_POLL)
                except subprocess.TimeoutExpired:
                    if kill_when():
                        raise
            return proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return -9


def budget_used(
    samples: list[tuple[float, dict[str, Any]]], limit: int, window: float, interval: float
) -> float | None:
    """Requests served in the run's full rate windows / (limit x those windows); None if no full window elapsed.

    The simulator's fixed windows start at the first answered request; we see answers as `by_status["200"]` (minus
    the token request) in /_sim/stats samples taken every `interval` s, so the window start is known within one
    interval. The last, partial window is left out: the sync may simply have had less left to do than a window holds.
    """

    def served(sample: dict[str, Any]) -> int:
        return int(sample["by_status"].get("200", 0)) - int(sample["token_requests"])

    series = [(t, served(s)) for t, s in samples]
    first = next((t for t, n in series if n > 0), None)
    if first is None:
        return None
    start = first - interval / 2
    total = series[-1][1]
    last = next(t for t, n in series if n == total)
    full = math.floor((last - start) / window)
    if full < 1:
        return None
    boundary = start + full * window
    at_boundary = max((n for t, n in series if t <= boundary), default=0)
    return at_boundary / (limit * full)


def _new_result(
    scenario: str, system: str, options: SimOptions, sources: str, max_concurrency: int, workdir: Path | None,
    log: str,
) -> tuple[Path, RunResult]:
    """A fresh work directory for one measurement, and its result so far (the rows the chosen sources hold)."""
    base = Path(tempfile.mkdtemp(prefix=f"bench-{scenario}-{system}-", dir=workdir))
    tables = expected_rows(options.scale)
    wanted = [t for t in tables if t.split(".")[0] in sources.split(",")]
    result = RunResult(
        scenario, system, options.scale, options.latency, max_concurrency, sum(tables[t] for t in wanted),
        log=str(base / log),
    )  # fmt: skip
    return base, result


def run_system(
    scenario: str,
    system: str,
    options: SimOptions,
    *,
    max_concurrency: int = 16,
    accelo_per_hour: int = 1_000_000,
    sources: str = "accelo,awardco",
    poll_budget: bool = False,
    workdir: Path | None = None,
    timeout: float = WORKER_TIMEOUT,
) -> RunResult:
    """A fresh simulator, one worker subprocess, then requests/429s from /_sim/stats and a ground-truth check."""
    base, result = _new_result(scenario, system, options, sources, max_concurrency, workdir, "worker.log")
    result_file = base / "result.json"
    with SimProcess(options) as sim:
        result.extra["sim_start_seconds"] = sim.started_in
        before = sim.stats()
        argv = [
            "--system", system, "--url", sim.url, "--workdir", str(base), "--result", str(result_file),
            "--max-concurrency", str(max_concurrency), "--accelo-per-hour", str(accelo_per_hour), "--sources", sources,
        ]  # fmt: skip
        if poll_budget:
            interval = 0.05
            with StatsPoller(sim, interval) as poller:
                code = _run_worker(argv, base / "worker.log", timeout)
            result.budget_used = budget_used(poller.samples, options.accelo_rate_limit, options.rate_window, interval)
        else:
            code = _run_worker(argv, base / "worker.log", timeout)
        after = sim.stats()
        result.requests = after["requests"] - before["requests"]
        result.rate_limited = after["rate_limited"] - before["rate_limited"]
        result.peak_in_flight = after["peak_in_flight"]
        if code != 0 or not result_file.exists():
            result.problems.append(f"worker exited with {code}; see {result.log}")
            return result
        measured = json.loads(result_file.read_text(encoding="utf-8"))
        result.wall = measured["wall"]
        result.cpu = measured.get("cpu", 0.0)
        result.peak_rss = measured["peak_rss"]
        for figure in ("table_writes", "table_write_cpu"):  # the SDK paths only
            if figure in measured:
                result.extra[figure] = measured[figure]
        truth = sim.ground_truth(*truth_query(sources))
    truth = {source: tables_ for source, tables_ in truth.items() if source in sources.split(",")}
    verdict = verify(Path(measured["database"]), measured["layout"], truth, check_cursor=system in SYNCFLOW_PATHS)
    result.rows = verdict.rows
    result.problems.extend(verdict.problems)
    result.ok = verdict.ok
    return result


def _stream_of(endpoint: str) -> str | None:
    """`GET /api/v0/companies` (and `/count`) -> accelo.companies; `GET /api/users` -> awardco.user; else None."""
    method, _, path = endpoint.partition(" ")
    if method != "GET":
        return None
    if path == "/api/users":
        return "awardco.user"
    if path.startswith("/api/v0/"):
        return "accelo." + path.removeprefix("/api/v0/").split("/")[0]
    return None


def _per_stream(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for endpoint, n in after.items():
        stream = _stream_of(endpoint)
        if stream is not None and n - before.get(endpoint, 0):
            out[stream] = out.get(stream, 0) + n - before.get(endpoint, 0)
    return out


def _pages(before: dict[str, int], after: dict[str, int]) -> int:
    """List pages served between two `by_endpoint` snapshots (no `/count`, no token)."""
    return sum(n - before.get(e, 0) for e, n in after.items() if _stream_of(e) and not e.endswith("/count"))


def _saved_state(measured_layout: str, base: Path) -> dict[str, Any]:
    """The state a killed run left behind: the SDK runner's state.json, or the one committed in to_duckdb's file."""
    if measured_layout == "sdk":
        path = base / "project" / "files" / "state.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    import duckdb

    database = base / "syncflow.duckdb"
    if not database.exists():
        return {}
    # Read-write on purpose: it replays the WAL the killed writer left, as the next run's open would.
    with duckdb.connect(str(database)) as con:
        row = con.execute("SELECT state FROM _syncflow.state WHERE id = 1").fetchone()
    return json.loads(row[0]) if row else {}


def _completed(state: dict[str, Any]) -> list[str]:
    """Streams whose first full read was over when the state was saved: swept once, no sweep under way."""
    streams = state.get("streams", {})
    return sorted(name for name, entry in streams.items() if "swept" in entry and "sweep" not in entry)


def run_twice(
    scenario: str,
    system: str,
    options: SimOptions,
    *,
    kill_after: float | None,
    kill_at_pages: float | None = None,
    sources: str = "accelo,awardco",
    max_concurrency: int = 16,
    checkpoint_every_rows: int = 0,
    workdir: Path | None = None,
    timeout: float = WORKER_TIMEOUT,
) -> RunResult:
    """One simulator, two runs of `system` in one workdir: the first SIGKILLed (with its process group) after
    `kill_after` seconds or once it has requested `kill_at_pages` of the pages there are (whichever is first) —
    or, with neither, left to finish —, the second resuming from the state the first saved.

    The result's wall, CPU, RSS and requests are the second run's; `extra` holds the first run's figures, the
    requests per stream of each run, the streams complete when the first run ended, and those the second run read
    again (more than one page and a count: a refetch). The ground truth is checked after the second run."""
    assert system in ("syncflow", "to_duckdb"), "only syncflow's resumable paths"
    base, result = _new_result(scenario, system, options, sources, max_concurrency, workdir, "worker-2.log")
    argv = [
        "--system", system, "--workdir", str(base), "--max-concurrency", str(max_concurrency), "--sources", sources,
        "--checkpoint-every-rows", str(checkpoint_every_rows),
    ]  # fmt: skip
    with SimProcess(options) as sim:
        argv += ["--url", sim.url]
        sim_start = sim.started_in
        s0 = sim.stats()
        first_result = base / "result-1.json"
        kill_when = None
        if kill_at_pages is not None:
            threshold = kill_at_pages * sum(
                n for t, n in expected_pages(options.scale).items() if t.split(".")[0] in sources.split(",")
            )

            def kill_when() -> bool:
                # Pages only: the `/count`s (and the token) are not part of the work the kill is placed in.
                return _pages(s0["by_endpoint"], sim.stats()["by_endpoint"]) >= threshold

        started = time.monotonic()
        code = _run_worker(
            [*argv, "--result", str(first_result)], base / "worker-1.log", kill_after or timeout, kill_when
        )
        killed_at = time.monotonic() - started
        s1 = sim.stats()
        interrupted = kill_after is not None or kill_at_pages is not None
        killed = interrupted and code == -9
        if not killed and (code != 0 or not first_result.exists()):
            result.problems.append(f"first run exited with {code}; see {base / 'worker-1.log'}")
            return result
        layout = "sdk" if system == "syncflow" else "duckdb"
        completed = _completed(_saved_state(layout, base))
        second_result = base / "result.json"
        code = _run_worker([*argv, "--result", str(second_result)], base / "worker-2.log", timeout)
        s2 = sim.stats()
        if code != 0 or not second_result.exists():
            result.problems.append(f"second run exited with {code}; see {result.log}")
            return result
        measured = json.loads(second_result.read_text(encoding="utf-8"))
        truth = sim.ground_truth(*truth_query(sources))
    second = _per_stream(s1["by_endpoint"], s2["by_endpoint"])
    pages = sum(n for t, n in expected_pages(options.scale).items() if t.split(".")[0] in sources.split(","))
    first_pages = _pages(s0["by_endpoint"], s1["by_endpoint"])
    second_pages = _pages(s1["by_endpoint"], s2["by_endpoint"])
    # A full-refresh stream (no cursor: Accelo staff) is read whole by every sync, by design; the others must not
    # be read again once complete: an incremental look is one page (and at most a count).
    refetched = {s: n for s, n in second.items() if s in completed and s not in FULL_REFRESH and n > 2}
    result.wall, result.cpu, result.peak_rss = measured["wall"], measured.get("cpu", 0.0), measured["peak_rss"]
    result.requests = s2["requests"] - s1["requests"]
    result.rate_limited = s2["rate_limited"] - s0["rate_limited"]
    result.peak_in_flight = s2["peak_in_flight"]
    result.extra = {
        "sim_start_seconds": sim_start,
        "first_killed_after": killed_at if killed else None,
        "first_wall": None if killed else json.loads(first_result.read_text(encoding="utf-8"))["wall"],
        "first_requests": s1["requests"] - s0["requests"],
        "first_requests_by_stream": _per_stream(s0["by_endpoint"], s1["by_endpoint"]),
        "second_requests_by_stream": second,
        "second_token_requests": s2["token_requests"] - s1["token_requests"],
        "completed_before_second": completed,
        # Pages fetched by both runs: those in flight or queued, not yet committed, when the first was killed (plus
        # the full-refresh tables, read whole each time).
        "pages": pages, "first_pages": first_pages, "second_pages": second_pages,
        "pages_read_twice": first_pages + second_pages - pages,
        "refetched": refetched,
    }
    if interrupted and not killed:
        result.problems.append("the first run finished before it was killed: nothing was resumed")
    if refetched:
        result.problems.append(f"the second run read completed streams again: {refetched}")
    truth = {source: tables_ for source, tables_ in truth.items() if source in sources.split(",")}
    verdict = verify(Path(measured["database"]), measured["layout"], truth, check_cursor=True)
    result.rows = verdict.rows
    result.problems.extend(verdict.problems)
    result.ok = not result.problems
    return result
