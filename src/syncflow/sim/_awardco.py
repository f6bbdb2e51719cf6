"""AwardCo ``GET /api/users``: page/per_page pagination with an inclusive ``updated_since`` filter."""

from __future__ import annotations

import random
from collections.abc import Mapping

from .._time import parse_iso8601
from ._data import Users
from ._reply import Reply, json_reply, raw_json_reply

DEFAULT_PER_PAGE = 50


def error(http_status: int, code: str, message: str | None = None) -> Reply:
    payload = {"error": code} if message is None else {"error": code, "message": message}
    return json_reply(http_status, payload)


class BadRequest(Exception):
    pass


def parse_since(raw: str) -> float:
    """ISO-8601 (``Z``, an offset, or naive = UTC; a bare date allowed) → unix seconds."""
    try:
        return parse_iso8601(raw.strip()).timestamp()
    except ValueError:
        raise BadRequest(f"updated_since must be an ISO-8601 timestamp, got {raw!r}") from None


def _positive_int(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise BadRequest(f"{name} must be >= 1, got {value}")
    return value


def users_reply(
    users: Users,
    params: Mapping[str, str],
    *,
    since_param: str,
    page_size_max: int,
    include_total: bool,
    order: str = "employee_id",
    ties: random.Random | None = None,
) -> Reply:
    try:
        page = _positive_int(params, "page", 1)
        per_page = min(page_size_max, _positive_int(params, "per_page", DEFAULT_PER_PAGE))
        raw_since = params.get(since_param)
        since = parse_since(raw_since) if raw_since else None
    except BadRequest as exc:
        return error(400, "bad_request", str(exc))
    if since is None:
        rows: list[int] | range = range(len(users.records))
    else:
        rows = [i for i, ts in enumerate(users.updated) if ts >= since]  # inclusive: ties are re-read
    if order == "updated_at":
        # Sorted on a non-unique column: ties come back in whatever order this request's plan produced.
        shuffle = ties if ties is not None else random.Random()
        tiebreak = {i: shuffle.random() for i in rows}
        updated = users.updated
        # A blank date (NaN) sorts first, like a NULL in ascending SQL order.
        rows = sorted(rows, key=lambda i: (updated[i] if updated[i] == updated[i] else -1, tiebreak[i]))
    start = (page - 1) * per_page
    chosen = rows[start : start + per_page]
    # Assembled by hand around the cached row JSON; key order matches what json.dumps of the dict would give.
    tail = f',"total":{len(rows)}' if include_total else ""
    has_more = "true" if start + per_page < len(rows) else "false"
    users_json = users.json.rows_json(users.records, chosen, None)
    return raw_json_reply(
        200, f'{{"users":{users_json},"has_more":{has_more},"page":{page},"per_page":{per_page}{tail}}}'
    )
