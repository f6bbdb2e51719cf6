"""Keeps the benchmark suite (`benchmarks/`, `make bench`) working: tiny data, no latency, loopback only.

No timing assertions: timings belong to the benchmark (BENCHMARKS.md). This checks the machinery: the simulator
starts and stops, each system runs in its own subprocess through the SDK runner, its output equals the simulator's
ground truth, and the report and charts render.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("requests", reason="the benchmark's peers need the 'bench' extra")
pytest.importorskip("matplotlib", reason="the benchmark's charts need the 'bench' extra")

# `benchmarks` lives at the repository root, next to `tests`; pytest only puts `tests` on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._measure import RunResult, budget_used, run_system
from benchmarks._sim import SimOptions, expected_pages, expected_rows
from benchmarks.report import render
from benchmarks.run import Plan, network_bound

TINY = SimOptions(scale=0.1, latency=0.0, jitter=0.0)
# One worker runs this module under `make test` (pytest-xdist): `results` (three SDK-runner subprocesses) is built once.
pytestmark = pytest.mark.xdist_group("benchmark_smoke")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[RunResult]:
    workdir = tmp_path_factory.mktemp("bench")
    return [
        run_system("clean", system, TINY, workdir=workdir, timeout=60)
        for system in ("syncflow", "sequential", "bare_upsert")
    ]


def test_every_system_writes_exactly_the_ground_truth(results: list[RunResult]) -> None:
    total = sum(expected_rows(TINY.scale).values())
    for result in results:
        assert result.problems == [], (result.system, result.log)
        assert result.ok
        assert result.rows == result.expected_rows == total
        assert result.wall > 0 and result.peak_rss > 0


def test_requests_are_counted_from_the_simulator(results: list[RunResult]) -> None:
    by_system = {r.system: r for r in results}
    pages = sum(expected_pages(TINY.scale).values())
    # The peers fetch at least every page (plus a token); the bare loop makes no API request at all.
    assert by_system["sequential"].requests >= pages + 1
    assert by_system["syncflow"].requests >= pages + 1
    assert by_system["bare_upsert"].requests == 0
    assert all(r.rate_limited == 0 for r in results)


def test_report_and_charts_render(results: list[RunResult], tmp_path: Path) -> None:
    markdown = render(results, Plan.quick(), quick=True, elapsed=1.0, charts=tmp_path, out=tmp_path / "B.md")
    assert "## Targets" in markdown and "## Machine" in markdown
    assert "syncflow" in markdown and "bare_upsert" in markdown
    assert (tmp_path / "wall_time.png").stat().st_size > 0


def test_network_bound_is_the_slower_apis_pages_times_latency_over_concurrency() -> None:
    pages = expected_pages(1.0)
    accelo = sum(n for table, n in pages.items() if table.startswith("accelo."))
    assert network_bound(1.0, 0.15, 16) == pytest.approx(accelo * 0.15 / 16)


def test_budget_used_counts_full_windows_only() -> None:
    def sample(t: float, served: int) -> tuple[float, dict[str, object]]:
        return t, {"by_status": {"200": served + 1}, "token_requests": 1}

    # 10 per 1 s window, all used in two full windows, then 3 more in a last, partial window (left out).
    samples = [sample(0.0, 0), sample(0.1, 5), sample(0.5, 10), sample(1.2, 20), sample(2.2, 23), sample(2.5, 23)]
    assert budget_used(samples, limit=10, window=1.0, interval=0.1) == pytest.approx(1.0)
    assert budget_used(samples[:3], limit=10, window=1.0, interval=0.1) is None
