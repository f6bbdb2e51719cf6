"""No request spent twice (issue 16): what each sync costs, counted by the simulator's own request log.

Exact numbers per stream, for the classic streams (SMALL_COUNTS: companies 230, invoices 410, payments 170,
prospects 90, jobs 260, staff 35; AwardCo 330 users), and the conditions under which a short page may end a read
(`page_ends`) without losing rows on a deployment that caps its pages."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from support.sim import CLASSIC_STREAMS, SMALL_COUNTS, RecordingSink, assert_matches_truth, sync_once
from syncflow.sim import Mutation, Simulator
from syncflow.sources import ACCELO_STREAMS, AWARDCO_STREAMS

MakeSim = Callable[..., Simulator]


def _clock(offset: list[float]) -> Callable[[], float]:
    return lambda: time.time() + offset[0]


def _per_stream(sim: Simulator) -> tuple[dict[str, int], dict[str, int]]:
    """(data requests per stream, /count requests per stream) since the last reset."""
    by_path = {f"GET {s.endpoint}": s.key for s in (*ACCELO_STREAMS.values(), *AWARDCO_STREAMS.values())}  # type: ignore[attr-defined]
    requests: dict[str, int] = {}
    counts: dict[str, int] = {}
    for endpoint, n in sim.stats().by_endpoint.items():
        if endpoint.startswith("POST "):
            continue
        base = endpoint.removesuffix("/count")
        key = by_path[base]
        requests[key] = requests.get(key, 0) + n
        if endpoint != base:
            counts[key] = counts.get(key, 0) + n
    return requests, counts


def _two_syncs(
    make_sim: MakeSim, *, edits: list[Mutation] = (), later: float = 5, **config: Any
) -> tuple[Simulator, RecordingSink, tuple[dict[str, int], dict[str, int]], tuple[dict[str, int], dict[str, int]]]:
    offset = [0.0]
    sim = make_sim(clock=_clock(offset), **config)
    for mutation in edits:
        sim.apply_mutation(mutation)
    offset[0] += 2
    sink = RecordingSink()
    _, state = sync_once(sim, sink)
    first = _per_stream(sim), sim.stats().token_requests
    sim.reset_stats()
    offset[0] += later
    sync_once(sim, sink, state)
    assert sim.stats().token_requests == 1 and first[1] == 1
    return sim, sink, first[0], _per_stream(sim)


def test_a_quiet_incremental_sync_costs_one_request_per_stream_plus_the_token(make_sim: MakeSim) -> None:
    sim, sink, _, (requests, counts) = _two_syncs(make_sim)
    # 7 data requests + 1 token: each incremental window's empty first page, staff's (a full refresh of 35 rows)
    # one short page, AwardCo's first page; no /count anywhere.
    assert requests == dict.fromkeys(CLASSIC_STREAMS, 1)
    assert counts == {}
    assert_matches_truth(sink, sim)


def test_a_first_full_sync_asks_each_count_once_and_no_page_after_the_last(make_sim: MakeSim) -> None:
    sim, sink, (requests, counts), _ = _two_syncs(make_sim)
    accelo = {f"accelo.{table}": rows for table, rows in SMALL_COUNTS.items()}
    # One /count per Accelo stream (asked with its first page), then exactly the pages its rows fill: the sole
    # slice ends once the count is read, so no empty page confirms the end.
    assert counts == dict.fromkeys(accelo, 1)
    for stream, rows in accelo.items():
        assert requests[stream] == 1 + math.ceil(rows / 100), stream
    # AwardCo's `total` sizes it: its pages at once (a first sync asks pages 1-4 before the total is known: here exactly
    # its pages; a shorter list would cost up to 3 more, test_engine_sync's opening test).
    assert requests["awardco.user"] == math.ceil(330 / 100)
    assert_matches_truth(sink, sim)


def test_edits_inside_the_lookback_cost_only_the_pages_they_fill(make_sim: MakeSim) -> None:
    # Modified just before the first sync: the next window's lookback re-reads them.
    edits = [Mutation(1, "accelo", "companies", modify=60), Mutation(1, "accelo", "invoices", modify=150)]
    sim, sink, _, (requests, counts) = _two_syncs(make_sim, edits=edits)
    # companies: 60 records, one short page that ends the window (no count). invoices: a full first page, so
    # the count is asked (to cut slices), then the short second page reaches it.
    assert requests["accelo.companies"] == 1
    assert requests["accelo.invoices"] == 3 and counts == {"accelo.invoices": 1}
    others = [stream for stream in CLASSIC_STREAMS if stream not in ("accelo.companies", "accelo.invoices")]
    assert all(requests[stream] == 1 for stream in others)
    assert_matches_truth(sink, sim)


def test_a_due_sweep_ends_at_its_short_last_page(make_sim: MakeSim) -> None:
    # A day later every incremental stream's reconciliation sweep is due: each re-reads its table by id keyset.
    sim, sink, _, (requests, counts) = _two_syncs(make_sim, later=25 * 3600)
    for table, rows in SMALL_COUNTS.items():
        stream = f"accelo.{table}"
        # staff is a full refresh (its read is the sweep): one page. The others: the empty incremental window,
        # then the pages of the sweep, the short last one ending it (none of the counts is a multiple of 100).
        assert requests[stream] == (1 if table == "staff" else 1 + math.ceil(rows / 100)), stream
    assert counts == {}
    assert_matches_truth(sink, sim)


def test_a_deployment_that_caps_its_pages_still_loses_nothing(make_sim: MakeSim) -> None:
    # A deployment serving 50 rows whatever _limit asks: a page of 50 is as long as the longest it ever served, so
    # it proves nothing; the count decides, and every edited record arrives.
    edits = [Mutation(1, "accelo", "companies", modify=70), Mutation(1, "accelo", "staff", modify=5)]
    sim, sink, _, (requests, counts) = _two_syncs(make_sim, edits=edits, accelo_page_size_max=50)
    # companies: first page (50), the count, the second page (20) reaching it.
    assert requests["accelo.companies"] == 3 and counts.get("accelo.companies") == 1
    assert_matches_truth(sink, sim)


def test_a_page_as_long_as_the_cap_is_not_taken_for_the_end(make_sim: MakeSim) -> None:
    """On a capped deployment, a window of exactly one capped page more than the cap: the short-page rule must not
    end the read at the first (full-for-the-cap) page."""
    offset = [0.0]
    sim = make_sim(clock=_clock(offset), accelo_page_size_max=50)
    sink = RecordingSink()
    _, state = sync_once(sim, sink, streams=["accelo.companies"])
    # 51 records modified after the first sync: a page of 50 (the cap) and one of 1.
    offset[0] += 2
    sim.apply_mutation(Mutation(1, "accelo", "companies", modify=51))
    offset[0] += 2
    sim.reset_stats()
    sync_once(sim, sink, state, streams=["accelo.companies"])
    requests, counts = _per_stream(sim)
    assert requests == {"accelo.companies": 3} and counts == {"accelo.companies": 1}  # page of 50, count, page of 1
    assert_matches_truth(sink, sim, streams=["accelo.companies"])


def test_a_list_without_count_on_a_capped_deployment_is_read_past_its_short_first_page(make_sim: MakeSim) -> None:
    """assets/types documents no /count. Read alone in a first sync of a deployment serving 50 rows a page, its
    first page of 50 proves nothing (no page seen was longer), so the read goes on; the next page, 20, is shorter than
    the 50 just served, so it is the end. The next sync's first page of 50 still proves nothing either."""
    sim = make_sim(accelo_counts={**SMALL_COUNTS, "assets_types": 70}, accelo_page_size_max=50)
    sink = RecordingSink()
    stream = ["accelo.assets_types"]
    _, state = sync_once(sim, sink, streams=stream)
    assert len(sink.tables["accelo.assets_types"]) == 70
    assert _per_stream(sim)[0] == {"accelo.assets_types": 2}  # 50, then 20
    sim.reset_stats()
    sync_once(sim, sink, state, streams=stream)
    # A full refresh: 50 (as long as the longest yet: not the end), then 20.
    assert _per_stream(sim)[0] == {"accelo.assets_types": 2}
    assert len(sink.tables["accelo.assets_types"]) == 70


def test_a_full_last_page_is_not_the_end_even_when_the_count_is_reached(make_sim: MakeSim) -> None:
    """The request after a full last page is kept for safety. 200 companies are modified inside the next window (400 s
    before it starts, so outside the lookback of the window after it); while that window's second page is asked,
    15 records are committed late, stamped inside the window. Those that enter it push the window's last records onto
    a third page: stopping at the count (200 read) would lose them for good."""
    offset = [0.0]
    late = Mutation(after_requests=7, source="accelo", entity="companies", modify=15, late_by=60)
    sim = make_sim(seed=0, clock=_clock(offset), mutations=[late])
    sink = RecordingSink()
    companies = ["accelo.companies"]
    _, state = sync_once(sim, sink, streams=companies)
    assert sim.stats().data_requests == 4  # count + first page, two pages: the late commits land at request 7
    offset[0] += 1000
    sim.apply_mutation(Mutation(1, "accelo", "companies", modify=200))
    offset[0] += 400
    sim.reset_stats()
    sync_once(sim, sink, state, streams=companies)
    # First page, count, second page (full: 200 read, the count reached), and the third page that is still asked.
    assert _per_stream(sim)[0] == {"accelo.companies": 4}
    offset[0] += 5
    sync_once(sim, sink, state, streams=companies)  # its lookback re-reads the late commits themselves
    assert_matches_truth(sink, sim, streams=companies)
