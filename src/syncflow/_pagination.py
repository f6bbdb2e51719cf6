"""Paginators: tiny classes behind one protocol, pure state, no I/O; a fresh one per stream or slice.

init_request(params)     put the first page's parameters into `params`
update_state(body, rows) learn from a page (rows already extracted and typed)
update_request(params)   put the next page's parameters into `params`
has_next_page            whether another request is needed
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["IdKeysetPaginator", "PageNumberPaginator", "Paginator"]


class Paginator(Protocol):
    @property
    def has_next_page(self) -> bool: ...

    def init_request(self, params: dict[str, Any]) -> None: ...

    def update_state(self, body: Any, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def update_request(self, params: dict[str, Any]) -> None: ...


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
        False when the caller knows (from a count) that nothing remains, so a short page may end the slice."""
        served = len(rows) if served is None else served
        previous = self.after
        if rows:
            self.after = max(int(row["id"]) for row in rows)
        reached_upper = self.upper is not None and self.after is not None and self.after >= self.upper - 1
        full = served >= self.limit
        # A short page is not the end: a deployment may serve fewer rows than `_limit` asks. Only an empty page (or
        # the slice's upper bound) ends it; the keyset makes the extra request cheap and exact.
        self._has_next = served > 0 and not trimmed and not reached_upper and (full or more_expected)
        self.last_short = served if self._has_next and not full else None
        if self._has_next and self.after == previous:
            if full:
                # A full page that does not move the keyset forward would be asked for again forever.
                raise ValueError("a full page with no usable ids: the keyset cannot advance")
            self._has_next = False  # a short page of unusable ids: nothing further can be asked for
            self.last_short = None


class PageNumberPaginator:
    """AwardCo: 1-based `page` / `per_page`, ending on `has_more: false` (or a short page when it is absent).

    `total`, when the API sends it, tells how many pages there are, so callers can fetch ahead in parallel.
    """

    def __init__(self, *, per_page: int, first_page: int = 1) -> None:
        self.per_page = per_page
        self.page = first_page
        self.total_pages: int | None = None
        self._has_next = True

    def __repr__(self) -> str:
        return f"PageNumberPaginator(page={self.page}, total_pages={self.total_pages}, has_next={self._has_next})"

    @property
    def has_next_page(self) -> bool:
        return self._has_next

    def init_request(self, params: dict[str, Any]) -> None:
        params["per_page"] = self.per_page
        params["page"] = self.page

    def update_state(self, body: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        self._has_next = page_has_more(body, len(rows), self.per_page)
        total = body.get("total") if isinstance(body, Mapping) else None
        if isinstance(total, (int, str)) and str(total).isdigit():
            self.total_pages = max(1, math.ceil(int(total) / served_page_size(body, self.per_page)))

    def update_request(self, params: dict[str, Any]) -> None:
        self.page += 1
        params["page"] = self.page


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
