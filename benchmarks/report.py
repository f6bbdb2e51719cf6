"""BENCHMARKS.md and the two charts, from a list of `RunResult`s."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from ._measure import RunResult
from ._sim import expected_pages

__all__ = ["machine", "render"]

PACKAGES = (
    "syncflow", "fivetran-connector-sdk", "httpx", "httpcore", "sniffio", "anyio", "duckdb", "dlt", "requests",
    "uvicorn", "matplotlib",
)  # fmt: skip
TARGET_CLEAN_RATIO = 1.15
TARGET_BUDGET = 0.98  # issue 16: >= 98 % of a binding budget, zero 429s
TARGET_RSS_GROWTH = 0.10
TARGET_DRAIN = 0.90


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
        lines.append(
            f"| {name} | {r.rows} | {r.wall:.2f} | {r.rows_per_second:,.0f} | {ratio} | {r.requests} | "
            f"{r.rate_limited} | {r.peak_in_flight} | {_mib(r.peak_rss)} | {truth} |"
        )
    if extra:
        lines.append(extra)
    return lines


def _charts(results: Sequence[RunResult], charts: Path, bounds: dict[str, float]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    written: list[str] = []
    clean = [r for r in results if r.scenario == "clean" and r.wall]
    if clean:
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        names = [r.system for r in clean] + ["network bound"]
        walls = [r.wall for r in clean] + [bounds.get("clean_network", 0.0)]
        colours = ["#1f77b4" if n == "syncflow" else "#7f7f7f" if n in ("bare_upsert", "network bound") else "#ff7f0e"
                   for n in names]  # fmt: skip
        ax.barh(names[::-1], walls[::-1], color=colours[::-1])
        for y, w in enumerate(walls[::-1]):
            ax.text(w, y, f" {w:.1f} s", va="center", fontsize=8)
        ax.set_xlabel("wall seconds (lower is better)")
        rows = clean[0].expected_rows
        ax.set_title(f"Clean scenario: {rows:,} rows, 150 ms ± 30 ms latency, loopback")
        fig.tight_layout()
        path = charts / "wall_time.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    sweep = sorted((r for r in results if r.scenario == "concurrency" and r.wall), key=lambda r: r.max_concurrency)
    if sweep:
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        xs = [r.max_concurrency for r in sweep]
        ax.plot(xs, [r.rows_per_second for r in sweep], marker="o", label="syncflow")
        drain = bounds.get("drain_rows_per_second")
        if drain:
            ax.axhline(drain, color="#7f7f7f", linestyle="--", label="bare op.upsert loop")
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


def render(
    results: Sequence[RunResult], plan: object, *, quick: bool, elapsed: float, charts: Path, out: Path | None
) -> str:
    from .run import LATENCY, network_bound

    by = {s: [r for r in results if r.scenario == s] for s in dict.fromkeys(r.scenario for r in results)}
    lines = ["# Benchmarks", ""]
    if quick:
        lines += ["> **Quick run** (`--quick`): small data, for checking the machinery; the figures mean little.", ""]
    lines += [
        "Generated by `python -m benchmarks.run --out BENCHMARKS.md` (`make bench`), "
        f"all scenarios in {elapsed / 60:.1f} min. Raw figures: `benchmarks/results.json`.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
    ]
    bounds: dict[str, float] = {}
    targets: list[str] = []

    clean = by.get("clean", [])
    if clean:
        scale = clean[0].scale
        net = network_bound(scale, LATENCY, 16)
        bounds["clean_network"] = net
        bare = next((r for r in clean if r.system == "bare_upsert" and r.wall), None)
        physical = max(net, bare.wall if bare else 0.0)
        pages = sum(expected_pages(scale).values())
        lines += [
            "## Clean",
            "",
            f"{clean[0].expected_rows:,} rows in {pages} pages over seven tables; 150 ms ± 30 ms per request; "
            f"no budget. Network bound: {net:.2f} s (the slower API's pages x 0.15 s / 16 in flight). Physical bound "
            f"= max(network bound, bare `op.upsert` loop) = **{physical:.2f} s**: a sync must both fetch and write "
            "every row.",
            "",
            *_table(clean, physical),
            "",
        ]
        sync = next((r for r in clean if r.system == "syncflow"), None)
        peers = [r for r in clean if r.system in ("sequential", "lockstep5", "dlt") and r.wall]
        if sync and sync.wall:
            ratio = sync.wall / physical
            slowest_peer_margin = min((p.wall / sync.wall for p in peers), default=float("nan"))
            targets.append(
                f"| clean: ≤ {TARGET_CLEAN_RATIO}x physical bound | {ratio:.2f}x ({sync.wall:.2f} s vs "
                f"{physical:.2f} s) | {_met(ratio <= TARGET_CLEAN_RATIO)} |"
            )
            targets.append(
                "| clean: several times faster than every peer | nearest peer takes "
                f"{slowest_peer_margin:.1f}x as long | {_met(slowest_peer_margin >= 3 if peers else None)} "
                "(taking \"several\" as ≥ 3x) |"
            )

    rate = by.get("rate_limited", [])
    if rate:
        p = plan
        lines += [
            "## Rate-limited",
            "",
            f"Accelo only, {rate[0].expected_rows:,} rows; the simulator allows {getattr(p, 'rate_limit', '?')} "
            f"requests per {getattr(p, 'rate_window', '?')} s fixed window and syncflow is told the same budget "
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
        sync = next((r for r in rate if r.system == "syncflow"), None)
        if sync:
            used = sync.budget_used
            met = None if used is None else used >= TARGET_BUDGET and not sync.rate_limited
            targets.append(
                f"| rate-limited: ≥ 98 % of budget, zero 429s | {'-' if used is None else f'{used:.1%}'}, "
                f"{sync.rate_limited} x 429 | {_met(met)} |"
            )

    mem = by.get("scale10", [])
    if mem:
        lines += ["## 10x the data (memory)", "", *_table(mem), ""]
        if len(mem) == 2 and mem[0].peak_rss and mem[1].peak_rss:
            growth = mem[1].peak_rss / mem[0].peak_rss - 1
            targets.append(
                f"| 10x data: peak RSS within +10 % | {_mib(mem[0].peak_rss)} → {_mib(mem[1].peak_rss)} MiB "
                f"({growth:+.1%}) | {_met(growth <= TARGET_RSS_GROWTH)} |"
            )

    zero = by.get("zero_latency", [])
    if zero:
        lines += ["## Zero latency (the drain is the bound)", "", *_table(zero), ""]
        sync = next((r for r in zero if r.system == "syncflow" and r.wall), None)
        bare = next((r for r in zero if r.system == "bare_upsert" and r.wall), None)
        if sync and bare:
            share = sync.rows_per_second / bare.rows_per_second
            bounds["drain_rows_per_second"] = bare.rows_per_second
            targets.append(
                f"| zero latency: ≥ 90 % of bare `op.upsert` rows/s | {share:.0%} ({sync.rows_per_second:,.0f} vs "
                f"{bare.rows_per_second:,.0f} rows/s) | {_met(share >= TARGET_DRAIN)} |"
            )
    if "drain_rows_per_second" not in bounds:
        bare = next((r for r in results if r.system == "bare_upsert" and r.wall), None)
        if bare:
            bounds["drain_rows_per_second"] = bare.rows_per_second

    sweep = by.get("concurrency", [])
    if sweep:
        lines += ["## rows/s against max_concurrency", "", *_table(sweep), ""]

    written = _charts(results, charts, bounds)
    base = out.parent if out is not None else Path.cwd()
    for name in written:
        rel = os.path.relpath(charts / name, base)
        lines += [f"![{name}]({rel})", ""]

    lines += _method()
    notes = Path(__file__).resolve().parent / "NOTES.md"
    if notes.exists():  # the hand-written analysis (profiles, causes, fixes) that a re-run must not overwrite
        lines += ["", notes.read_text(encoding="utf-8").rstrip()]
    if targets:
        lines = [*lines[:2], "## Targets", "", "| target | figure | |", "|---|---|---|", *targets, "", *lines[2:]]
    return "\n".join(lines) + "\n"


def _method() -> list[str]:
    return [
        "## Method",
        "",
        "- **One system, one process.** Each row above is a fresh `python -m syncflow.sim` on 127.0.0.1 (its own data, "
        "statistics and rate windows) and a fresh `python -m benchmarks.worker` subprocess, so *peak RSS* is that "
        "system's own (the worker's `VmHWM`, max with its children's `ru_maxrss`). *Requests* and "
        "*429s* are the delta of the simulator's `/_sim/stats` (token requests included); *peak in flight* is its "
        "peak of concurrent data requests. The systems run one after the other, never at the same time.",
        "- **Wall time** is measured inside the worker around the sync only (the SDK runner's `schema()` + `update()` "
        "+ its DuckDB writes; for dlt, token + extract + normalize + load). Interpreter start, imports and the "
        "simulator's start are outside it.",
        "- **The pipreqs delay is kept out** by not calling `fivetran debug` / `Connector.debug()` at all: it lints "
        "requirements.txt with pipreqs, which looks packages up on PyPI (~12 s of retries without a route). The "
        "worker does what `Connector._run_locally` does after that lint: sets `constants.DEBUGGING` and "
        "`Logging.LOG_LEVEL` (INFO), builds `Connector(update=..., schema=...)` from `syncflow.fivetran` and calls "
        "`fivetran_connector_sdk_cli.core_adapter.run(connector, project_path, configuration, {})` in-process, with "
        "a temporary `project_path` per run (so `files/warehouse.db` and the state start empty). See "
        "`benchmarks/_sdk.py`.",
        "- **Same writes for everybody on the SDK side.** syncflow, *sequential*, *lockstep5* and *bare_upsert* all "
        "declare syncflow's `schema()`, upsert the same typed rows (syncflow's `RowConverter`) with `op.upsert`, and "
        "checkpoint every 5,000 rows, through the same runner. *sequential* is one `requests` page after another "
        "(Accelo `_page`, AwardCo `page`; a short page ends the table); *lockstep5* submits pages p..p+4 to a "
        "`ThreadPoolExecutor(5)`, waits for all five, upserts, and repeats until a page comes back empty.",
        "- **dlt** is a `rest_api` source (bearer token fetched first, AwardCo `api_key` header, `page_number` "
        "paginators, `incremental` on the cursor, `write_disposition=merge` with the primary key, "
        "`rest_api_source(..., parallelized=True)`) into its own DuckDB file (`benchmarks/dlt_pipeline.py`).",
        "- **Bounds.** *Network bound* = pages x latency / allowed concurrency (pages = sum of ceil(rows/100) per "
        "table; syncflow's `max_concurrency` applies per API and the two APIs run side by side, so it is the slower "
        "API's pages). *bare_upsert* is the drain's bound: a loop of `op.upsert` over rows typed before the runner "
        "started, through the same runner, no network. The *physical bound* is the larger of the two.",
        "- **Ground truth.** After each run the written DuckDB is read back and compared with `/_sim/ground_truth`: "
        "the set of primary keys per table (no key missing, extra or duplicated) and, for syncflow, the cursor "
        "column's value for every row (`benchmarks/verify.py`).",
        "- **Noise.** 2 vCPUs are shared by the simulator, the worker (its event loop and the SDK's writer threads) "
        "and anything else running on the machine; figures move by ~10-20 % between runs.",
        "",
    ]
