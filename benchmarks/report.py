"""BENCHMARKS.md and the two charts, from a list of `RunResult`s."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ._measure import RunResult
from ._sim import expected_pages

__all__ = ["machine", "ratios", "render"]

PACKAGES = (
    "syncflow", "fivetran-connector-sdk", "httpx", "httpcore", "sniffio", "anyio", "duckdb", "dlt", "requests",
    "uvicorn", "matplotlib",
)  # fmt: skip
# Issue 16's targets.
TARGET_FLOOR = 1.10  # fivetran debug wall / bare op.upsert loop wall, 150 ms
TARGET_DRAIN = 0.95  # fivetran debug rows/s / bare loop rows/s, zero latency
TARGET_NETWORK = 1.30  # to_duckdb in-process time / network bound (+ planning round trips)
TARGET_BUDGET = 0.98  # budget used under a binding budget, with zero 429s
TARGET_RSS_GROWTH = 0.10  # syncflow's own peak RSS at 1M rows vs 100k
HOURLY_BUDGET = 5000  # Accelo's documented requests per hour, for the projection


def machine() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical CPUs (`nproc`); RAM {ram}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- Packages: {', '.join(versions)}",
    ]


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}"


def _table(rows: Sequence[RunResult], bound: float | None = None, extra: str = "") -> list[str]:
    lines = [
        "| system | rows | wall s | rows/s | x bound | requests | 429s | peak in flight | peak RSS MiB "
        "| equals ground truth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = f"{r.wall / bound:.2f}" if bound and r.wall else "-"
        truth = "yes" if r.ok else "NO: " + "; ".join(r.problems)
        name = r.system + (f" (c={r.max_concurrency})" if r.scenario == "concurrency" else "")
        resumed = r.extra.get("kind") == "kill_resume"
        name += " (killed, resumed)" if resumed else ""
        # A resumed run's table holds every row, but the run wrote only what the killed one had not committed.
        rate = "-" if resumed else f"{r.rows_per_second:,.0f}"
        lines.append(
            f"| {name} | {r.rows} | {r.wall:.2f} | {rate} | {ratio} | {r.requests} | "
            f"{r.rate_limited} | {r.peak_in_flight} | {_mib(r.peak_rss)} | {truth} |"
        )
    if extra:
        lines.append(extra)
    return lines


@dataclass
class Ratio:
    """One of issue 16's figures as a ratio from one run, with its target."""

    label: str
    value: float | None
    target: float
    higher_is_better: bool
    detail: str
    scenario: str

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    @property
    def goal(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.target:g}"


def _spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def _writes(result: RunResult) -> str:
    if "table_writes" not in result.extra:
        return "-"
    return f"{result.extra['table_writes']} ({result.extra.get('table_write_cpu', 0.0):.2f})"


def _floor_pairs(results: Sequence[RunResult], latency: float) -> list[tuple[RunResult, RunResult]]:
    """(syncflow, bare_upsert) per repeat of the floor scenario at `latency`, both runs correct."""
    runs = [r for r in results if r.scenario == "floor" and r.latency == latency and r.ok and r.wall]
    pairs = []
    for repeat in sorted({r.repeat for r in runs}):
        sync = next((r for r in runs if r.repeat == repeat and r.system == "syncflow"), None)
        bare = next((r for r in runs if r.repeat == repeat and r.system == "bare_upsert"), None)
        if sync and bare:
            pairs.append((sync, bare))
    return pairs


def _first(results: Sequence[RunResult], scenario: str, system: str, kind: str | None = None) -> RunResult | None:
    return next(
        (
            r
            for r in results
            if r.scenario == scenario and r.system == system and r.wall and r.extra.get("kind") == kind
        ),
        None,
    )


def to_duckdb_bound(scale: float, latency: float, concurrency: int = 16) -> float:
    """The network bound plus the round trips before the first page (token, planning)."""
    from .run import PLANNING_ROUND_TRIPS, network_bound

    return network_bound(scale, latency, concurrency) + PLANNING_ROUND_TRIPS * latency


def ratios(results: Sequence[RunResult]) -> list[Ratio]:
    """Every figure of issue 16 that the results answer, each a ratio of runs from the same invocation."""
    from .run import LATENCY

    out: list[Ratio] = []
    pairs = _floor_pairs(results, LATENCY)
    if pairs:
        wall = [s.wall / b.wall for s, b in pairs]
        cpu = [s.cpu / b.cpu for s, b in pairs if b.cpu]
        out.append(Ratio(
            "fivetran debug / bare op.upsert floor, 150 ms (wall)", statistics.median(wall), TARGET_FLOOR, False,
            f"median (range) of {len(pairs)} interleaved pairs: wall {_spread(wall)}; CPU {_spread(cpu)}", "floor",
        ))  # fmt: skip
    pairs = _floor_pairs(results, 0.0)
    if pairs:
        share = [b.wall / s.wall for s, b in pairs]  # same rows: rows/s share = inverse wall ratio
        cpu = [s.cpu / b.cpu for s, b in pairs if b.cpu]
        out.append(Ratio(
            "fivetran debug rows/s / bare loop rows/s, 0 ms", statistics.median(share), TARGET_DRAIN, True,
            f"median (range) of {len(pairs)} interleaved pairs: {_spread(share, '{:.0%}')} of the bare loop's rows/s "
            f"({statistics.median([s.rows_per_second for s, _ in pairs]):,.0f} vs "
            f"{statistics.median([b.rows_per_second for _, b in pairs]):,.0f}); CPU syncflow / bare {_spread(cpu)}",
            "floor",
        ))  # fmt: skip
    duck = _first(results, "clean", "to_duckdb")
    if duck and duck.ok:
        bound = to_duckdb_bound(duck.scale, LATENCY, duck.max_concurrency)
        out.append(Ratio(
            "to_duckdb (in-process) / network bound, 150 ms", duck.wall / bound, TARGET_NETWORK, False,
            f"{duck.wall:.2f} s vs {bound:.2f} s (slower API's pages x 0.15 s / {duck.max_concurrency} + token and "
            "planning round trips)", "clean",
        ))  # fmt: skip
        dlt = _first(results, "clean", "dlt")
        if dlt and dlt.ok:
            out.append(Ratio(
                "dlt rest_api / to_duckdb, 150 ms (wall; keep ahead)", dlt.wall / duck.wall, 1.0, True,
                f"dlt {dlt.wall:.2f} s, to_duckdb {duck.wall:.2f} s (each its own process's sync time)", "clean",
            ))  # fmt: skip
    paths = {name: _first(results, "zero_latency", name) for name in ("extract", "to_duckdb", "syncflow")}
    if all(r is not None and r.ok for r in paths.values()):
        rates = {name: r.rows_per_second for name, r in paths.items() if r is not None}
        others = max(rates["to_duckdb"], rates["syncflow"])
        out.append(Ratio(
            "extract rows/s / fastest other path, 0 ms", rates["extract"] / others, 1.0, True,
            f"extract {rates['extract']:,.0f}, to_duckdb {rates['to_duckdb']:,.0f}, fivetran debug "
            f"{rates['syncflow']:,.0f} rows/s", "zero_latency",
        ))  # fmt: skip
    again = next((r for r in results if r.scenario == "requests" and r.system == "syncflow" and r.ok), None)
    if again:
        per_stream = again.extra.get("second_requests_by_stream", {})
        streams = len(expected_pages(again.scale)) if again.extra.get("sources") is None else len(per_stream)
        ideal = streams + 1
        out.append(Ratio(
            "incremental, nothing new: requests / (streams + token)", again.requests / ideal, 1.0, False,
            f"{again.requests} requests ({again.requests - again.extra.get('second_token_requests', 0)} data + "
            f"{again.extra.get('second_token_requests', 0)} token) for {streams} streams", "requests",
        ))  # fmt: skip
    rate = next((r for r in results if r.scenario == "rate_limited" and r.system == "syncflow"), None)
    if rate and rate.budget_used is not None:
        out.append(Ratio(
            "budget used under a binding budget (0 x 429 required)",
            rate.budget_used if rate.rate_limited == 0 else 0.0, TARGET_BUDGET, True,
            f"{rate.budget_used:.1%} of the full windows' budget, {rate.rate_limited} x 429", "rate_limited",
        ))  # fmt: skip
    probes = sorted((r for r in results if r.scenario == "scale_1m" and r.system == "memory_probe" and r.ok),
                    key=lambda r: r.rows)  # fmt: skip
    if len(probes) >= 2 and probes[0].peak_rss:
        small, big = probes[0], probes[-1]
        out.append(Ratio(
            f"syncflow's own peak RSS, {big.rows:,} / {small.rows:,} rows", big.peak_rss / small.peak_rss,
            1 + TARGET_RSS_GROWTH, False,
            f"{_mib(small.peak_rss)} → {_mib(big.peak_rss)} MiB (discarding sink, no SDK runner)", "scale_1m",
        ))  # fmt: skip
    return out


def _scale_checks(results: Sequence[RunResult]) -> list[str]:
    """Targets rows for the million-row runs that are yes/no rather than ratios."""
    rows = []
    for system, name in (("to_duckdb", "to_duckdb"), ("syncflow", "fivetran debug")):
        # Failed runs too (no wall time): a run that did not complete must show here as such.
        runs = [r for r in results if r.scenario == "scale_1m" and r.system == system]
        full = next((r for r in runs if r.extra.get("kind") == "full"), None)
        resumed = next((r for r in runs if r.extra.get("kind") == "kill_resume"), None)
        if full and full.ok:
            rows.append(
                f"| {name}: {full.expected_rows:,} rows complete | {full.rows:,} rows equal the ground truth: yes; "
                f"{full.wall:.0f} s, {full.rows_per_second:,.0f} rows/s | {_met(True)} |"
            )
        elif full:
            rows.append(
                f"| {name}: {full.expected_rows:,} rows complete, uninterrupted | did not: "
                f"{'; '.join(full.problems)} (after {full.requests:,} requests) | {_met(False)} |"
            )
        if resumed:
            extra = resumed.extra
            completed = [s for s in extra.get("completed_before_second", []) if s not in _full_refresh()]
            whole = f" ({resumed.requests / full.requests:.0%} of the uninterrupted run's {full.requests:,})" if (
                full and full.requests) else ""  # fmt: skip
            twice = (f"; pages read by both runs: {extra['pages_read_twice']:,} of {extra['pages']:,}"
                     if "pages_read_twice" in extra else "")  # fmt: skip
            rows.append(
                f"| {name}: resumes after a kill | killed after {extra.get('first_killed_after') or 0:.0f} s; the "
                f"rerun equals the ground truth: {'yes' if resumed.ok else 'NO: ' + '; '.join(resumed.problems)}; "
                f"it made {resumed.requests:,} requests{whole}{twice}; streams complete at the kill "
                f"({', '.join(completed) or 'none but full-refresh staff'}) read again: "
                f"{'none' if not extra.get('refetched') else extra['refetched']} | {_met(resumed.ok)} |"
            )
    return rows


def _full_refresh() -> frozenset[str]:
    from ._measure import FULL_REFRESH

    return FULL_REFRESH


def _charts(results: Sequence[RunResult], charts: Path, found: Sequence[Ratio], note: str = "") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    written: list[str] = []
    shown = [r for r in found if r.value is not None]
    if shown:
        fig, ax = plt.subplots(figsize=(9, 0.55 * len(shown) + 1.4))
        labels = [r.label for r in shown][::-1]
        values = [float(r.value or 0.0) for r in shown][::-1]
        colours = ["#2ca02c" if r.met else "#d62728" for r in shown][::-1]
        ax.barh(labels, values, color=colours)
        for y, r in enumerate(shown[::-1]):
            ax.plot([r.target, r.target], [y - 0.4, y + 0.4], color="black", linewidth=2)
            ax.text(float(r.value or 0.0), y, f" {r.value:.2f} (target {r.goal})", va="center", fontsize=8)
        ax.axvline(1.0, color="#7f7f7f", linewidth=0.8, linestyle=":")
        ax.set_xlim(0, max(2.0, max(values) * 1.35))
        ax.set_xlabel("ratio (black tick: target; green met, red missed)")
        ax.set_title("Issue 16's figures, each a ratio of runs from one invocation" + note, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        fig.tight_layout()
        path = charts / "ratios.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    sweep = sorted((r for r in results if r.scenario == "concurrency" and r.wall), key=lambda r: r.max_concurrency)
    if sweep:
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        xs = [r.max_concurrency for r in sweep]
        ax.plot(xs, [r.rows_per_second for r in sweep], marker="o", label="syncflow (fivetran debug)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("max_concurrency (requests in flight per API)")
        ax.set_ylabel("rows/s")
        ax.set_title(f"rows/s against max_concurrency ({sweep[0].expected_rows:,} rows, 150 ms latency)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = charts / "concurrency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    return written


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def _when(info: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["| scenario | measured at | took | data |", "|---|---|---:|---|"]
    for name, entry in info.items():
        lines.append(
            f"| {name} | {entry.get('measured_at', '?')} | {float(entry.get('seconds', 0)) / 60:.1f} min | "
            f"{'quick (small data)' if entry.get('quick') else 'full'} |"
        )
    return lines


def render(
    results: Sequence[RunResult], info: Mapping[str, Mapping[str, Any]], *, charts: Path, out: Path | None
) -> str:
    from .run import DEFAULT_SCENARIOS, LATENCY

    by = {s: [r for r in results if r.scenario == s] for s in dict.fromkeys(r.scenario for r in results)}
    found = ratios(results)
    default_minutes = sum(float(info[n]["seconds"]) for n in DEFAULT_SCENARIOS if n in info) / 60
    default_quick = " on quick data" if any(info[n].get("quick") for n in DEFAULT_SCENARIOS if n in info) else ""
    lines = ["# Benchmarks", ""]
    if any(entry.get("quick") for entry in info.values()):
        quick = ", ".join(name for name, entry in info.items() if entry.get("quick"))
        lines += [f"> **Quick figures** for {quick} (`--quick`: small data, for checking the machinery; those "
                  "figures mean little).", ""]  # fmt: skip
    lines += [
        "Generated by `python -m benchmarks.run` (`make bench`: every scenario but `scale_1m`, "
        f"{default_minutes:.0f} min here{default_quick}; `make bench-scale`: `scale_1m` alone, "
        f"{float(info.get('scale_1m', {}).get('seconds', 0)) / 60:.0f} min). A scenario not run keeps its last "
        "figures (`--keep benchmarks/results.json`); when each was measured:",
        "",
        *_when(info),
        "",
        "Raw figures: `benchmarks/results.json`.",
        "",
        "## Targets (issue 16)",
        "",
        "Every ratio divides runs of the same invocation of one scenario; the floor's are medians of interleaved "
        "pairs.",
        "",
        "| figure | target | ratio | how | |",
        "|---|---|---:|---|---|",
        *[
            f"| {r.label} | {r.goal} | {'-' if r.value is None else f'{r.value:.2f}'} | {r.detail} | {_met(r.met)} |"
            for r in found
        ],
        "",
    ]
    checks = _scale_checks(results)
    if checks:
        lines += ["| one million Accelo rows (zero latency, no budget) | figure | |", "|---|---|---|", *checks, ""]
    quick_ratios = sorted({r.scenario for r in found if info.get(r.scenario, {}).get("quick")})
    written = _charts(results, charts, found, " (quick: " + ", ".join(quick_ratios) + ")" if quick_ratios else "")
    base = out.parent if out is not None else Path.cwd()
    for name in written:
        lines += [f"![{name}]({os.path.relpath(charts / name, base)})", ""]
    lines += ["## Machine", "", *machine(), ""]

    floor = by.get("floor", [])
    if floor:
        lines += [
            "## Floor: `fivetran debug` against a bare `op.upsert` loop",
            "",
            f"{floor[0].expected_rows:,} rows; each repeat runs syncflow and the bare loop (the same rows, typed "
            "before the runner starts, through the same runner and schema) back to back, alternating which goes first. "
            "Start-up is outside both clocks. CPU = the worker's `getrusage` (every thread) around the sync. "
            "*Table writes* = the runner's writes of a table at a checkpoint (one per table with rows waiting), "
            "and the CPU seconds they took: a sync that keeps several tables busy at once pays this per table.",
            "",
            "| latency | repeat | syncflow s | bare s | wall ratio | syncflow CPU s | bare CPU s | CPU ratio | "
            "table writes (CPU s), syncflow / bare | both equal ground truth |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for latency in sorted({r.latency for r in floor}, reverse=True):
            for s, b in _floor_pairs(results, latency):
                lines.append(
                    f"| {latency * 1000:.0f} ms | {s.repeat + 1} | {s.wall:.2f} | {b.wall:.2f} | {s.wall / b.wall:.2f} "
                    f"| {s.cpu:.2f} | {b.cpu:.2f} | {s.cpu / b.cpu if b.cpu else 0:.2f} | {_writes(s)} / {_writes(b)} "
                    "| yes |"
                )
        bad = [r for r in floor if not r.ok]
        lines += [*(f"- {r.system} repeat {r.repeat + 1}: NO: {'; '.join(r.problems)}" for r in bad), ""]

    clean = by.get("clean", [])
    if clean:
        scale = clean[0].scale
        bound = to_duckdb_bound(scale, LATENCY, 16)
        pages = sum(expected_pages(scale).values())
        lines += [
            "## Clean (150 ms, both APIs)",
            "",
            f"{clean[0].expected_rows:,} rows in {pages} pages over seven tables; 150 ms ± 30 ms per data request; no "
            f"budget. Network bound + planning round trip: **{bound:.2f} s** (*x bound* below). `to_duckdb` is "
            "syncflow's notebook path (its own DuckDB file); the others write through the SDK runner.",
            "",
            *_table(clean, bound),
            "",
        ]

    zero = by.get("zero_latency", [])
    if zero:
        lines += [
            "## Zero latency: the three paths side by side",
            "",
            "`extract` iterates the pages (keeping each row's key and cursor, written out after the clock stops for "
            "the ground-truth check); `to_duckdb` writes syncflow's DuckDB file; `syncflow` is the connector through "
            "the SDK runner (`fivetran debug` less its start-up); `bare_upsert` is the SDK runner's floor.",
            "",
            *_table(zero),
            "",
        ]

    lines += _requests_section(by.get("requests", []))

    rate = by.get("rate_limited", [])
    if rate:
        plan = info.get("rate_limited", {}).get("plan", {})
        lines += [
            "## Rate-limited",
            "",
            f"Accelo only, {rate[0].expected_rows:,} rows; the simulator allows {plan.get('rate_limit', '?')} "
            f"requests per {plan.get('rate_window', '?')} s fixed window and syncflow is told the same budget "
            "(`accelo_requests_per_hour`). *Budget used* = requests answered in the run's full windows / their budget "
            "(the last, partial window is left out; window starts are read from /_sim/stats sampled every 50 ms).",
            "",
            *_table(rate),
            "",
            "| system | budget used |",
            "|---|---:|",
            *[f"| {r.system} | {'-' if r.budget_used is None else f'{r.budget_used:.1%}'} |" for r in rate],
            "",
        ]

    lines += _scale_section(by.get("scale_1m", []))
    lines += _projection(results)

    mem = by.get("scale10", [])
    if mem:
        lines += ["## 10x the data, whole process (SDK runner included)", "", *_table(mem), ""]
    sweep = by.get("concurrency", [])
    if sweep:
        lines += ["## rows/s against max_concurrency", "", *_table(sweep), ""]

    lines += _method()
    notes = Path(__file__).resolve().parent / "NOTES.md"
    if notes.exists():  # the hand-written analysis (profiles, causes, fixes) that a re-run must not overwrite
        lines += ["", notes.read_text(encoding="utf-8").rstrip()]
    return "\n".join(lines) + "\n"


def _requests_section(runs: Sequence[RunResult]) -> list[str]:
    twice = [r for r in runs if r.system != "request_costs"]
    costs = next((r for r in runs if r.system == "request_costs"), None)
    if not runs:
        return []
    lines = ["## Requests: the next sync with nothing new", ""]
    if twice:
        streams = sorted({s for r in twice for s in r.extra.get("second_requests_by_stream", {})})
        lines += [
            f"A full sync ({twice[0].expected_rows:,} rows, zero latency), then at once the next one against the same "
            "simulator (well inside the lookback window, nothing modified): every request of the second is "
            "overhead. Counted by the simulator per endpoint (a stream's `/count` included).",
            "",
            "| path | token | " + " | ".join(streams) + " | total | first sync's requests | equals ground truth |",
            "|---|---:|" + "---:|" * len(streams) + "---:|---:|---|",
        ]
        for r in twice:
            per = r.extra.get("second_requests_by_stream", {})
            lines.append(
                f"| {r.system} | {r.extra.get('second_token_requests', 0)} | "
                + " | ".join(str(per.get(s, 0)) for s in streams)
                + f" | {r.requests} | {r.extra.get('first_requests', '-')} | {'yes' if r.ok else 'NO'} |"
            )
        lines += ["", "Accelo `staff` has no cursor: it is a full refresh, read whole (a count and its page) by "
                  "every sync.", ""]  # fmt: skip
    if costs:
        # HOOK: benchmarks/request_costs.py belongs to another change; its own report is quoted as it prints it.
        code = costs.extra.get("exit")
        lines += ["`python -m benchmarks.request_costs` (full sync, nothing new, edits inside the lookback):", ""]
        if code == 0:
            lines += ["```", str(costs.extra.get("stdout", "")).rstrip(), "```", ""]
        else:
            lines += [f"**failed** (exit {code}): `{costs.extra.get('stderr_tail', '')}`", ""]
    return lines


def _scale_section(runs: Sequence[RunResult]) -> list[str]:
    if not runs:
        return []
    syncs = [r for r in runs if r.system != "memory_probe"]
    probes = sorted((r for r in runs if r.system == "memory_probe"), key=lambda r: r.rows)
    lines = [
        "## One million Accelo rows",
        "",
        "Zero latency, no budget, Accelo's six tables. Each path runs once uninterrupted, then once killed "
        "(SIGKILL of its process group, like a crash) as soon as the simulator has served 75 % of the pages, and run "
        "again in the same place (its DuckDB file or the SDK's `files/`); the ground truth is checked after the "
        "second run. *Peak RSS* is the whole worker (the SDK runner's grows with the sync: it keeps a hash of every "
        "key upserted); syncflow's own memory is the probe below.",
        "",
        *_table(syncs),
        "",
        "| resumed run | killed after | first run's requests | second run's requests per stream "
        "| complete at the kill |",
        "|---|---:|---:|---|---|",
    ]
    for r in syncs:
        if r.extra.get("kind") != "kill_resume":
            continue
        pages = expected_pages(r.scale)
        per = r.extra.get("second_requests_by_stream", {})
        lines.append(
            f"| {r.system} | {r.extra.get('first_killed_after') or 0:.0f} s | {r.extra.get('first_requests', 0)} | "
            + ", ".join(f"{s.split('.')[1]} {n} of {pages.get(s, 0)}" for s, n in sorted(per.items()))
            + f" | {', '.join(r.extra.get('completed_before_second', [])) or 'none'} |"
        )
    lines.append("")
    if probes:
        lines += [
            "`benchmarks/memory_probe.py`: syncflow alone (`syncflow.sync` into a sink that discards rows, a fresh "
            "process per size), its peak RSS (VmHWM):",
            "",
            "| rows | syncflow peak RSS MiB | simulator start-up s |",
            "|---:|---:|---:|",
            *[f"| {p.rows:,} | {_mib(p.peak_rss)} | {p.extra.get('sim_start_seconds', 0):.1f} |" for p in probes],
            "",
        ]
    starts = [float(r.extra["sim_start_seconds"]) for r in syncs if "sim_start_seconds" in r.extra]
    if starts:
        lines += [
            f"Simulator start-up at this size (building its tables, outside every clock): {_spread(starts, '{:.0f}')} "
            "s per start.",
            "",
        ]
    return lines


def _projection(results: Sequence[RunResult]) -> list[str]:
    rate = next((r for r in results if r.scenario == "rate_limited" and r.system == "syncflow" and r.ok), None)
    big = _first(results, "scale_1m", "syncflow", "full") or _first(results, "zero_latency", "syncflow")
    if rate is None or not rate.requests:
        return []
    used = rate.budget_used if rate.budget_used is not None else 1.0
    # Rows per request from the largest complete run (a million rows: the token and counts are lost in it), else
    # from the rate-limited run itself.
    sample = _first(results, "scale_1m", "to_duckdb", "full") or rate
    rows_per_request = sample.rows / sample.requests
    per_hour = HOURLY_BUDGET * used * rows_per_request
    lines = [
        "## Projection: a real account's initial sync",
        "",
        f"Accelo allows {HOURLY_BUDGET:,} requests per hour. At the measured {used:.1%} of a binding budget and "
        f"{rows_per_request:.1f} rows per request (pages of 100, less the token and planning requests: "
        f"{sample.rows:,} rows / {sample.requests:,} requests in the {sample.scenario} run), an initial sync moves "
        f"**~{per_hour:,.0f} "
        f"rows per hour**: **{1_000_000 / per_hour:.1f} hours for a million rows**.",
    ]
    if big is not None and big.rows_per_second:
        lines[-1] += (
            f" Unthrottled, `fivetran debug` itself writes {big.rows_per_second:,.0f} rows/s ({big.scenario} run; "
            f"{big.rows_per_second * 3600 / per_hour:,.0f}x that): the budget, not syncflow, sets the pace."
        )
    lines += [
        "",
        "What a user can change to go faster:",
        "",
        "- **A larger budget**: ask Accelo for a higher hourly limit for the deployment and set "
        "`accelo_requests_per_hour` to it; syncflow paces to the configured budget and the server's "
        "`X-RateLimit-*` headers, so the hours scale down in proportion. (Other integrations on the same deployment "
        "share the budget: leave them their part.)",
        "- **Fewer tables**: `streams` lists only the tables needed; each table's rows cost pages of 100.",
        "- **A bounded first sync**: `start_date` skips history older than needed.",
        "- Not `max_concurrency`: once the budget binds, more requests in flight only reach the limit sooner.",
        "- After the initial sync, an incremental sync costs about one request per table (see *Requests*).",
        "",
    ]
    return lines


def _method() -> list[str]:
    return [
        "## Method",
        "",
        "- **One system, one process.** Each row above is a fresh `python -m syncflow.sim` on 127.0.0.1 (its own data, "
        "statistics and rate windows) and a fresh `python -m benchmarks.worker` subprocess, so *peak RSS* is that "
        "system's own (the worker's `VmHWM`, max with its children's `ru_maxrss`). *Requests* and "
        "*429s* are the delta of the simulator's `/_sim/stats` (token requests included); *peak in flight* is its "
        "peak of concurrent data requests. The systems run one after the other, never at the same time.",
        "- **Side by side.** Every ratio divides runs of one scenario from one invocation (never a figure from another "
        "minute); the floor scenario repeats its pair, alternating the order, and quotes the median and range.",
        "- **Wall time** is measured inside the worker around the sync only (the SDK runner's `schema()` + `update()` "
        "+ its DuckDB writes; `to_duckdb(...)`; iterating `extract(...)`; for dlt, token + extract + normalize + "
        "load). Interpreter start, imports and the simulator's start are outside it. *CPU* is the worker's "
        "`getrusage` (user + system, every thread) over the same span.",
        "- **The pipreqs delay is kept out** by not calling `fivetran debug` / `Connector.debug()` at all: it lints "
        "requirements.txt with pipreqs, which looks packages up on PyPI (~12 s of retries without a route). The "
        "worker does what `Connector._run_locally` does after that lint and calls "
        "`fivetran_connector_sdk_cli.core_adapter.run(connector, project_path, configuration, state)` in-process "
        "with a temporary `project_path` per run; a resumed run passes the `files/state.json` the runner saved, as "
        "`fivetran debug` does. See `benchmarks/_sdk.py`.",
        "- **Same writes for everybody on the SDK side.** syncflow, *sequential*, *lockstep5* and *bare_upsert* all "
        "declare syncflow's `schema()`, upsert the same typed rows (syncflow's `RowConverter`) with `op.upsert`, and "
        "checkpoint every 5,000 rows, through the same runner. *sequential* is one `requests` page after another; "
        "*lockstep5* submits pages p..p+4 to a `ThreadPoolExecutor(5)`, waits for all five, upserts, and repeats.",
        "- **dlt** is a `rest_api` source (bearer token fetched first, AwardCo `api_key` header, `page_number` "
        "paginators, `incremental` on the cursor, `write_disposition=merge` with the primary key, "
        "`parallelized=True`) into its own DuckDB file (`benchmarks/dlt_pipeline.py`).",
        "- **Bounds.** *Network bound* = pages x latency / allowed concurrency (pages = sum of ceil(rows/100) per "
        "table; syncflow's `max_concurrency` applies per API and the two APIs run side by side, so it is the slower "
        "API's pages), plus one latency for planning (the `/count`s, side by side; the simulator adds no latency to "
        "the token). *bare_upsert* is the SDK path's floor: a loop of `op.upsert` over rows typed before the runner "
        "started, through the same runner, no network.",
        "- **Ground truth.** After each run the written DuckDB is read back and compared with `/_sim/ground_truth` "
        "(keys and cursors only): the set of primary keys per table (no key missing, extra or duplicated) and, for "
        "syncflow's paths, the cursor column's value for every row (`benchmarks/verify.py`).",
        "- **Kill and resume.** The first run's worker is SIGKILLed with its process group once the simulator has "
        "served the chosen share of the pages; the second runs in the same directory. A stream counts as complete "
        "at the kill if the saved state records a finished read (`swept`, no `sweep` under way); the second run "
        "must then spend at most a page and a count on it.",
        "- **Noise.** 2 vCPUs are shared by the simulator, the worker (its event loop and the SDK's writer threads) "
        "and anything else running on the machine; single figures move by 10-40 % between minutes, which is why "
        "only ratios of neighbouring runs are targets.",
        "",
    ]
