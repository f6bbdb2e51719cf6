"""Where the time goes, per thread, in one `fivetran debug`-equivalent clean sync: py-spy over a benchmark worker.

    python -m benchmarks.profile_sync --latency 0.15 --out benchmarks/profiles/latency150.txt
    python -m benchmarks.profile_sync --latency 0 --out benchmarks/profiles/latency0.txt

A fresh simulator (`--scale`, `--latency`), then `py-spy record --threads --gil --format raw` around
`python -m benchmarks.worker --system syncflow` (the SDK runner in-process, as `fivetran debug` runs it after its
requirements lint), and a second pass without `--gil` (every thread on the CPU, holding the GIL or not). The raw
folded stacks are summarised per thread: share of samples, self time by package, and the heaviest frames by
inclusive and self share. Samples before the runner starts (interpreter start, imports) are left out: only stacks
under `core_adapter.run` (the writer) or syncflow's event-loop thread are counted.

py-spy needs ptrace rights over the child (root, or `kernel.yama.ptrace_scope` 0); it is a dev tool, installed with
`pip install py-spy`, not a dependency.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ._sim import SimOptions, SimProcess

__all__ = ["main", "summarise"]

PACKAGES = (
    ("fivetran_connector_sdk_core", "sdk core (runner, renaming, DuckDB staging)"),
    ("fivetran_connector_sdk_cli", "sdk cli (op.upsert, coercion)"),
    ("fivetran_connector_sdk_common", "sdk common"),
    ("duckdb", "duckdb"),
    ("syncflow/sources", "syncflow sources (paging, conversion calls)"),
    ("syncflow/_http", "syncflow http"),
    ("syncflow/_streams", "syncflow RowConverter"),
    ("syncflow", "syncflow other (pipeline, drain, state)"),
    ("httpcore", "httpcore"),
    ("httpx", "httpx"),
    ("h11", "h11"),
    ("anyio", "anyio"),
    ("asyncio", "asyncio (event loop)"),
    ("json", "json (stdlib)"),
    ("selectors", "selectors"),
    ("ssl", "ssl"),
    ("threading", "threading / queue waits"),
    ("queue", "threading / queue waits"),
    ("logging", "logging"),
)


def _package(frame: str) -> str:
    for needle, label in PACKAGES:
        if needle in frame:
            return label
    return "other"


def _threads(lines: Iterable[str]) -> dict[str, collections.Counter[tuple[str, ...]]]:
    """Folded stacks ('thread (0x..);a (f.py:1);b (g.py:2) 12') grouped by thread, outermost frame first."""
    out: dict[str, collections.Counter[tuple[str, ...]]] = collections.defaultdict(collections.Counter)
    for line in lines:
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        out[frames[0]][tuple(frames[1:])] += int(count)
    return out


def _role(stacks: collections.Counter[tuple[str, ...]]) -> str:
    text = " ".join(" ".join(s) for s in list(stacks)[:200])
    if "core_adapter.py" in text or "run_in_sdk_runner" in text:
        return "writer (main thread: SDK runner + update() + drain + op.upsert)"
    if "anyio" in text or "asyncio" in text or "base_events" in text:
        return "event loop (syncflow fetch thread)"
    return "other"


def _in_sync(stack: tuple[str, ...]) -> bool:
    joined = ";".join(stack)
    return "core_adapter.py" in joined or "base_events.py" in joined or "anyio" in joined or "threading.py" in joined


def summarise(raw: str, title: str, top: int = 14) -> str:
    threads = _threads(raw.splitlines())
    kept = {t: collections.Counter({s: n for s, n in c.items() if _in_sync(s)}) for t, c in threads.items()}
    total = sum(sum(c.values()) for c in kept.values()) or 1
    out = [title, f"samples in the sync: {total} (all threads)"]
    for thread, stacks in sorted(kept.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(stacks.values())
        if n < total * 0.01:
            continue
        out.append("")
        out.append(f"== {thread}: {_role(stacks)} — {n} samples, {n / total:.0%} of all")
        by_package: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        self_time: collections.Counter[str] = collections.Counter()
        for stack, count in stacks.items():
            by_package[_package(stack[-1])] += count
            self_time[stack[-1]] += count
            for frame in set(stack):
                inclusive[frame] += count
        out.append("  self time by package: " + ", ".join(f"{p} {c / n:.0%}" for p, c in by_package.most_common(9)))
        out.append("  heaviest frames, inclusive (share of this thread's samples):")
        shown = 0
        for frame, count in inclusive.most_common():
            if count / n > 0.97:  # the thread's own entry frames: always 100 %
                continue
            out.append(f"    {count / n:5.1%}  {frame}")
            shown += 1
            if shown >= top:
                break
        out.append("  heaviest frames, self:")
        for frame, count in self_time.most_common(top):
            out.append(f"    {count / n:5.1%}  {frame}")
    return "\n".join(out)


def _record(url: str, workdir: Path, gil: bool, rate: int) -> str:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = workdir / ("gil.txt" if gil else "cpu.txt")
    result = workdir / "result.json"
    run = workdir / ("run-gil" if gil else "run-cpu")
    argv = [
        py_spy, "record", "--threads", "--format", "raw", "--rate", str(rate), "--output", str(raw),
        *(["--gil"] if gil else []), "--",
        sys.executable, "-m", "benchmarks.worker", "--system", "syncflow", "--url", url,
        "--workdir", str(run), "--result", str(result),
    ]  # fmt: skip
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    wall = json.loads(result.read_text(encoding="utf-8"))["wall"]
    return f"sync wall {wall:.2f} s (under py-spy)\n" + raw.read_text(encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_sync", description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--scale", type=float, default=10.0, help="simulator scale (10 = 17,400 rows)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, help="write the summary here (default: print it)")
    parser.add_argument("--raw", type=Path, help="also keep the raw folded stacks in this directory")
    args = parser.parse_args(argv)
    options = SimOptions(scale=args.scale, latency=args.latency, jitter=0.03 if args.latency else 0.0)
    parts = []
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        for gil in (True, False):
            with SimProcess(options) as sim:  # a fresh simulator per pass: same data, same statistics
                started = time.monotonic()
                wall_line, _, raw = _record(sim.url, Path(tmp), gil, args.rate).partition("\n")
            if args.raw is not None:
                args.raw.mkdir(parents=True, exist_ok=True)
                name = f"latency{args.latency * 1000:.0f}-{'gil' if gil else 'cpu'}.folded"
                (args.raw / name).write_text(raw, encoding="utf-8")
            what = "--gil: only the thread holding the GIL is sampled" if gil else "on-CPU samples of every thread"
            title = (
                f"### {what}\nscale {args.scale:g}, latency {args.latency * 1000:.0f} ms, py-spy {args.rate} Hz; "
                f"{wall_line}; process {time.monotonic() - started:.1f} s"
            )
            parts.append(summarise(raw, title))
    text = "\n\n".join(parts) + "\n"
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
