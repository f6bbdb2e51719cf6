"""Accelo API v0: the token grant and the list/count queries over one entity table."""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from ._data import Table, dumps
from ._reply import Reply, json_reply, raw_json_reply

MORE_INFO = "https://api.accelo.com/docs/#status-codes"
META_OK = {"status": "ok", "message": "Everything executed as expected.", "more_info": MORE_INFO}
_META_OK_JSON = dumps(META_OK)
DEFAULT_LIMIT = 10
MAX_LIMIT = 100

_ID_RANGES: Mapping[str, Callable[[int], tuple[int | None, int | None]]] = {
    # filter name -> (inclusive lower bound, inclusive upper bound)
    "id_greater_than": lambda n: (n + 1, None),
    "id_greater_than_or_equal": lambda n: (n, None),
    "id_less_than": lambda n: (None, n - 1),
    "id_less_than_or_equal": lambda n: (None, n),
}


def error(http_status: int, status: str, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return json_reply(http_status, {"meta": {"status": status, "message": message, "more_info": MORE_INFO}}, headers)


class QueryError(Exception):
    """A request the API rejects; carries the reply to send."""

    def __init__(self, http_status: int, status: str, message: str) -> None:
        super().__init__(message)
        self.reply = error(http_status, status, message)


# --------------------------------------------------------------------------------------------------------------
# Token grant.


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str


def parse_basic(header: str | None) -> Credentials | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return Credentials(client_id, secret) if sep else None


def token_request_error(authorization: str | None, form_body: bytes, expected: Credentials) -> Reply | None:
    """The error reply for a bad token request, or None when the grant may be issued."""
    creds = parse_basic(authorization)
    if creds is None:
        return error(401, "invalid_client", "Client authentication failed: HTTP Basic credentials are required.")
    if creds != expected:
        return error(401, "invalid_client", "Client authentication failed: unknown client or wrong secret.")
    form = dict(parse_qsl(form_body.decode("latin-1"), keep_blank_values=True))
    grant = form.get("grant_type")
    if grant != "client_credentials":
        return error(400, "invalid_request", f"Unsupported grant_type {grant!r}; expected 'client_credentials'.")
    return None


def token_scope(form_body: bytes) -> str:
    return dict(parse_qsl(form_body.decode("latin-1"))).get("scope") or "read(all)"


# --------------------------------------------------------------------------------------------------------------
# Queries.


def split_filters(raw: str) -> list[tuple[str, list[str]]]:
    """``a(1),b(x,y)`` -> ``[("a", ["1"]), ("b", ["x", "y"])]``; commas inside parentheses separate arguments."""
    items: list[tuple[str, list[str]]] = []
    depth = 0
    current: list[str] = []
    chunks: list[str] = []
    for ch in raw:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise QueryError(400, "invalid_filter", f"Unbalanced parentheses in _filters: {raw!r}")
        if ch == "," and depth == 0:
            chunks.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise QueryError(400, "invalid_filter", f"Unbalanced parentheses in _filters: {raw!r}")
    chunks.append("".join(current))
    for chunk in chunks:
        chunk = chunk.strip()
        if not chunk:
            continue
        name, sep, rest = chunk.partition("(")
        if not sep or not rest.endswith(")") or not name.strip():
            raise QueryError(400, "invalid_filter", f"Malformed filter {chunk!r}: expected name(argument).")
        args = [a.strip() for a in rest[:-1].split(",")]
        items.append((name.strip(), args))
    return items


def _int_arg(name: str, args: list[str]) -> int:
    if len(args) != 1:
        raise QueryError(400, "invalid_filter", f"Filter {name} takes exactly one argument.")
    try:
        return int(args[0])
    except ValueError:
        raise QueryError(400, "invalid_filter", f"Filter {name} needs an integer, got {args[0]!r}.") from None


@dataclass
class Query:
    lo: int | None = None  # inclusive id bounds
    hi: int | None = None
    id_in: set[int] | None = None
    # (column of ints, value, True for "_after" (strictly greater) / False for "_before" (strictly less))
    dates: list[tuple[list[int], int, bool]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)


def parse_query(table: Table, raw: str | None) -> Query:
    query = Query()
    if not raw:
        return query
    spec = table.spec
    for name, args in split_filters(raw):
        if name in _ID_RANGES:
            lo, hi = _ID_RANGES[name](_int_arg(name, args))
            if lo is not None:
                query.lo = lo if query.lo is None else max(query.lo, lo)
            if hi is not None:
                query.hi = hi if query.hi is None else min(query.hi, hi)
        elif name == "id":
            try:
                wanted = {int(a) for a in args if a}
            except ValueError:
                raise QueryError(400, "invalid_filter", f"Filter id needs integers, got {args!r}.") from None
            query.id_in = wanted if query.id_in is None else query.id_in & wanted
        elif name in ("order_by_asc", "order_by_desc"):
            if len(args) != 1 or (args[0] != "id" and args[0] not in spec.filter_dates):
                raise QueryError(
                    400, "invalid_filter", f"Cannot order {spec.name} by {','.join(args)!r} (filter {name})."
                )
            query.order.append((args[0], name == "order_by_desc"))
        elif name.endswith(("_after", "_before")):
            after = name.endswith("_after")
            date_field = name[: -len("_after")] if after else name[: -len("_before")]
            if date_field not in spec.filter_dates:
                raise QueryError(400, "invalid_filter", f"Filter {name} is not supported on {spec.name}.")
            query.dates.append((table.dates[date_field], _int_arg(name, args), after))
        else:
            raise QueryError(400, "invalid_filter", f"Filter {name} is not supported on {spec.name}.")
    return query


def _candidates(table: Table, query: Query, descending_ids: bool) -> Iterable[int]:
    """Row indices within the id bounds, in id order, found by bisection rather than a scan."""
    ids = table.ids
    start = 0 if query.lo is None else bisect.bisect_left(ids, query.lo)
    stop = len(ids) if query.hi is None else bisect.bisect_right(ids, query.hi)
    if query.id_in is not None:
        found = [i for i in (bisect.bisect_left(ids, x) for x in sorted(query.id_in)) if i < len(ids)]
        rows = [i for i in found if start <= i < stop and ids[i] in query.id_in]
        return reversed(rows) if descending_ids else rows
    return range(stop - 1, start - 1, -1) if descending_ids else range(start, stop)


_NO_DATE = -1  # below every stored date (a missing date is stored as 0)
_FAR_FUTURE = 1 << 62


def _matches(query: Query, rows: Iterable[int]) -> Iterable[int]:
    """Rows passing the date filters, lazily, in the order given.

    The strict ``_after``/``_before`` pairs are merged into one open interval per column so that the common
    cursor window (``date_modified_after(a),date_modified_before(b)``) is a single chained comparison per row.
    """
    if not query.dates:
        return rows
    bounds: dict[int, tuple[list[int], int, int]] = {}
    for col, value, after in query.dates:
        _, lo, hi = bounds.get(id(col), (col, _NO_DATE, _FAR_FUTURE))
        bounds[id(col)] = (col, max(lo, value), hi) if after else (col, lo, min(hi, value))
    checks = list(bounds.values())
    if len(checks) == 1:
        col, lo, hi = checks[0]
        return (i for i in rows if lo < col[i] < hi)
    return (i for i in rows if all(lo < col[i] < hi for col, lo, hi in checks))


def select(table: Table, query: Query, offset: int, limit: int) -> list[int]:
    """Row indices of the requested page."""
    order = query.order
    if not order or all(f == "id" for f, _ in order):
        # Ordered by id: walk the id range lazily and stop as soon as the page is full.
        page: list[int] = []
        skipped = 0
        for i in _matches(query, _candidates(table, query, descending_ids=bool(order) and order[0][1])):
            if skipped < offset:
                skipped += 1
                continue
            page.append(i)
            if len(page) >= limit:
                break
        return page
    rows = list(_matches(query, _candidates(table, query, descending_ids=False)))
    # Stable sorts applied from the last key to the first give a lexicographic order; ties keep ascending id.
    for name, desc in reversed(order):
        if name == "id":
            rows.sort(key=table.ids.__getitem__, reverse=desc)
        else:
            rows.sort(key=table.dates[name].__getitem__, reverse=desc)
    return rows[offset : offset + limit]


def count(table: Table, query: Query) -> int:
    rows = _candidates(table, query, descending_ids=False)
    if not query.dates:
        return len(rows) if isinstance(rows, range | list) else sum(1 for _ in rows)
    return sum(1 for _ in _matches(query, rows))


def _int_param(params: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(400, "invalid_request", f"Parameter {name} must be an integer, got {raw!r}.") from None
    if value < minimum:
        raise QueryError(400, "invalid_request", f"Parameter {name} must be >= {minimum}, got {value}.")
    return value


def select_fields(table: Table, raw: str | None) -> tuple[str, ...]:
    spec = table.spec
    if raw is None or not raw.strip():
        return spec.default_fields
    wanted = {f.strip() for f in raw.split(",")}
    if "_ALL" in wanted:
        return spec.fields
    # `id` always comes back; unknown names are silently ignored, as Accelo does.
    return tuple(f for f in spec.fields if f == "id" or f in wanted)


def list_reply(table: Table, params: Mapping[str, str], *, page_size_max: int = MAX_LIMIT) -> Reply:
    try:
        # A deployment may serve fewer rows than `_limit` asks (page_size_max); `_page` then counts served pages.
        limit = min(MAX_LIMIT, page_size_max, _int_param(params, "_limit", DEFAULT_LIMIT, 1))
        page = _int_param(params, "_page", 0, 0)
        offset = _int_param(params, "_offset", page * limit, 0) if "_offset" in params else page * limit
        fields = select_fields(table, params.get("_fields"))
        query = parse_query(table, params.get("_filters"))
    except QueryError as exc:
        return exc.reply
    rows = select(table, query, offset, limit)
    selection = None if fields == table.spec.fields else fields
    return raw_json_reply(
        200, f'{{"meta":{_META_OK_JSON},"response":{table.json.rows_json(table.records, rows, selection)}}}'
    )


def count_reply(table: Table, params: Mapping[str, str]) -> Reply:
    try:
        query = parse_query(table, params.get("_filters"))
    except QueryError as exc:
        return exc.reply
    return json_reply(200, {"meta": META_OK, "response": {"count": str(count(table, query))}})
