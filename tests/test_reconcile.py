"""Deletes and reconciliation: compact key sets, AwardCo paging under churn, sweeps, staff deletes, kills mid-sweep.

Churn cases run against the simulator's knobs: users deleted, created or updated while a sync pages (`Mutation`),
ties in the order shuffled per request (`awardco_order="updated_at"`), with and without `total`; null/empty/zero
cursor dates (`blank_cursor_dates`); and deletions between syncs (`Simulator.apply_mutation`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import lzma
import random
import time
from array import array
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.helpers import durable_sink
from support.sim import RecordingSink, assert_matches_truth, sync_once, truth_keys
from syncflow._exceptions import StateError
from syncflow._keyset import _LZMA_FILTERS, ADDED, IntRanges, KeySet
from syncflow._state import AddKeys, KeysNotIn, RemoveKeys, StateDocument, StatePatch
from syncflow.sim import Mutation, Simulator

MakeSim = Callable[..., Simulator]
ACCELO = ("companies", "invoices", "payments", "prospects", "jobs", "staff")


# ---------------------------------------------------------------------------------------------------------------
# Key sets


@settings(max_examples=60, deadline=None)
@given(
    ints=st.lists(st.integers(min_value=0, max_value=3000), max_size=400),
    strings=st.lists(st.from_regex(r"[A-Z]{0,2}[0-9]{1,4}|[a-z]{1,3}", fullmatch=True), max_size=80),
    gone=st.lists(st.integers(min_value=0, max_value=3000), max_size=60),
)
def test_key_sets_round_trip_and_subtract_exactly(ints: list[int], strings: list[str], gone: list[int]) -> None:
    keys = KeySet([*ints, *strings])
    for value in gone:
        keys.discard(value)
    expected = (set(ints) - set(gone)) | set(strings)
    assert set(keys) == expected and len(keys) == len(expected)
    back = KeySet.from_json(json.loads(json.dumps(keys.to_json())), "test")
    assert back == keys and set(back) == expected
    seen = KeySet([*ints[::2], *strings[::3]])
    assert set(keys.difference(seen)) == expected - set(ints[::2]) - set(strings[::3])


_INT64 = 2**63
_INT32 = 2**31


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.one_of(
            st.integers(min_value=-50, max_value=400),
            st.integers(min_value=_INT32 - 40, max_value=_INT32 + 40),  # across the 32-bit edge
            st.integers(min_value=-_INT32 - 40, max_value=-_INT32 + 40),
            st.integers(min_value=_INT64 - 40, max_value=_INT64 + 40),  # across the 64-bit edge
            st.integers(min_value=-_INT64 - 40, max_value=-_INT64 + 40),
        )),
        max_size=300,
    ),
)
def test_int_ranges_in_fixed_width_arrays_behave_as_a_set_of_any_integers(ops: list[tuple[bool, int]]) -> None:
    # The bounds live in arrays of 32-bit ints (compact), then 64-bit ones; an id beyond 32 or 64 bits must still be
    # kept exactly (the set widens its arrays, then falls back to Python ints), survive a checkpoint, and subtract
    # exactly: a lost key is a delete never sent.
    ranges, model = IntRanges(), set[int]()
    for adding, value in ops:
        if adding:
            ranges.add(value)
            model.add(value)
        else:
            ranges.discard(value)
            model.discard(value)
    assert list(ranges) == sorted(model) and len(ranges) == len(model)
    assert all(value in ranges for value in model) and _INT64 * 4 not in ranges
    back = IntRanges.decode(json.loads(json.dumps(ranges.encode())))
    assert back == ranges and list(back) == sorted(model)
    other = IntRanges()
    for value in sorted(model)[::3]:
        other.add(value)
    assert list(ranges.difference(other)) == sorted(model - set(sorted(model)[::3]))


@pytest.mark.parametrize(("values", "typecode"), [
    ([1, 5, _INT32 - 1, -_INT32], "i"),
    ([1, 5, _INT32], "q"),
    ([_INT32 - 1, _INT32], "q"),  # one range: its low bound fits 32 bits, its high one does not
    ([-_INT32 - 1, 3], "q"),
    ([_INT32, _INT64], None),
])  # fmt: skip
def test_int_ranges_widen_only_as_far_as_their_largest_bound(values: list[int], typecode: str | None) -> None:
    # 4 bytes a bound while every id fits (what the known keys cost), and a decoded checkpoint picks the same width.
    ranges = IntRanges()
    for value in values:
        ranges.add(value)
    decoded = IntRanges.decode(ranges.encode())
    for each in (ranges, decoded):
        assert (each._lo.typecode if isinstance(each._lo, array) else None) == typecode
        assert list(each) == sorted(values)


def test_a_key_set_checkpointed_before_the_compact_arrays_resumes_unchanged() -> None:
    # Written by the syncflow before IntRanges kept its bounds in arrays (ints beyond 64 bits included): the format
    # did not change, so an older state.json reads back the same keys, and writes back the same text.
    flat = [1, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 29, 31, 34, 36, 39, 41, 44, 46, 49, 51, 54, 56, 59]
    saved = {"i": "-~fLB6I}oVg3LNWsh_|%Rzq57a*kjiV?Y1", "s": [["E", 4, flat]], "v": ["zed"]}
    keys = KeySet.from_json(saved, "test")
    expected = {*(i for i in range(1, 400) if i % 7), *(f"E{i:04d}" for i in range(1, 60) if i % 5), "zed",
                2**70, 2**70 + 1, -5}  # fmt: skip
    assert set(keys) == expected
    assert keys.to_json() == saved


def test_a_large_dense_key_set_is_packed_small() -> None:
    keys = KeySet(i for i in range(1, 200_001) if i % 97)  # ~2,000 gaps: too many ranges for the flat form
    packed = json.dumps(keys.to_json())
    assert len(packed) < 10_000, len(packed)
    assert KeySet.from_json(json.loads(packed), "test") == keys
    string_keys = KeySet(f"E{n:06d}" for n in range(1, 50_001) if n % 89)
    assert len(json.dumps(string_keys.to_json())) < 5_000
    assert "E000089" not in string_keys and "E000090" in string_keys


def test_a_damaged_key_set_is_one_clear_state_error() -> None:
    with pytest.raises(StateError, match=r"accelo\.jobs keys is malformed"):
        KeySet.from_json({"i": "not base85 lzma"}, "accelo.jobs keys")


@pytest.mark.parametrize(("varints", "problem"), [
    (b"\x01\x02\x03", "end mid-pair"),  # three numbers: gaps and lengths cannot pair up
    (b"\x01\x02\x84", "end mid-number"),  # the last number's continuation byte has nothing after it
    (b"\x01\x00\x00\x00", "not sorted and disjoint"),  # ranges 1..1 and 2..2 touch: encode never writes that
])  # fmt: skip
def test_a_damaged_packed_range_set_is_refused(varints: bytes, problem: str) -> None:
    packed = base64.b85encode(lzma.compress(varints, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)).decode()
    with pytest.raises(StateError, match=problem):
        KeySet.from_json({"i": packed}, "accelo.jobs keys")


@settings(max_examples=120, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.lists(st.one_of(st.integers(0, 5000), st.from_regex(r"E[0-9]{4}",
                                                                                                fullmatch=True)),
                                                max_size=40)),
            st.tuples(st.just("remove"), st.lists(st.integers(0, 5000), max_size=10)),
            st.tuples(st.just("checkpoint"), st.booleans()),  # True: resume from it (a new document)
        ),
        max_size=60,
    ),
)
def test_key_sets_checkpointed_as_a_base_plus_additions_read_back_exactly(steps: list[tuple[str, Any]]) -> None:
    # A live key set is written as its last full encoding plus the keys added since (`_LiveKeys`); whatever the
    # mix of additions, removals and checkpoints (and resumes from them), every checkpoint reads back as exactly the
    # keys added and not removed by then: a key lost there is a delete never sent.
    with mock.patch("syncflow._state._DELTA_FROM_RANGES", 1):  # additions kept apart even for these small sets
        _apply_and_check(steps)


def _apply_and_check(steps: list[tuple[str, Any]]) -> None:
    state, model = StateDocument(), set[Any]()
    for kind, value in [*steps, ("checkpoint", True)]:
        if kind == "add":
            state.apply("s", [(("keys",), AddKeys(value))])
            model |= set(value)
        elif kind == "remove":
            state.apply("s", [(("keys",), RemoveKeys(value))])
            model -= set(value)
        else:
            saved = json.loads(json.dumps(state.as_dict()))
            entry = saved["streams"].get("s", {}).get("keys")
            assert set(KeySet.from_json(entry, "s")) == model
            if value:
                state = StateDocument.load(saved)


def test_a_growing_key_set_is_not_re_encoded_whole_at_every_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # A first sync's shape: 300 batches of 100 new ids (a gap after ~1 in 10), a checkpoint after each. Encoding
    # the whole set each time costs ~150 times its final size in ranges; written as a base plus the additions since,
    # a small multiple. Counted in ranges encoded, not timed.
    encoded = [0]
    encode = IntRanges.encode

    def counting(self: IntRanges) -> Any:
        encoded[0] += self.ranges
        return encode(self)

    monkeypatch.setattr(IntRanges, "encode", counting)
    rng, state, next_id, forms = random.Random(3), StateDocument(), 0, set()
    for _ in range(300):
        batch = []
        for _ in range(100):
            next_id += 2 if rng.random() < 0.1 else 1
            batch.append(next_id)
        state.apply("s", [(("keys",), AddKeys(batch))])
        saved = json.loads(json.dumps(state.as_dict()))
        forms.add(ADDED in saved["streams"]["s"]["keys"])
    final = KeySet.from_json(saved["streams"]["s"]["keys"], "s")
    assert len(final) == 30_000 and final.ranges > 2_000
    assert forms == {True, False}  # both a full encoding and additions on top of one were written
    assert encoded[0] <= 40 * final.ranges, (encoded[0], final.ranges)


def test_a_key_set_with_nested_or_malformed_additions_is_one_clear_state_error() -> None:
    with pytest.raises(StateError, match=r"accelo\.jobs keys is malformed"):
        KeySet.from_json({"i": [1, 2], ADDED: {"i": [4, 5], ADDED: {"i": [7, 7]}}}, "accelo.jobs keys")
    with pytest.raises(StateError, match=r"accelo\.jobs keys is malformed"):
        KeySet.from_json({"i": [1, 2], ADDED: [4, 5]}, "accelo.jobs keys")
    assert set(KeySet.from_json({"i": [1, 2], ADDED: {"i": [2, 4], "v": ["x"]}}, "k")) == {1, 2, 3, 4, "x"}


def test_state_applies_key_ops_and_checkpoints_them_compactly() -> None:
    state = StateDocument()
    state.apply("s", [(("keys",), AddKeys(list(range(1000))))])
    state.apply("s", [(("keys",), RemoveKeys([5, 6]))])
    saved = json.loads(json.dumps(state.as_dict()))
    assert saved["streams"]["s"]["keys"] == {"i": [0, 4, 7, 999]}
    assert set(KeySet.from_json(StateDocument.load(saved).stream("s")["keys"], "s")) == set(range(1000)) - {5, 6}


# ---------------------------------------------------------------------------------------------------------------
# AwardCo paging under churn: no user that existed for the whole sync is skipped.


def _users(sim: Simulator) -> set[str]:
    return {u["employeeId"] for u in sim.ground_truth()["awardco"]["user"]}


CHURN = {
    "deletes": dict(mutations=[Mutation(after_requests=3, source="awardco", entity="user", delete=7),
                               Mutation(after_requests=6, source="awardco", entity="user", delete=5)]),
    "updates_move_to_end": dict(awardco_order="updated_at",
                                mutations=[Mutation(after_requests=3, source="awardco", entity="user", modify=9),
                                           Mutation(after_requests=7, source="awardco", entity="user", modify=4)]),
    "creates_and_deletes": dict(mutations=[Mutation(after_requests=2, source="awardco", entity="user", create=30),
                                           Mutation(after_requests=7, source="awardco", entity="user", create=20,
                                                    delete=9)]),
    "shuffled_ties": dict(awardco_order="updated_at"),
}  # fmt: skip


@pytest.mark.parametrize("include_total", [True, False], ids=["total", "no_total"])
@pytest.mark.parametrize("case", sorted(CHURN))
def test_no_user_is_skipped_while_the_set_changes_under_the_pager(
    make_sim: MakeSim, case: str, include_total: bool
) -> None:
    sim = make_sim(awardco_users=1200, awardco_include_total=include_total, latency=0.002, **CHURN[case])
    before = _users(sim)
    sink = RecordingSink()
    result, state = sync_once(sim, sink, streams=["awardco.user"], max_concurrency="4")
    survivors = before & _users(sim)  # existed for the whole sync
    skipped = survivors - set(sink.tables["awardco.user"])
    assert not skipped, f"{case}: {len(skipped)} users skipped, e.g. {sorted(skipped)[:5]}"
    assert "run" not in state.stream("awardco.user") and state.stream("awardco.user")["cursor"]
    assert not result.warnings


def test_a_stable_set_with_total_costs_one_pass(make_sim: MakeSim) -> None:
    sim = make_sim(awardco_users=1234)
    sync_once(sim, RecordingSink(), streams=["awardco.user"])
    assert sim.stats().by_endpoint["GET /api/users"] == 13


def _suspect_pages_from_lists(pages: dict[int, list[str]]) -> list[int]:
    # What a round's suspect pages were when it kept every page's ids as a list (the definition).
    where: dict[str, list[int]] = {}
    for page, ids in pages.items():
        for key in ids:
            where.setdefault(key, []).append(page)
    suspect: set[int] = set()
    for on in where.values():
        if len(on) > 1:
            suspect.update(range(min(on), max(on) + 1))
    return sorted(suspect)


@settings(max_examples=150, deadline=None)
@given(
    reads=st.lists(
        st.tuples(st.integers(min_value=1, max_value=12),
                  st.lists(st.from_regex(r"E0{0,2}[0-9]{1,2}|x[a-c]", fullmatch=True), max_size=8)),
        max_size=12,
    ),
    ascending=st.booleans(),
)
def test_a_rounds_suspect_pages_are_the_spans_of_every_user_it_returned_twice(
    reads: list[tuple[int, list[str]]], ascending: bool
) -> None:
    # A round keeps its pages' ids as compact key sets and finds the suspect pages as users repeat; that must give
    # exactly the pages the full lists of ids gave (re-reading fewer would miss users a moving order hid), whether
    # pages are delivered in order (as they are) or not, and with a user repeated on one page.
    from syncflow.sources.awardco import _Round

    if ascending:
        reads = sorted(reads, key=lambda read: read[0])
    seen = _Round(1, full=True, from_start=True)
    lists: dict[int, list[str]] = {}
    for page, ids in reads:
        for key in ids:
            seen.record(page, key)
            lists.setdefault(page, []).append(key)
    assert seen.suspect_pages() == _suspect_pages_from_lists(lists)
    assert seen.duplicates == bool(_suspect_pages_from_lists(lists))
    assert seen.returned == sum(map(len, lists.values()))
    assert {page: set(ids) for page, ids in seen.pages.items()} == {page: set(ids) for page, ids in lists.items()}


# ---------------------------------------------------------------------------------------------------------------
# Sweeps


def _delete_everywhere(sim: Simulator, count: int) -> None:
    for entity in ACCELO:
        sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity=entity, delete=count))
    sim.apply_mutation(Mutation(after_requests=1, source="awardco", entity="user", delete=count))


def _assert_soft_deleted(sink: RecordingSink, gone: dict[str, set[Any]]) -> None:
    for stream, keys in gone.items():
        assert keys <= set(sink.deleted.get(stream, {})), f"{stream}: {sorted(keys - set(sink.deleted[stream]))}"
        assert not keys & set(sink.tables.get(stream, {})), f"{stream}: deleted rows still live"


def test_a_sweep_repairs_blank_cursor_dates_and_soft_deletes_what_is_gone(make_sim: MakeSim) -> None:
    sim = make_sim(blank_cursor_dates=6, awardco_include_total=False)
    sink = RecordingSink()
    _, state = sync_once(sim, sink)
    invisible = {s: truth_keys(sim)[s] - set(sink.tables[s]) for s in truth_keys(sim)}
    assert all(invisible[f"accelo.{e}"] for e in ACCELO if e != "staff"), "the knob hides records from date filters"
    before = truth_keys(sim)
    _delete_everywhere(sim, 4)
    # Only rows in the destination need a delete (a blank-dated record deleted before anything read it never was).
    gone = {stream: (keys & set(sink.tables[stream])) - truth_keys(sim)[stream] for stream, keys in before.items()}
    # An ordinary incremental sync (sweep not yet due) finds neither; staff's completed refresh deletes its own.
    _, state = sync_once(sim, sink, state)
    assert all(invisible[s] - set(sink.tables[s]) for s in invisible if s.startswith("accelo.") and s != "accelo.staff")
    _assert_soft_deleted(sink, {"accelo.staff": gone["accelo.staff"]})
    assert set(sink.deleted) == {"accelo.staff"}
    result, state = sync_once(sim, sink, state, reconcile_every_hours="0")
    assert_matches_truth(sink, sim)
    _assert_soft_deleted(sink, gone)
    for stream in before:
        summary = result.streams[stream]
        if stream.startswith("accelo.") and stream != "accelo.staff":
            assert summary.repaired == len(truth_keys(sim)[stream]) and summary.deleted == len(gone[stream])
        elif stream == "awardco.user":  # without `total`, a confirming pass re-reads every user once more
            assert summary.repaired == 2 * len(truth_keys(sim)[stream]) and summary.deleted == len(gone[stream])
        assert "sweep" not in state.stream(stream) and isinstance(state.stream(stream)["swept"], int)


def _leave_this_second() -> None:
    """A record stamped in the very second a sync's window closes belongs (by design: `_before` is strict) to the
    next window; tests that edit just before a sync and expect the edit read by it let the clock leave that second."""
    time.sleep(1.0 - time.time() % 1.0)


def test_a_sweep_larger_than_its_budget_continues_and_the_incremental_part_still_runs(make_sim: MakeSim) -> None:
    sim = make_sim()
    sink = RecordingSink()
    streams = ["accelo.companies", "awardco.user"]
    _, state = sync_once(sim, sink, streams=streams)
    before = truth_keys(sim)
    _delete_everywhere(sim, 3)
    # Each sync may spend 2 requests on sweeps: companies (230 rows) needs 4 pages, users (330) 4 pages + confirm.
    _, state = sync_once(sim, sink, state, streams=streams, reconcile_every_hours="0", reconcile_max_requests="2")
    assert not sink.deleted, "nothing is deleted before a sweep completes"
    assert "sweep" in state.stream("accelo.companies") and "sweep" in state.stream("awardco.user")
    syncs = 1
    while any("sweep" in state.stream(s) for s in streams):
        sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="companies", modify=2))
        _leave_this_second()
        _, state = sync_once(
            sim, sink, state, streams=streams, reconcile_every_hours="0", reconcile_max_requests="2"
        )
        syncs += 1
        # The incremental part ran in this sync too: every modification is already current.
        assert_matches_truth(sink, sim, streams=["accelo.companies"]) if "sweep" not in state.stream(
            "accelo.companies"
        ) else None
        assert syncs < 12
    assert syncs >= 2, "the sweeps needed more than one sync's budget"
    assert_matches_truth(sink, sim, streams=streams)
    _assert_soft_deleted(sink, {s: before[s] - truth_keys(sim)[s] for s in streams})


def test_modifications_are_current_while_a_long_sweep_is_under_way(make_sim: MakeSim) -> None:
    sim = make_sim()
    sink = RecordingSink()
    streams = ["accelo.companies"]
    _, state = sync_once(sim, sink, streams=streams)
    sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="companies", modify=5, create=2))
    _leave_this_second()
    _, state = sync_once(sim, sink, state, streams=streams, reconcile_every_hours="0", reconcile_max_requests="1")
    assert "sweep" in state.stream("accelo.companies")
    assert_matches_truth(sink, sim, streams=streams)


# ---------------------------------------------------------------------------------------------------------------
# Staff deletes: after a completed refresh, never after a partial one.


class _FailingSink(RecordingSink):
    """A destination that fails after `limit` upserts of one stream (the sync dies mid-refresh)."""

    def __init__(self, base: RecordingSink, stream: str, limit: int) -> None:
        super().__init__()
        self.tables = {k: dict(v) for k, v in base.tables.items()}
        self.stream, self.limit, self.count = stream, limit, 0

    def upsert(self, schema: str, table: str, row: Any) -> None:
        if f"{schema}.{table}" == self.stream:
            self.count += 1
            if self.count > self.limit:
                raise RuntimeError("destination went away")
        super().upsert(schema, table, row)


def test_staff_are_deleted_after_a_completed_refresh_but_not_after_a_partial_one(make_sim: MakeSim) -> None:
    counts = {"companies": 0, "invoices": 0, "payments": 0, "prospects": 0, "jobs": 0, "staff": 450}
    sim = make_sim(accelo_counts=counts, awardco_users=0)
    sink = RecordingSink()
    _, state = sync_once(sim, sink, streams=["accelo.staff"], max_concurrency="1", checkpoint_every_rows="100")
    staff = truth_keys(sim)["accelo.staff"]
    sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="staff", delete=5))
    gone = staff - truth_keys(sim)["accelo.staff"]
    # The refresh dies after 250 rows: its checkpoints say how far it got; nothing may be deleted.
    failing = _FailingSink(sink, "accelo.staff", 250)
    with pytest.raises(RuntimeError):
        sync_once(sim, failing, state, streams=["accelo.staff"], max_concurrency="1", checkpoint_every_rows="100")
    assert not failing.deletes
    partial = StateDocument.load(failing.checkpoints[-1])
    assert "run" in partial.stream("accelo.staff") and "sweep" in partial.stream("accelo.staff")
    # Resumed, the refresh completes and only then deletes exactly the staff that are gone.
    failing.limit = 10**9
    sync_once(sim, failing, partial, streams=["accelo.staff"], max_concurrency="1", checkpoint_every_rows="100")
    assert {key for _, key in failing.deletes} == gone
    assert set(failing.tables["accelo.staff"]) == truth_keys(sim)["accelo.staff"]


# ---------------------------------------------------------------------------------------------------------------
# Kill mid-sweep: the destination as of any checkpoint (a sink that commits at checkpoints), then a resumed sync.


def _kill_mid_sweep_trials(make_sim: MakeSim, seed: int, every: int) -> None:
    sim = make_sim(seed=seed, blank_cursor_dates=3)
    sink = RecordingSink()
    _, state = sync_once(sim, sink, checkpoint_every_rows="60")
    first_checkpoints = len(sink.checkpoints)
    before = truth_keys(sim)
    _delete_everywhere(sim, 4)
    # Only rows in the destination need a delete (a blank-dated record deleted before anything read it never was).
    gone = {stream: (keys & set(sink.tables[stream])) - truth_keys(sim)[stream] for stream, keys in before.items()}
    assert sum(map(len, gone.values())) >= 20
    sync_once(sim, sink, state, checkpoint_every_rows="60", reconcile_every_hours="0")
    mid_sweep = [
        index
        for index in range(first_checkpoints, len(sink.checkpoints))
        if any("sweep" in entry for entry in sink.checkpoints[index]["streams"].values())
    ]
    assert len(mid_sweep) >= 4, "the sweep spans several checkpoints"
    for index in mid_sweep[::every]:
        killed = durable_sink(sink, index)
        # No live row was deleted by the time of the kill.
        for stream, rows in killed.deleted.items():
            assert not set(rows) - gone[stream], f"{stream}: live rows deleted before checkpoint {index}"
        sync_once(sim, killed, StateDocument.load(sink.checkpoints[index]), checkpoint_every_rows="60",
                  reconcile_every_hours="0")  # fmt: skip
        assert_matches_truth(killed, sim)
        _assert_soft_deleted(killed, gone)


def test_a_sweep_killed_at_a_checkpoint_resumes_and_deletes_exactly_what_is_gone(make_sim: MakeSim) -> None:
    _kill_mid_sweep_trials(make_sim, seed=5, every=7)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kill_mid_sweep_soak(make_sim: MakeSim, seed: int) -> None:
    _kill_mid_sweep_trials(make_sim, seed=seed, every=1)


# ---------------------------------------------------------------------------------------------------------------
# The DuckDB sink soft-deletes like Fivetran (a `_fivetran_deleted` column).


def test_to_duckdb_soft_deletes_removed_staff_and_a_re_upsert_revives_a_row(make_sim: MakeSim, tmp_path: Any) -> None:
    import duckdb

    import syncflow
    from support.sim import sim_configuration
    from syncflow._duckdb import DuckDBSink
    from syncflow.sources import ACCELO_STREAMS

    sim = make_sim()
    path = tmp_path / "w.duckdb"
    configuration = sim_configuration(sources="accelo")
    syncflow.to_duckdb(configuration, path, streams="accelo.staff", progress=False, transport=sim.transport())
    before = truth_keys(sim)["accelo.staff"]
    sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="staff", delete=3))
    gone = before - truth_keys(sim)["accelo.staff"]
    syncflow.to_duckdb(configuration, path, streams="accelo.staff", progress=False, transport=sim.transport())
    with duckdb.connect(str(path), read_only=True) as connection:
        rows = dict(connection.sql('select id, _fivetran_deleted from accelo.staff').fetchall())
    assert set(rows) == before
    assert {key for key, deleted in rows.items() if deleted} == gone

    sink = DuckDBSink(path, [ACCELO_STREAMS["staff"]])
    key = sorted(gone)[0]
    sink.delete("accelo", "staff", [{"id": key}])
    sink.upsert("accelo", "staff", {"id": key, "firstname": "Back"})  # after the delete: the row lives again
    sink.checkpoint({"version": 1, "streams": {}})
    sink.close()
    with duckdb.connect(str(path), read_only=True) as connection:
        assert connection.sql(f"select _fivetran_deleted from accelo.staff where id = {key}").fetchone() == (False,)


def test_extract_hands_over_deletes_as_pages(make_sim: MakeSim) -> None:
    import syncflow
    from support.sim import sim_configuration

    sim = make_sim()
    configuration = sim_configuration(sources="accelo")
    with syncflow.extract(configuration, "accelo.staff", transport=sim.transport()) as pages:
        assert not [page for page in pages if page.deletes]
        state = pages.state
    before = truth_keys(sim)["accelo.staff"]
    sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="staff", delete=2))
    with syncflow.extract(configuration, "accelo.staff", state=state, transport=sim.transport()) as pages:
        deleted = {key["id"] for page in pages for key in page.deletes}
    assert deleted == before - truth_keys(sim)["accelo.staff"]


def test_the_fivetran_sink_sends_one_sdk_delete_per_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from fivetran_connector_sdk import Operations

    from syncflow import fivetran

    # The SDK 3.0 signature this adapter is written against: delete(table, keys: dict, *, schema=None).
    parameters = inspect.signature(Operations.delete).parameters
    assert list(parameters) == ["table", "keys", "schema"]
    assert parameters["schema"].kind is inspect.Parameter.KEYWORD_ONLY
    calls: list[tuple[str, dict[str, Any], str | None]] = []

    class RecordingOperations:
        @staticmethod
        def delete(table: str, keys: dict[str, Any], *, schema: str | None = None) -> None:
            calls.append((table, keys, schema))

    monkeypatch.setattr(fivetran, "op", RecordingOperations)
    fivetran.FivetranSink().delete("accelo", "staff", [{"id": 3}, {"id": 9}])
    assert calls == [("staff", {"id": 3}, "accelo"), ("staff", {"id": 9}, "accelo")]


def test_a_sweep_deletes_what_the_drain_knows_and_the_sweep_did_not_see() -> None:
    # The known keys live only in the state (no mirror on the producer's side): `finish` asks the drain, after every
    # earlier patch of the stream, for known - seen. Prior keys, keys learnt this sync before the sweep began (known
    # only to the state), and a sweep's interleaved slices, more keys than one merge holds.
    from syncflow._source import SourceReport
    from syncflow.sources._accelo_catalog import accelo_resource
    from syncflow.sources._reconcile import MERGE_AFTER_KEYS, KeyTracker

    prior_ids = [i for i in range(1, 3 * MERGE_AFTER_KEYS) if i % 10]
    document = StateDocument({"accelo.companies": {"keys": KeySet(prior_ids).to_json(), "swept": 1}})
    tracker = KeyTracker(accelo_resource("companies"), document.stream("accelo.companies"), SourceReport("accelo"))
    assert tracker.known_at_start == len(prior_ids)
    learnt = list(range(3 * MERGE_AFTER_KEYS, 3 * MERGE_AFTER_KEYS + 250))
    document.apply("accelo.companies", tracker.ops_for([{"id": i} for i in learnt]))
    document.apply("accelo.companies", tracker.begin(2))
    returned = [i for i in [*prior_ids, *learnt] if i % 7]  # the sweep does not return multiples of 7: gone
    quarter = len(returned) // 4 + 1
    slices = [returned[k * quarter:(k + 1) * quarter] for k in range(4)]
    for start in range(0, quarter, 100):
        for part in slices:
            document.apply("accelo.companies", tracker.ops_for([{"id": i} for i in part[start:start + 100]]))
            assert len(tracker._unmerged_seen) < MERGE_AFTER_KEYS

    async def ask(patch: StatePatch) -> None:
        document.apply("accelo.companies", patch)  # the drain's part, here on the same thread

    deletes, ops = asyncio.run(tracker.finish(ask))
    gone = sorted({*prior_ids, *learnt} - set(returned))
    assert deletes == [{"id": i} for i in gone] and gone
    document.apply("accelo.companies", ops)
    entry = document.stream("accelo.companies")
    assert sorted(KeySet.from_json(entry["keys"], "keys")) == returned
    assert "sweep" not in entry and entry["swept"] == 2


def test_a_drain_asked_for_keys_after_its_source_stopped_waiting_answers_nobody() -> None:
    # The source was cancelled while its question was queued: applying it must change nothing and raise nothing.
    document = StateDocument({"accelo.staff": {"keys": KeySet([1, 2]).to_json()}})
    future: Future[list[Any]] = Future()
    future.cancel()
    document.apply("accelo.staff", [(("keys",), KeysNotIn(("sweep", "seen"), future))])
    assert future.cancelled()
    assert KeySet.from_json(document.stream("accelo.staff")["keys"], "keys") == KeySet([1, 2])


@pytest.mark.parametrize("include_total", [True, False])
def test_an_awardco_sync_killed_mid_pass_resumes_with_the_pages_left(make_sim: MakeSim, include_total: bool) -> None:
    # The pass's users are saved with its progress (`run.view`), so the resumed pass is confirmed from them and the
    # pages it still reads: the redo is the pages after the checkpoint, not a whole pass (it was every user again:
    # the crash soak caught redo of 1,000-1,800 rows where a checkpoint interval allows 400).
    sim = make_sim(awardco_users=1000, awardco_include_total=include_total)
    first = RecordingSink()
    sync_once(sim, first, streams=["awardco.user"], checkpoint_every_rows="100")
    runs = [c["streams"].get("awardco.user", {}).get("run") for c in first.checkpoints]
    index = next(i for i, run in enumerate(runs) if run and run.get("next_page", 0) >= 5 and run.get("pass") == 1)
    kept = durable_sink(first, index)
    next_page = runs[index]["next_page"]
    resumed = RecordingSink()
    sync_once(sim, resumed, StateDocument.load(kept.checkpoints[-1]), streams=["awardco.user"],
              checkpoint_every_rows="100")  # fmt: skip
    # Without `total`, a pass is confirmed only by a second one that finds no one new, interrupted or not: that
    # pass is the sync's own work, not redo.
    confirming = 0 if include_total else 1000
    assert resumed.upserts <= 1000 - (next_page - 1) * 100 + 100 + confirming, (resumed.upserts, next_page)
    assert set(kept.tables["awardco.user"]) | set(resumed.tables["awardco.user"]) == truth_keys(sim)["awardco.user"]


def test_an_awardco_pass_resumed_after_users_were_deleted_still_reads_every_user(make_sim: MakeSim) -> None:
    # A real API changes between the kill and the resume: users deleted from pages already read shift later users
    # onto them, where the resumed pass would never look. Its saved totals (1000) disagree with the pages it reads
    # now (995), so the pass is not confirmed and a new one reads everyone: no user is missed.
    sim = make_sim(awardco_users=1000)
    first = RecordingSink()
    sync_once(sim, first, streams=["awardco.user"], checkpoint_every_rows="100")
    runs = [c["streams"].get("awardco.user", {}).get("run") for c in first.checkpoints]
    index = next(i for i, run in enumerate(runs) if run and run.get("next_page", 0) >= 5 and run.get("pass") == 1)
    kept = durable_sink(first, index)
    sim.apply_mutation(Mutation(after_requests=1, source="awardco", entity="user", delete=5))
    resumed = RecordingSink()
    sync_once(sim, resumed, StateDocument.load(kept.checkpoints[-1]), streams=["awardco.user"],
              checkpoint_every_rows="100")  # fmt: skip
    missing = truth_keys(sim)["awardco.user"] - set(kept.tables["awardco.user"]) - set(resumed.tables["awardco.user"])
    assert not missing, sorted(missing)[:10]
