"""Property tests (hypothesis) of the ordered pipeline: whatever order pages and slices complete in, the rows
delivered are the same and in order per slice, and every checkpoint is safe (each row its state covers was upserted
before the checkpoint), also when a fetch fails part-way."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import ObjectSendStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.sim import RecordingSink
from syncflow._pipeline import Batch, fetch_in_order, run_pipeline
from syncflow._state import StateDocument

SHORT = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


async def _release(events: dict[Any, anyio.Event], order: list[Any], yields: list[int]) -> None:
    """Complete the fetches in `order`, letting the event loop run `yields[i]` steps between them."""
    for index, key in enumerate(order):
        events[key].set()
        for _ in range(yields[index % len(yields)] if yields else 0):
            await anyio.lowlevel.checkpoint()


@st.composite
def _fetch_case(draw: st.DrawFn) -> tuple[int, int, list[int], int | None, list[int]]:
    pages = draw(st.integers(0, 16))
    window = draw(st.integers(1, 6))
    order = draw(st.permutations(list(range(pages))))
    stop = draw(st.one_of(st.none(), st.integers(0, max(0, pages - 1))))
    yields = draw(st.lists(st.integers(0, 3), max_size=5))
    return pages, window, order, stop, yields


def _check_fetch_in_order(case: tuple[int, int, list[int], int | None, list[int]]) -> None:
    pages, window, order, stop, yields = case
    events = {i: anyio.Event() for i in range(pages)}
    delivered: list[tuple[int, str]] = []
    started: list[int] = []
    peak = [0]

    async def fetch(index: int) -> str:
        started.append(index)
        peak[0] = max(peak[0], len(started) - len(delivered))
        await events[index].wait()
        return f"page-{index}"

    async def deliver(index: int, result: str) -> bool:
        delivered.append((index, result))
        return index != stop

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_release, events, order, yields)
            with anyio.fail_after(10):
                await fetch_in_order(range(pages), fetch, deliver, window=window)
            tg.cancel_scope.cancel()

    anyio.run(main)
    last = pages - 1 if stop is None else stop
    assert delivered == [(i, f"page-{i}") for i in range(last + 1)] if pages else delivered == []
    assert peak[0] <= window, f"{peak[0]} fetches ahead of delivery with window {window}"
    assert started == sorted(started), "fetches must start in index order"


@SHORT
@given(_fetch_case())
def test_fetch_in_order_delivers_in_index_order_whatever_completes_first(
    case: tuple[int, int, list[int], int | None, list[int]],
) -> None:
    _check_fetch_in_order(case)


@pytest.mark.slow
@LONG
@given(_fetch_case())
def test_fetch_in_order_soak(case: tuple[int, int, list[int], int | None, list[int]]) -> None:
    _check_fetch_in_order(case)


Pipeline = tuple[list[list[int]], list[tuple[int, int]], int, int, int, list[int], tuple[int, int] | None]


@st.composite
def _pipeline_case(draw: st.DrawFn) -> Pipeline:
    # slices[s][p]: how many rows page p of slice s holds (0 allowed: an empty page).
    slices = draw(st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=6), min_size=1, max_size=4))
    keys = [(s, p) for s, pages in enumerate(slices) for p in range(len(pages))]
    order = draw(st.permutations(keys))
    queue = draw(st.integers(1, 4))
    every = draw(st.integers(1, 8))
    window = draw(st.integers(1, 4))
    yields = draw(st.lists(st.integers(0, 3), max_size=5))
    fail = draw(st.one_of(st.none(), st.sampled_from(keys)))
    return slices, order, queue, every, window, yields, fail


class _Boom(Exception):
    pass


def _rows(slices: list[list[int]]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Each page's rows; ids rise within a slice and are unique overall."""
    out: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for s, pages in enumerate(slices):
        next_id = s * 1000
        for p, count in enumerate(pages):
            out[(s, p)] = [{"id": next_id + j, "slice": s, "page": p} for j in range(count)]
            next_id += count
    return out


def _check_pipeline(case: Pipeline) -> None:
    slices, order, queue, every, window, yields, fail = case
    rows = _rows(slices)
    events = {key: anyio.Event() for key in order}

    async def produce(send: ObjectSendStream[Batch]) -> str:
        async def run_slice(s: int) -> None:
            last_id: int | None = None

            async def fetch(p: int) -> list[dict[str, Any]]:
                await events[(s, p)].wait()
                if (s, p) == fail:
                    raise _Boom(f"page {p} of slice {s} failed")
                return rows[(s, p)]

            async def deliver(p: int, page: list[dict[str, Any]]) -> bool:
                nonlocal last_id
                if page:
                    last_id = page[-1]["id"]
                done = p == len(slices[s]) - 1
                patch = [(("slices", str(s)), {"after": last_id, "next_page": p + 1, "done": done})]
                await send.send(Batch("src.t", "src", "t", page, patch))
                return True

            await fetch_in_order(range(len(slices[s])), fetch, deliver, window=window)

        async with anyio.create_task_group() as tg:
            tg.start_soon(_release, events, order, yields)
            async with anyio.create_task_group() as slices_tg:
                for s in range(len(slices)):
                    slices_tg.start_soon(run_slice, s)
        await send.send(Batch("src.t", "src", "t", [], [((), {"cursor": "complete"})]))
        return "finished"

    sink = RecordingSink()
    state = StateDocument()
    failed = False
    try:
        result, _stats = run_pipeline(
            produce, sink, state, queue_pages=queue, checkpoint_every_rows=every, checkpoint_every_seconds=3600.0
        )
        assert result == "finished"
    except BaseException as exc:  # the task groups wrap the failure
        assert fail is not None, f"unexpected failure {exc!r}"
        failed = True

    all_rows = {row["id"]: row for page in rows.values() for row in page}
    upserted = sink.tables.get("src.t", {})
    if not failed:
        assert upserted == all_rows
        assert sink.checkpoints and sink.checkpoints[-1]["streams"]["src.t"] == {"cursor": "complete"}
    # Rows of each slice arrive in page order (ids rise within a slice).
    order_seen: dict[int, list[int]] = {}
    for kind, value in sink.log:
        if kind == "upsert":
            row = upserted[value[1]]
            order_seen.setdefault(row["slice"], []).append(row["id"])
    assert all(ids == sorted(ids) for ids in order_seen.values())
    # Every checkpoint covers only rows already upserted.
    seen: set[int] = set()
    for kind, value in sink.log:
        if kind == "upsert":
            seen.add(value[1])
            continue
        entry = sink.checkpoints[value]["streams"].get("src.t", {})
        if entry == {"cursor": "complete"}:
            covered = set(all_rows)
        else:
            covered = set()
            for sid, mark in entry.get("slices", {}).items():
                for p in range(mark["next_page"]):
                    covered.update(r["id"] for r in rows[(int(sid), p)])
                assert mark["after"] is None or mark["after"] in seen
        assert covered <= seen, f"checkpoint {value} covers rows {sorted(covered - seen)[:5]} not yet upserted"
        if fail is not None:
            assert fail[1] >= entry.get("slices", {}).get(str(fail[0]), {"next_page": 0})["next_page"], (
                "a checkpoint covers the page that failed"
            )


@SHORT
@given(_pipeline_case())
def test_pipeline_rows_and_checkpoints_are_safe_in_any_completion_order(case: Pipeline) -> None:
    _check_pipeline(case)


@pytest.mark.slow
@LONG
@given(_pipeline_case())
def test_pipeline_soak(case: Pipeline) -> None:
    _check_pipeline(case)
