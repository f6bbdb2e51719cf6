"""Pagination, as pure state and no I/O: what each source's paging needs, and nothing it does not use.

There is no common `Paginator` protocol: the two ways of paging here share too little for one to be a real layer.
Accelo reads id-keyset slices (`IdKeysetPaginator`: a slice's filters, where it ends, when a short page is not the
end); AwardCo addresses pages by number and fetches them ahead in parallel (`page_has_more`, `page_count`), so each
request names its own page and there is no per-stream cursor object to advance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["IdKeysetPaginator", "page_count", "page_has_more"]


class IdKeysetPaginator:
    """Accelo: pages ordered by id inside one slice [lower, upper), each page asking for ids above the last seen.

    Keyset paging is immune to records leaving the filtered set mid-sync (offset pages would shift and skip one).
    A short page does not end the slice (servers may cap `_limit`); an empty page does.
    `trim` drops rows at or above `upper` (they belong to the next slice, which fetches them itself).
    """

    def __init__(
        self,
        *,
        limit: int,
        window_filters: Sequence[str],
        after: int | None,
        lower_inclusive: int | None = None,
        upper: int | None = None,
        has_next_page: bool = True,
        order: Sequence[str] = ("order_by_asc(id)",),  # () where the API lists no order filter (its default is id)
    ) -> None:
        self.limit = limit
        self.order = tuple(order)
        self.window_filters = tuple(window_filters)
        self.after = after
        self.lower_inclusive = lower_inclusive
        self.upper = upper
        self._has_next = has_next_page
        # The size of the last page if it was short yet did not end the slice (None otherwise).
        self.last_short: int | None = None

    def __repr__(self) -> str:
        return f"IdKeysetPaginator(after={self.after}, upper={self.upper}, has_next={self._has_next})"

    @property
    def has_next_page(self) -> bool:
        return self._has_next

    def init_request(self, params: dict[str, Any]) -> None:
        params["_limit"] = self.limit
        self.update_request(params)

    def update_request(self, params: dict[str, Any]) -> None:
        filters = list(self.window_filters)
        if self.after is not None:
            filters.append(f"id_greater_than({self.after})")
        elif self.lower_inclusive is not None:
            filters.append(f"id_greater_than_or_equal({self.lower_inclusive})")
        if self.upper is not None:
            filters.append(f"id_less_than({self.upper})")
        filters.extend(self.order)
        params["_filters"] = ",".join(filters)

    def trim(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], bool]:
        """The rows that belong to this slice, and whether any were cut (the slice's end is reached)."""
        if self.upper is None:
            return list(rows), False
        kept = [row for row in rows if row["id"] < self.upper]
        return kept, len(kept) < len(rows)

    def update_state(
        self,
        body: Any,
        rows: Sequence[Mapping[str, Any]],
        *,
        served: int | None = None,
        trimmed: bool = False,
        more_expected: bool = True,
    ) -> None:
        """`rows`: this slice's typed rows of the page; `served`: how many records the API sent; `more_expected`:
        False when the caller knows that a short page is the last (a count reached, or a deployment known to serve
        more per page), so a short page may end the slice. A full page never ends it: only the next request can say
        whether a record entered the set while it was read (a late commit in a dated window)."""
        served = len(rows) if served is None else served
        previous = self.after
        if rows:
            self.after = max(int(row["id"]) for row in rows)
        reached_upper = self.upper is not None and self.after is not None and self.after >= self.upper - 1
        full = served >= self.limit
        # A short page is not the end: a deployment may serve fewer rows than `_limit` asks. Only an empty page, the
        # slice's upper bound, or the caller's knowledge (`more_expected`) ends it; the keyset makes the extra request
        # cheap and exact.
        self._has_next = served > 0 and not trimmed and not reached_upper and (full or more_expected)
        self.last_short = served if self._has_next and not full else None
        if self._has_next and self.after == previous:
            if full:
                # A full page that does not move the keyset forward would be asked for again forever.
                raise ValueError("a full page with no usable ids: the keyset cannot advance")
            self._has_next = False  # a short page of unusable ids: nothing further can be asked for
            self.last_short = None


def page_count(body: Any, per_page: int) -> int | None:
    """How many pages there are, when the API says how many records (`total`): callers then fetch them in parallel.

    Counted by the page size the server says it used when it caps `per_page` below what was asked.
    """
    total = body.get("total") if isinstance(body, Mapping) else None
    if isinstance(total, (int, str)) and not isinstance(total, bool) and str(total).isdigit():
        return max(1, math.ceil(int(total) / served_page_size(body, per_page)))
    return None


def page_has_more(body: Any, rows: int, per_page: int) -> bool:
    """Whether another page follows: `has_more` when the API sends it, else whether this page was full.

    "Full" is judged against the page size the server says it used, when it says so: a server that caps
    `per_page` below what we asked must not make its full pages look like the last one.
    """
    has_more = body.get("has_more") if isinstance(body, Mapping) else None
    if isinstance(has_more, bool):
        return has_more
    return rows > 0 and rows >= served_page_size(body, per_page)


def served_page_size(body: Any, per_page: int) -> int:
    """The page size the server says it used when it capped ours (`per_page` in the body, 0 < it < ours), else ours.

    The one reading of the served size, for both "was this page full" and "how many pages does `total` make".
    """
    served = body.get("per_page") if isinstance(body, Mapping) else None
    if isinstance(served, int) and not isinstance(served, bool) and 0 < served < per_page:
        return served
    return per_page
