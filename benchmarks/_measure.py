"""Run one system against a fresh simulator in a fresh subprocess, and measure it (what every scenario is made of)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._sim import SimOptions, SimProcess, StatsPoller, expected_rows
from .verify import verify

__all__ = ["RunResult", "budget_used", "run_system"]

REPO = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT = 900.0  # seconds: far above any expected run, so only a hang trips it


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


def _run_worker(argv: list[str], log_path: Path, timeout: float) -> int:
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
        try:
            return proc.wait(timeout=timeout)
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
    base = Path(tempfile.mkdtemp(prefix=f"bench-{scenario}-{system}-", dir=workdir))
    tables = expected_rows(options.scale)
    wanted = [t for t in tables if t.split(".")[0] in sources.split(",")]
    result = RunResult(
        scenario, system, options.scale, options.latency, max_concurrency, sum(tables[t] for t in wanted),
        log=str(base / "worker.log"),
    )  # fmt: skip
    result_file = base / "result.json"
    with SimProcess(options) as sim:
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
        result.peak_rss = measured["peak_rss"]
        truth = sim.ground_truth()
    truth = {source: tables_ for source, tables_ in truth.items() if source in sources.split(",")}
    verdict = verify(Path(measured["database"]), measured["layout"], truth, check_cursor=system == "syncflow")
    result.rows = verdict.rows
    result.problems.extend(verdict.problems)
    result.ok = verdict.ok
    return result
