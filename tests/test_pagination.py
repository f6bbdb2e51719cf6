"""Paginators (Accelo's id keyset, AwardCo's page numbers) and how Accelo shares its slice budget."""

from __future__ import annotations

from typing import Any

from syncflow._pagination import IdKeysetPaginator, page_count, page_has_more


def test_keyset_paginator_bounds_a_slice_and_stops_at_its_end() -> None:
    paginator = IdKeysetPaginator(limit=2, window_filters=["date_modified_before(9)"], after=None,
                                  lower_inclusive=10, upper=20)  # fmt: skip
    params: dict[str, Any] = {}
    paginator.init_request(params)
    assert (
        params["_filters"] == "date_modified_before(9),id_greater_than_or_equal(10),id_less_than(20),order_by_asc(id)"
    )
    kept, trimmed = paginator.trim([{"id": 12}, {"id": 15}])
    paginator.update_state(None, kept, served=2, trimmed=trimmed)
    assert paginator.has_next_page and paginator.after == 15
    paginator.update_request(params)
    assert "id_greater_than(15)" in params["_filters"]
    kept, trimmed = paginator.trim([{"id": 18}, {"id": 21}])
    assert kept == [{"id": 18}] and trimmed
    paginator.update_state(None, kept, served=2, trimmed=trimmed)
    assert not paginator.has_next_page


def test_numbered_pages_follow_has_more_and_learn_the_total() -> None:
    assert page_has_more({"users": [], "has_more": True, "total": 250}, 100, 100)
    assert page_count({"users": [], "has_more": True, "total": 250}, 100) == 3
    assert page_count({"total": 250, "per_page": 50}, 100) == 5, "counted by the size the server says it served"
    assert page_count({"users": []}, 100) is None
    assert not page_has_more({"users": []}, 40, 100), "no has_more: a short page ends it"
    assert page_has_more({"users": [], "per_page": 40}, 40, 100), "a page full at the server's cap is not the end"


def test_a_server_that_caps_page_size_does_not_end_the_stream_early() -> None:
    assert page_has_more({"users": [], "per_page": 50}, 50, 100)  # capped at 50: a full page, not the last
    assert not page_has_more({"users": []}, 50, 100)  # no word from the server: a short page is the last
    assert not page_has_more({"users": [], "per_page": 50}, 0, 100)
    assert page_has_more({"has_more": True}, 3, 100)  # has_more wins


def test_the_slice_budget_is_shared_in_proportion_to_the_work() -> None:
    from syncflow.sources.accelo import MIN_PAGES_PER_SLICE, allocate_slices

    shares = allocate_slices({"big": 400, "mid": 100, "small": 9, "one": 1, "none": 0}, 16)
    assert shares["big"] > shares["mid"] > shares["small"] >= 1
    assert shares["one"] == shares["none"] == 1
    assert sum(shares.values()) <= 16 + 3  # about the concurrency: the pages held while planning stay bounded
    assert 400 // shares["big"] >= MIN_PAGES_PER_SLICE
    assert allocate_slices({"a": 10_000}, 16) == {"a": 16}  # a single huge table uses the whole budget


def test_the_served_page_size_is_read_one_way_for_has_more_and_for_total_pages() -> None:
    # A capped size the server states counts for both; anything else (a JSON true, zero, more than asked) for neither.
    for served, size in ((50, 50), (True, 100), (0, 100), (500, 100), ("50", 100)):
        body = {"users": [], "per_page": served, "total": 250}
        assert page_has_more(body, size, 100), served
        assert page_count(body, 100) == -(-250 // size), (served, page_count(body, 100))
