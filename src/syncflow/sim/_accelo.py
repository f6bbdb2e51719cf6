"""Accelo API v0: the token grant and the list/count queries over one entity table."""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from ._data import EntitySpec, Record, Table, dumps
from ._reply import Reply, json_reply, raw_json_reply

MORE_INFO = "https://api.accelo.com/docs/#status-codes"
META_OK = {"status": "ok", "message": "Everything executed as expected.", "more_info": MORE_INFO}
_META_OK_JSON = dumps(META_OK)
DEFAULT_LIMIT = 10
MAX_LIMIT = 100


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


def oauth_error(http_status: int, code: str, description: str) -> Reply:
    """A token-endpoint error as the docs (and OAuth 2.0, RFC 6749 section 5.2) shape it: no `meta` object."""
    return json_reply(http_status, {"error": code, "error_description": description})


def token_request_error(authorization: str | None, form_body: bytes, expected: Credentials) -> Reply | None:
    """The error reply for a bad token request, or None when the grant may be issued."""
    creds = parse_basic(authorization)
    if creds is None:
        return oauth_error(401, "invalid_client", "Client authentication failed: HTTP Basic credentials are required.")
    if creds != expected:
        return oauth_error(401, "invalid_client", "Client authentication failed: unknown client or wrong secret.")
    form = dict(parse_qsl(form_body.decode("latin-1"), keep_blank_values=True))
    grant = form.get("grant_type")
    if not grant:
        return oauth_error(400, "invalid_request", "The request is missing the grant_type parameter.")
    if grant != "client_credentials":
        return oauth_error(400, "unsupported_grant_type", f"Unsupported grant_type {grant!r}; use client_credentials.")
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


# Longest first, so `id_greater_than_or_equal` is not read as `id_greater_than` + "_or_equal".
_RANGE_SUFFIXES: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
    ("_greater_than_or_equal", lambda a, b: a >= b),
    ("_less_than_or_equal", lambda a, b: a <= b),
    ("_greater_than", lambda a, b: a > b),
    ("_less_than", lambda a, b: a < b),
)
_ID_RANGES: Mapping[str, Callable[[int], tuple[int | None, int | None]]] = {
    # suffix -> (inclusive lower bound, inclusive upper bound)
    "_greater_than": lambda n: (n + 1, None),
    "_greater_than_or_equal": lambda n: (n, None),
    "_less_than": lambda n: (None, n - 1),
    "_less_than_or_equal": lambda n: (None, n),
}

Predicate = Callable[[Record], bool]


@dataclass
class Query:
    lo: int | None = None  # inclusive id bounds
    hi: int | None = None
    id_in: set[int] | None = None
    id_not_in: set[int] | None = None
    # (column of ints, value, True for "_after" (strictly greater) / False for "_before" (strictly less))
    dates: list[tuple[list[int], int, bool]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    predicates: list[Predicate] = field(default_factory=list)  # filters over other fields, per record


def _unsupported(name: str, spec: EntitySpec) -> QueryError:
    return QueryError(400, "invalid_filter", f"Filter {name} is not supported on {spec.name}.")


def _not_simulated(name: str, spec: EntitySpec) -> QueryError:
    # The docs list it, but the simulator cannot evaluate it: refusing is stricter than ignoring it would be.
    return QueryError(400, "invalid_filter", f"Filter {name} on {spec.name} is documented but not simulated.")


def _numeric(kind: str) -> bool:
    return kind in ("LONG", "UTC_DATETIME") or kind.startswith("DECIMAL")


# Predicates and sort keys are partials of these (typed) functions rather than lambdas with default arguments.
def _value_in(record: Mapping[str, Any], *, column: str, values: frozenset[str], negated: bool) -> bool:
    return (str(record.get(column)) in values) != negated


def _is_empty(record: Mapping[str, Any], *, column: str) -> bool:
    return record.get(column) in (None, "", "0")


def _record_sort_value(table: Table, name: str, kind: str, index: int) -> Any:
    return _sort_value(kind, table.records[index].get(name))


def _sort_value(kind: str, value: Any) -> Any:
    if _numeric(kind):
        try:
            return (0, Decimal(value)) if value not in (None, "") else (-1, Decimal(0))
        except InvalidOperation:
            return (1, Decimal(0))
    return (0, str(value)) if value is not None else (-1, "")


def _range_check(column: str, kind: str, compare: Callable[[Any, Any], bool], bound: Any) -> Predicate:
    def check(rec: Record) -> bool:
        return rec.get(column) is not None and compare(_sort_value(kind, rec[column]), bound)

    return check


def _ids_arg(name: str, args: list[str]) -> set[int]:
    try:
        return {int(a) for a in args if a}
    except ValueError:
        raise QueryError(400, "invalid_filter", f"Filter {name} needs integers, got {args!r}.") from None


def _field_filter(spec: EntitySpec, name: str, field_name: str) -> str:
    if field_name not in spec.types:
        raise _not_simulated(name, spec)
    return field_name


def parse_query(table: Table, raw: str | None) -> Query:
    """The filters the docs list for this entity, and nothing else (400 otherwise); of a repeated filter the last
    one wins."""
    query = Query()
    if not raw:
        return query
    spec = table.spec
    allowed = spec.filters
    latest: dict[str, list[str]] = {}
    for name, args in split_filters(raw):
        latest.pop(name, None)  # the last of a repeated filter wins (and takes its place in the order)
        latest[name] = args
    for name, args in latest.items():
        if name in ("order_by_asc", "order_by_desc"):
            if len(args) != 1 or args[0] not in allowed.get("order", ()):
                raise QueryError(
                    400, "invalid_filter", f"Cannot order {spec.name} by {','.join(args)!r} (filter {name})."
                )
            if args[0] != "id" and args[0] not in spec.types:
                raise _not_simulated(f"{name}({args[0]})", spec)
            query.order.append((args[0], name == "order_by_desc"))
            continue
        if name.endswith(("_after", "_before")):
            after = name.endswith("_after")
            date_field = name[: -len("_after")] if after else name[: -len("_before")]
            if date_field in allowed.get("date", ()):
                if date_field not in spec.filter_dates:
                    raise _not_simulated(name, spec)
                query.dates.append((table.dates[date_field], _int_arg(name, args), after))
                continue
        ranged = next(((s, op) for s, op in _RANGE_SUFFIXES if name.endswith(s)), None)
        if ranged is not None and name[: -len(ranged[0])] in allowed.get("range", ()):
            suffix, compare = ranged
            range_field = name[: -len(suffix)]
            if range_field == "id":
                lo, hi = _ID_RANGES[suffix](_int_arg(name, args))
                if lo is not None:
                    query.lo = lo if query.lo is None else max(query.lo, lo)
                if hi is not None:
                    query.hi = hi if query.hi is None else min(query.hi, hi)
                continue
            column = _field_filter(spec, name, range_field)
            kind = spec.types[column]
            if len(args) != 1:
                raise QueryError(400, "invalid_filter", f"Filter {name} takes exactly one argument.")
            query.predicates.append(_range_check(column, kind, compare, _sort_value(kind, args[0])))
            continue
        negated = name.endswith("_not") and name[: -len("_not")] in allowed.get("basic", ())
        basic_field = name[: -len("_not")] if negated else name
        if basic_field in allowed.get("basic", ()):
            if basic_field == "id":
                wanted = _ids_arg(name, args)
                if negated:
                    query.id_not_in = wanted | (query.id_not_in or set())
                else:
                    query.id_in = wanted
                continue
            column = _field_filter(spec, name, basic_field)
            values = frozenset(args)
            query.predicates.append(functools.partial(_value_in, column=column, values=values, negated=negated))
            continue
        if name == "empty" and allowed.get("empty"):
            for column in args:
                if column not in allowed["empty"]:
                    raise _unsupported(f"empty({column})", spec)
                _field_filter(spec, f"empty({column})", column)
                query.predicates.append(functools.partial(_is_empty, column=column))
            continue
        if name in allowed.get("object", ()):
            raise _not_simulated(name, spec)
        raise _unsupported(name, spec)
    return query


def search_predicate(table: Table, raw: str | None) -> Predicate | None:
    """`_search`: every word must appear (case-insensitively) in one of the fields the docs list for searching."""
    if raw is None or not raw.strip():
        return None
    spec = table.spec
    fields = [f for f in spec.filters.get("search", ()) if f in spec.types]
    if not fields:
        raise QueryError(400, "invalid_request", f"{spec.name} does not support _search.")
    words = [w.lower() for w in raw.strip("()").replace("+", " ").split()]

    def matches(rec: Record) -> bool:
        text = " ".join(str(rec.get(f) or "") for f in fields).lower()
        return all(w in text for w in words)

    return matches


def _candidates(table: Table, query: Query, descending_ids: bool) -> Iterable[int]:
    """Row indices within the id bounds, in id order, found by bisection rather than a scan."""
    ids = table.ids
    start = 0 if query.lo is None else bisect.bisect_left(ids, query.lo)
    stop = len(ids) if query.hi is None else bisect.bisect_right(ids, query.hi)
    if query.id_in is not None:
        found = [i for i in (bisect.bisect_left(ids, x) for x in sorted(query.id_in)) if i < len(ids)]
        rows: Iterable[int] = [i for i in found if start <= i < stop and ids[i] in query.id_in]
    else:
        rows = range(start, stop)
    if query.id_not_in:
        excluded = query.id_not_in
        rows = [i for i in rows if ids[i] not in excluded]
    return list(reversed(list(rows))) if descending_ids else rows


_NO_DATE = -1  # below every stored date (a missing date is stored as 0)
_FAR_FUTURE = 1 << 62


def _matches(table: Table, query: Query, rows: Iterable[int]) -> Iterable[int]:
    """Rows passing the date filters and the per-record filters, lazily, in the order given.

    The strict ``_after``/``_before`` pairs are merged into one open interval per column so that the common
    cursor window (``date_modified_after(a),date_modified_before(b)``) is a single chained comparison per row.
    """
    if query.predicates:
        records = table.records
        checks_on_records = query.predicates
        rows = (i for i in rows if all(p(records[i]) for p in checks_on_records))
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
        for i in _matches(table, query, _candidates(table, query, descending_ids=bool(order) and order[0][1])):
            if skipped < offset:
                skipped += 1
                continue
            page.append(i)
            if len(page) >= limit:
                break
        return page
    rows = list(_matches(table, query, _candidates(table, query, descending_ids=False)))
    # Stable sorts applied from the last key to the first give a lexicographic order; ties keep ascending id.
    for name, desc in reversed(order):
        if name == "id":
            rows.sort(key=table.ids.__getitem__, reverse=desc)
        elif name in table.dates:
            rows.sort(key=table.dates[name].__getitem__, reverse=desc)
        else:
            kind = table.spec.types[name]
            rows.sort(key=functools.partial(_record_sort_value, table, name, kind), reverse=desc)
    return rows[offset : offset + limit]


def count(table: Table, query: Query) -> int:
    rows = _candidates(table, query, descending_ids=False)
    if not query.dates and not query.predicates:
        return len(rows) if isinstance(rows, range | list) else sum(1 for _ in rows)
    return sum(1 for _ in _matches(table, query, rows))


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


def _query(table: Table, params: Mapping[str, str]) -> Query:
    query = parse_query(table, params.get("_filters"))
    search = search_predicate(table, params.get("_search"))
    if search is not None:
        query.predicates.append(search)
    return query


def list_reply(table: Table, params: Mapping[str, str], *, page_size_max: int = MAX_LIMIT) -> Reply:
    try:
        # A deployment may serve fewer rows than `_limit` asks (page_size_max); `_page` then counts served pages.
        limit = min(MAX_LIMIT, page_size_max, _int_param(params, "_limit", DEFAULT_LIMIT, 1))
        # The docs: `_offset` "will be overridden if `_page` is set".
        page = _int_param(params, "_page", 0, 0) if "_page" in params else None
        offset = page * limit if page is not None else _int_param(params, "_offset", 0, 0)
        fields = select_fields(table, params.get("_fields"))
        query = _query(table, params)
    except QueryError as exc:
        return exc.reply
    rows = select(table, query, offset, limit)
    selection = None if fields == table.spec.fields else fields
    return raw_json_reply(
        200, f'{{"meta":{_META_OK_JSON},"response":{table.json.rows_json(table.records, rows, selection)}}}'
    )


def count_reply(table: Table, params: Mapping[str, str]) -> Reply:
    try:
        query = _query(table, params)
    except QueryError as exc:
        return exc.reply
    return json_reply(200, {"meta": META_OK, "response": {"count": str(count(table, query))}})
