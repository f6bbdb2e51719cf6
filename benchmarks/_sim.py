"""Start `python -m syncflow.sim` on loopback in a subprocess, read its URL, talk to its control endpoints, stop it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from syncflow.sim import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET, AWARDCO_API_KEY
from syncflow.sim._model import DEFAULT_ACCELO_COUNTS
from syncflow.sources._accelo_catalog import STREAM_NAMES

__all__ = [
    "IN_PROCESS_URL", "SimOptions", "SimProcess", "StatsPoller", "expected_pages", "expected_rows",
    "in_process_configuration",
]  # fmt: skip

PAGE_SIZE = 100  # both APIs' maximum page size; every system here asks for it
AWARDCO_USERS_AT_SCALE_1 = 250
START_TIMEOUT = 600.0  # a million rows take ~40 s to generate (longer on a busy machine); a hung start must end
CONTROL_TIMEOUT = 300.0  # a million rows' ground truth takes a while to serialise


@dataclass(frozen=True)
class SimOptions:
    scale: float = 1.0
    latency: float = 0.15
    jitter: float = 0.03
    seed: int = 7
    accelo_rate_limit: int = 1_000_000  # "unlimited" unless a scenario sets a budget
    awardco_rate_limit: int = 1_000_000
    rate_window: float = 3600.0

    def argv(self) -> list[str]:
        return [
            "--host", "127.0.0.1", "--port", "0", "--seed", str(self.seed), "--scale", str(self.scale),
            "--latency", str(self.latency), "--jitter", str(self.jitter),
            "--accelo-rate-limit", str(self.accelo_rate_limit), "--awardco-rate-limit", str(self.awardco_rate_limit),
            "--rate-window", str(self.rate_window),
        ]  # fmt: skip


# Loopback, as the tests configure it (plain http is refused for any other host); with an in-process transport
# (`Simulator.transport()`) nothing is ever sent there.
IN_PROCESS_URL = "http://127.0.0.1:9"


def in_process_configuration(**overrides: str) -> dict[str, str]:
    """A configuration (all strings) for both sources, for a sync given an in-process simulator's transport."""
    return {
        "accelo_deployment": "syncflow-sim", "accelo_client_id": ACCELO_CLIENT_ID,
        "accelo_client_secret": ACCELO_CLIENT_SECRET, "accelo_base_url": IN_PROCESS_URL,
        "awardco_api_key": AWARDCO_API_KEY, "awardco_base_url": IN_PROCESS_URL,
        **overrides,
    }  # fmt: skip


def expected_rows(scale: float) -> dict[str, int]:
    """Rows per table (`accelo.companies`, ..., `awardco.user`) the simulator holds at `scale` (as its CLI rounds)."""
    # The six tables the benchmarks compare systems on (worker.py's `streams`), not the whole catalogue.
    rows = {f"accelo.{name}": round(DEFAULT_ACCELO_COUNTS[name] * scale) for name in STREAM_NAMES}
    rows["awardco.user"] = round(AWARDCO_USERS_AT_SCALE_1 * scale)
    return rows


def expected_pages(scale: float) -> dict[str, int]:
    """Pages of 100 per table: the work any client must fetch at least (ceil(rows / 100), at least one page)."""
    return {table: max(1, -(-rows // PAGE_SIZE)) for table, rows in expected_rows(scale).items()}


@dataclass
class SimProcess:
    """The simulator as a child process; a context manager that always kills it."""

    options: SimOptions
    url: str = ""
    started_in: float = 0.0  # seconds from spawning the simulator to its first line (its data is built by then)
    _proc: subprocess.Popen[str] | None = field(default=None, repr=False)

    def __enter__(self) -> SimProcess:
        started = time.monotonic()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "syncflow.sim", *self.options.argv()],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # uvicorn's warnings would interleave with the report's progress lines
            text=True,
        )
        self.url = self._read_url()
        self.started_in = time.monotonic() - started
        return self

    def _read_url(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        # readline() cannot time out by itself; a daemon thread does the read and we wait on it with a deadline.
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(START_TIMEOUT)
        line = box[0].strip() if box else ""
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"simulator did not start within {START_TIMEOUT:.0f} s (got {line!r})")
        return line

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=CONTROL_TIMEOUT) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/_sim/stats")
        return result

    def ground_truth(
        self, tables: Sequence[str] | None = None, fields: Sequence[str] | None = None
    ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """The simulator's records; `tables` (`accelo.companies`, ...) and `fields` narrow it (a million whole
        records would be gigabytes of JSON, and a check needs only keys and cursors)."""
        query = urllib.parse.urlencode(
            {k: ",".join(v) for k, v in (("tables", tables), ("fields", fields)) if v is not None}
        )
        path = "/_sim/ground_truth" + ("?" + query if query else "")
        result: dict[str, dict[str, list[dict[str, Any]]]] = self._get(path)
        return result


class StatsPoller:
    """Samples /_sim/stats every `interval` seconds in a thread (for the rate-limited scenario's per-window budget)."""

    def __init__(self, sim: SimProcess, interval: float = 0.05) -> None:
        self._sim = sim
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> StatsPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(CONTROL_TIMEOUT)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # A sample missed is a sample missed; the next one counts.
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), self._sim.stats()))
            self._stop.wait(self._interval)
