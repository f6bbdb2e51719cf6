"""Keeps the benchmark suite (`benchmarks/`, `make bench`) working: tiny data, loopback only.

No timing assertions: timings belong to the benchmark (BENCHMARKS.md). This checks the machinery: the simulator
starts and stops, each of syncflow's three paths (and the SDK floor) runs in its own subprocess, its output equals
the simulator's ground truth, a killed run resumes, and the report's ratios, tables and chart come out of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("requests", reason="the benchmark's peers need the 'bench' extra")
pytest.importorskip("matplotlib", reason="the benchmark's charts need the 'bench' extra")

# `benchmarks` lives at the repository root, next to `tests`; pytest only puts `tests` on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._measure import RunResult, budget_used, run_system, run_twice
from benchmarks._sim import SimOptions, expected_pages, expected_rows
from benchmarks.report import ratios, render, to_duckdb_bound
from benchmarks.run import PLANNING_ROUND_TRIPS, network_bound

TINY = SimOptions(scale=0.1, latency=0.0, jitter=0.0)
# One worker runs this module under `make test` (pytest-xdist): `results` (three SDK-runner subprocesses) is built once.
pytestmark = pytest.mark.xdist_group("benchmark_smoke")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[RunResult]:
    workdir = tmp_path_factory.mktemp("bench")
    return [
        run_system("zero_latency", system, TINY, workdir=workdir, timeout=60)
        # The connector's own worker run is in test_benchmark_tools; here the other two paths and the SDK floor.
        for system in ("extract", "to_duckdb", "bare_upsert")
    ]


def test_every_path_writes_exactly_the_ground_truth(results: list[RunResult]) -> None:
    total = sum(expected_rows(TINY.scale).values())
    for result in results:
        assert result.problems == [], (result.system, result.log)
        assert result.ok
        assert result.rows == result.expected_rows == total
        assert result.wall > 0 and result.peak_rss > 0


def test_requests_are_counted_from_the_simulator(results: list[RunResult]) -> None:
    by_system = {r.system: r for r in results}
    pages = sum(expected_pages(TINY.scale).values())
    # syncflow's paths fetch at least every page (plus a token); the bare loop makes no API request at all.
    for path in ("extract", "to_duckdb"):
        assert by_system[path].requests >= pages + 1
        assert by_system[path].cpu > 0
    assert by_system["bare_upsert"].requests == 0
    assert all(r.rate_limited == 0 for r in results)


def test_a_killed_run_resumes_to_the_ground_truth_without_rereading(tmp_path: Path) -> None:
    # Slow enough (2 in flight, 300 ms a page) that the kill lands about 3 s in, 70 % through Accelo's 32 pages, with
    # a checkpoint every 100 rows, so that what was written before the kill is in the saved state. (Killed 1.5 s in,
    # on a loaded machine the kill sometimes came before the sink's first commit: the rerun then started over.)
    slow = SimOptions(scale=2.0, latency=0.3, jitter=0.0)
    result = run_twice("scale_1m", "to_duckdb", slow, kill_after=None, kill_at_pages=0.7, sources="accelo",
                       max_concurrency=2, checkpoint_every_rows=100, workdir=tmp_path, timeout=90)  # fmt: skip
    assert result.problems == [], result.log
    assert result.extra["first_killed_after"] is not None  # it really was killed, and then resumed
    assert result.rows == result.expected_rows
    assert result.extra["refetched"] == {}
    # The second run costs less than a whole sync (the token, a count per table, every page): it resumed from what
    # the first had committed rather than starting over.
    pages = {t: n for t, n in expected_pages(2.0).items() if t.startswith("accelo.")}
    assert result.requests < 1 + len(pages) + sum(pages.values())


def test_report_ratios_and_chart_render(results: list[RunResult], tmp_path: Path) -> None:
    info = {name: {"seconds": 1.0, "measured_at": "now", "quick": True, "plan": {}}
            for name in ("zero_latency", "floor")}
    floor = [_run("syncflow", 0, 0.15, 12.0, 11.0), _run("bare_upsert", 0, 0.15, 10.0, 10.0)]
    markdown = render([*results, *floor], info, charts=tmp_path, out=tmp_path / "B.md")
    assert "## Targets (issue 16)" in markdown and "## Machine" in markdown
    assert "| fivetran debug / bare op.upsert floor, 150 ms (wall) | ≤ 1.1 | 1.20 |" in markdown
    assert "| extract |" in markdown and "| to_duckdb |" in markdown and "| bare_upsert |" in markdown
    assert (tmp_path / "ratios.png").stat().st_size > 0


def _run(system: str, repeat: int, latency: float, wall: float, cpu: float) -> RunResult:
    return RunResult("floor", system, 20.0, latency, 16, 100, rows=100, wall=wall, cpu=cpu, repeat=repeat, ok=True)


def test_floor_ratio_is_the_median_of_interleaved_pairs() -> None:
    runs = [
        _run("syncflow", 0, 0.15, 12.0, 11.0), _run("bare_upsert", 0, 0.15, 10.0, 10.0),
        _run("bare_upsert", 1, 0.15, 8.0, 8.0), _run("syncflow", 1, 0.15, 12.0, 12.0),
        _run("syncflow", 2, 0.15, 11.0, 11.0), _run("bare_upsert", 2, 0.15, 10.0, 10.0),
        _run("syncflow", 0, 0.0, 10.0, 10.0), _run("bare_upsert", 0, 0.0, 9.0, 9.0),
    ]  # fmt: skip
    found = {r.label: r for r in ratios(runs)}
    at_150 = found["fivetran debug / bare op.upsert floor, 150 ms (wall)"]
    assert at_150.value == pytest.approx(1.2)  # per pair 1.2, 1.5, 1.1: the median, not the mean or the best
    assert at_150.met is False and "1.10-1.50" in at_150.detail
    at_0 = found["fivetran debug rows/s / bare loop rows/s, 0 ms"]
    assert at_0.value == pytest.approx(0.9) and at_0.met is False


def test_extract_is_compared_with_the_faster_of_the_other_two_paths() -> None:
    def path(system: str, wall: float) -> RunResult:
        return RunResult("zero_latency", system, 20.0, 0.0, 16, 1000, rows=1000, wall=wall, ok=True)

    found = {r.label: r for r in ratios([path("extract", 1.0), path("to_duckdb", 2.0), path("syncflow", 4.0)])}
    fastest = found["extract rows/s / fastest other path, 0 ms"]
    assert fastest.value == pytest.approx(2.0) and fastest.met is True


def test_network_bound_is_the_slower_apis_pages_times_latency_over_concurrency() -> None:
    pages = expected_pages(1.0)
    accelo = sum(n for table, n in pages.items() if table.startswith("accelo."))
    assert network_bound(1.0, 0.15, 16) == pytest.approx(accelo * 0.15 / 16)
    assert to_duckdb_bound(1.0, 0.15, 16) == pytest.approx(accelo * 0.15 / 16 + PLANNING_ROUND_TRIPS * 0.15)


def test_budget_used_counts_full_windows_only() -> None:
    def sample(t: float, served: int) -> tuple[float, dict[str, object]]:
        return t, {"by_status": {"200": served + 1}, "token_requests": 1}

    # 10 per 1 s window, all used in two full windows, then 3 more in a last, partial window (left out).
    samples = [sample(0.0, 0), sample(0.1, 5), sample(0.5, 10), sample(1.2, 20), sample(2.2, 23), sample(2.5, 23)]
    assert budget_used(samples, limit=10, window=1.0, interval=0.1) == pytest.approx(1.0)
    assert budget_used(samples[:3], limit=10, window=1.0, interval=0.1) is None
