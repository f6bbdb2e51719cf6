"""Pages typed in C (`_decode.PageDecoder`) give exactly the rows `RowConverter` gives, or fall back to it.

The reference is today's path: `json.loads` of the page, then `RowConverter.convert` per record. For every page the
decoder must produce the same rows (same values *and* types: `1 == 1.0 == True` in Python, so types are compared
too), the same failure counts and the same count of records skipped for want of a key.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncflow import Stream
from syncflow._decode import PageDecoder, TypedRecords
from syncflow.sources.accelo import ACCELO_STREAMS

COLUMNS = {
    "id": "LONG",
    "i": "INT",
    "n": "LONG",
    "f": "FLOAT",
    "d": "DOUBLE",
    "ok": "BOOLEAN",
    "at": "UTC_DATETIME",
    "due": "UTC_DATETIME",
    "s": "STRING",
    "money": "DECIMAL(28,6)",
    "small": "DECIMAL(5,2)",
    "doc": "JSON",
}
STREAM = Stream("s", "t", COLUMNS, ("id",), "at")


def _cell(value: Any) -> tuple[str, str]:
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, repr(value))  # a datetime's repr names its tzinfo


def _exact(rows: list[dict[str, Any]] | list[dict[str, Any] | None]) -> list[Any]:
    return [None if row is None else sorted((k, _cell(v)) for k, v in row.items()) for row in rows]


def _today(body: bytes) -> tuple[list[Any], dict[str, int], int]:
    converter = STREAM.converter()
    rows = [row for row in map(converter.convert, json.loads(body)["response"]) if row is not None]
    return _exact(rows), converter.failures, converter.missing_key


def _decoded(body: bytes) -> tuple[list[Any], dict[str, int], int, bool]:
    decoder = PageDecoder(STREAM.converter())
    records = decoder.loads(body)["response"]
    typed = type(records) is TypedRecords
    rows = decoder.rows(records)
    return _exact(rows), decoder.converter.failures, decoder.converter.missing_key, typed


def _page(records: list[dict[str, Any]], **dumps: Any) -> bytes:
    meta = {"status": "ok", "message": "Everything executed as expected."}
    return json.dumps({"meta": meta, "response": records}, **dumps).encode()


def _same(body: bytes) -> bool:
    """Asserts the decoder agrees with today's path on `body`; True when the page took the typed path."""
    rows, failures, keyless, typed = _decoded(body)
    assert (rows, failures, keyless) == _today(body)
    return typed


# Table-driven: one value of one column in an otherwise clean record; whether msgspec may type the page.
TYPED = [
    ("id", "123"), ("id", "0"), ("id", "-7"), ("id", 12), ("id", str(2**40)), ("id", str(2**63 - 1)),
    ("id", "12.0"), ("id", "1e3"), ("id", 12.0),
    ("i", str(2**31 - 1)), ("i", str(-(2**31))), ("i", None), ("id", None),  # keyless: skipped, counted
    ("f", "12.50"), ("f", "-0.5"), ("f", "1e5"), ("f", 3), ("f", 2.5), ("f", "nan"), ("f", "inf"),
    ("d", "0.1"), ("d", 2**70),
    ("ok", "yes"), ("ok", "no"), ("ok", "1"), ("ok", "0"), ("ok", True), ("ok", ""), ("ok", None), ("ok", "YES"),
    ("ok", 1), ("ok", "maybe"), ("ok", 2),  # converted by today's _to_bool after the decode (maybe/2 fail)
    ("at", "1600000000"), ("at", "0"), ("at", "-5"), ("at", 1600000000), ("at", 0), ("at", None),
    ("at", "99999999999"),
    ("s", "text"), ("s", ""), ("s", "2020-01-01T00:00:00Z"), ("s", None), ("s", "caf\u00e9 \u2603"),
    ("s", "null"), ("doc", {"NULL": None}), ("money", "null"), ("ok", "Null"),  # "null" text outside number columns
    ("money", "125.00"), ("money", "1.0000000"), ("money", "abc"), ("money", 12), ("money", 1.5), ("money", ""),
    ("small", "12345.67"), ("small", "1234.567"),  # does not fit: nulled and counted by today's converter
    ("doc", {"a": [1, 2.5, None, "x"]}), ("doc", [1, {"b": True}]), ("doc", 2**70), ("doc", "text"),
]  # fmt: skip
FALLBACK = [
    ("id", ""), ("id", " 12"), ("id", "1_000"), ("id", "abc"), ("id", 12.5), ("id", True), ("id", str(2**63)),
    ("id", "+12"), ("id", "0012"), ("id", "12345678901234567.0"),
    ("i", str(2**31)), ("i", str(-(2**31) - 1)),
    ("f", ""), ("f", " 1.5"), ("f", True), ("f", "1_0"),
    ("at", "2020-01-01T00:00:00Z"), ("at", "1969-12-31T23:59:59Z"), ("at", "1970-01-01T00:00:00+00:00"),
    ("at", "2020-01-01T00:00:00"), ("at", "2020-01-01T02:00:00+02:00"), ("at", "1600000000.0"),
    ("at", "1600000000.5"), ("at", "1.6e9"), ("at", 1600000000.0), ("at", 1600000000.5), ("at", 0.5), ("at", ""),
    ("at", " 1600000000"), ("at", "0001600000000"), ("at", True), ("at", "253402300800"), ("at", "never"),
    ("s", 12), ("s", 1.5), ("s", True), ("s", {"a": 1}), ("s", [1]),
    # The text "null": msgspec reads it as None in a number column, RowConverter counts a failed value (found by
    # the property test below; for the key it also decides whether the skipped record is reported as a failure).
    ("id", "null"), ("n", "NULL"), ("i", "Null"), ("f", "null"), ("d", "nULL"),
]  # fmt: skip


def _record(column: str, value: Any) -> dict[str, Any]:
    record: dict[str, Any] = {name: None for name in COLUMNS}
    record.update(id="1", i="5", n="6", f="1.5", d="2.5", ok="yes", at="1600000000", due="0", s="x", money="1.00")
    record[column] = value
    return record


@pytest.mark.parametrize(("column", "value"), TYPED)
def test_values_msgspec_types_exactly_as_row_converter_does(column: str, value: Any) -> None:
    body = _page([_record("s", "first"), _record(column, value)])
    assert _same(body), "the page should take the typed path"


@pytest.mark.parametrize(("column", "value"), FALLBACK)
def test_values_msgspec_could_read_otherwise_send_the_page_to_row_converter(column: str, value: Any) -> None:
    body = _page([_record("s", "first"), _record(column, value)])
    assert not _same(body), "the page should fall back to RowConverter"


def test_an_escaped_null_text_in_a_page_without_dates_falls_back_too() -> None:
    stream = Stream("s", "t", {"id": "LONG", "n": "LONG"}, ("id",), None)
    body = b'{"meta": {}, "response": [{"id": "1", "n": "\\u006eull"}, {"id": "\\u006eull"}]}'
    decoder, reference = PageDecoder(stream.converter()), stream.converter()
    records = decoder.loads(body)["response"]
    assert type(records) is not TypedRecords
    want = [r for r in map(reference.convert, json.loads(body)["response"]) if r is not None]
    assert _exact(decoder.rows(records)) == _exact(want) == [[("id", ("int", "1")), ("n", ("NoneType", "None"))]]
    assert (decoder.converter.failures, decoder.converter.missing_key) == ({"n": 1, "id": 1}, 1)


def test_accelo_dates_zero_means_never_and_seconds_are_utc() -> None:
    rows, _, _, typed = _decoded(_page([_record("due", "1600000000")]))
    assert typed
    at = dict(rows[0])["at"]
    assert at == _cell(datetime.fromtimestamp(1600000000, tz=timezone.utc))
    assert dict(_decoded(_page([_record("s", "x")]))[0][0])["due"] == _cell(None)  # "0"


def test_missing_and_undeclared_fields_and_keyless_records() -> None:
    records: list[dict[str, Any]] = [
        {"id": "1"},  # every other column missing: null
        {"id": "2", "extra": {"not": "declared"}, "i": "3"},
        {"i": "4"},  # no key: skipped and counted
        {"id": None, "s": "y"},
        {"id": "5", "at": "0", "ok": "no"},
    ]
    body = _page(records)
    assert _same(body)
    rows, _, keyless, _ = _decoded(body)
    assert keyless == 2 and len(rows) == 3
    assert [len(row) for row in rows] == [len(COLUMNS)] * 3


def test_failures_are_counted_per_column_once_the_page_is_accepted() -> None:
    body = _page([_record("ok", "maybe"), _record("money", "x"), _record("ok", "perhaps")])
    decoder = PageDecoder(STREAM.converter())
    records = decoder.loads(body)["response"]
    assert type(records) is TypedRecords
    assert decoder.converter.failures == {}  # decoding (inside the client's retries) counts nothing
    decoder.rows(records)
    assert decoder.converter.failures == {"ok": 2, "money": 1}


def test_bodies_that_are_not_json_raise_as_json_loads_does() -> None:
    decoder = PageDecoder(STREAM.converter())
    for body in (b"", b"<html>", b'{"response": [', b"\xff\xfe"):
        with pytest.raises(ValueError):
            json.loads(body)
        with pytest.raises(ValueError):
            decoder.loads(body)


def test_bodies_json_loads_reads_but_msgspec_refuses_are_read_as_json_loads_reads_them() -> None:
    decoder = PageDecoder(STREAM.converter())
    for body in (
        b'{"response": [{"id": "1", "f": NaN}]}',  # json.loads accepts NaN, msgspec does not
        b'{"response": [{"id": "1", "s": "\\ud800"}]}',  # a lone surrogate
        b'\xef\xbb\xbf{"response": [{"id": "1"}]}',  # a UTF-8 byte order mark
        b'{"response": null}',
        b'{"response": {"id": "1"}}',
        b'{"response": ["1"]}',
        b'{"meta": {"status": "error"}}',
        b'[1, 2]',
    ):
        assert decoder.loads(body) == json.loads(body)


def test_shape_problems_are_seen_by_the_accelo_validator_as_before() -> None:
    from syncflow.sources.accelo import _list_problem

    decoder = PageDecoder(STREAM.converter())
    for body in (
        b'{"meta": {"status": "ok"}, "response": [{"id": "1"}]}',
        b'{"meta": {"status": "error"}, "response": [{"id": "1"}]}',
        b'{"meta": {"status": "ok"}}',
        b'{"response": "none"}',
        b'{"response": [1]}',
    ):
        assert _list_problem(decoder.loads(body)) == _list_problem(json.loads(body))


def test_an_escaped_key_cannot_smuggle_a_date_past_the_check() -> None:
    # "\u0061t" is "at": a byte check for the field's name would not see it; the page must take today's path.
    body = b'{"response": [{"id": "1", "\\u0061t": "1600000000.0"}]}'
    assert not _same(body)


def test_duplicate_keys_keep_the_last_value_as_json_loads_does() -> None:
    assert _same(b'{"response": [{"id": "1", "i": "2", "i": "3", "at": "5", "at": "0"}]}')


def test_a_stream_that_keeps_undeclared_fields_takes_todays_path() -> None:
    stream = Stream("s", "u", {"id": "LONG", "x": "STRING"}, ("id",), None, keep_extra_fields=True)
    decoder = PageDecoder(stream.converter())
    body = b'{"response": [{"id": "1", "x": "a", "more": {"k": 1}}]}'
    records = decoder.loads(body)["response"]
    assert type(records) is not TypedRecords
    assert decoder.rows(records) == [stream.converter().convert(r) for r in json.loads(body)["response"]]


async def test_simulated_accelo_pages_of_every_resource_take_the_typed_path() -> None:
    """Every catalogue resource's first page, as syncflow asks for it from the simulator, decodes typed (the fast path
    is the one a sync takes) and gives today's rows."""
    import httpx

    from syncflow.sim import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET, SimConfig, Simulator

    sim = Simulator(SimConfig(seed=3))
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as http:
        token = await http.post(
            "/oauth2/v0/token", data={"grant_type": "client_credentials", "scope": "read(all)"},
            auth=(ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET),
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        rows = 0
        for stream in ACCELO_STREAMS.values():
            response = await http.get(
                stream.endpoint, params={"_fields": ",".join(stream.columns), "_limit": 100}, headers=headers
            )
            assert response.status_code == 200, stream.key
            decoder = PageDecoder(stream.converter())
            records = decoder.loads(response.content)["response"]
            assert type(records) is TypedRecords, stream.key
            converter = stream.converter()
            want = [r for r in map(converter.convert, json.loads(response.content)["response"]) if r is not None]
            got = decoder.rows(records)
            assert _exact(got) == _exact(want), stream.key
            assert (decoder.converter.failures, decoder.converter.missing_key) == (
                converter.failures, converter.missing_key,
            ), stream.key  # fmt: skip
            rows += len(got)
    assert rows > 1000


# Hypothesis: records of adversarial values, every column, any JSON layout.
_number_text = st.from_regex(r"\A[ +-]?[0-9]{0,20}(\.[0-9]{0,8})?([eE][+-]?[0-9]{1,3})?[ ]?\Z", fullmatch=True)
_iso = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.sampled_from([None, timezone.utc])
).map(lambda d: d.isoformat())
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, 2**64, 1600000000]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
    st.integers(min_value=-5, max_value=2**35).map(str),
    _number_text,
    _iso,
    st.sampled_from(["", " ", "yes", "no", "YES", "y", "t", "F", "0", "1", "nan", "inf", "-inf", "Infinity", "null"]),
    st.text(max_size=8),
)
_value = st.one_of(_scalar, st.lists(_scalar, max_size=3), st.dictionaries(st.text(max_size=3), _scalar, max_size=3))
_records = st.lists(
    st.dictionaries(st.sampled_from([*COLUMNS, "extra"]), _value, max_size=len(COLUMNS) + 1), max_size=6
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_records, ascii_only=st.booleans(), spaced=st.booleans())
def test_any_page_gives_the_rows_row_converter_gives(records: list[dict[str, Any]], ascii_only: bool, spaced: bool)\
        -> None:  # fmt: skip
    separators = (" , ", " : ") if spaced else (",", ":")
    _same(_page(records, ensure_ascii=ascii_only, separators=separators))


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.integers(min_value=0, max_value=2**62).map(str), min_size=1, max_size=5),
    seconds=st.lists(st.integers(min_value=-(2**33), max_value=2**36).map(str), min_size=5, max_size=5),
    flags=st.lists(st.sampled_from(["yes", "no", "1", "0", ""]), min_size=5, max_size=5),
)
def test_accelo_shaped_pages_take_the_typed_path(ids: list[str], seconds: list[str], flags: list[str]) -> None:
    # Every scalar a string, as Accelo sends them: these pages must not fall back (that is the point).
    records = [
        _record("at", seconds[n]) | {"id": ident, "due": seconds[-n - 1], "ok": flags[n]} for n, ident in enumerate(ids)
    ]
    assert _same(_page(records))


@pytest.mark.parametrize("table", ["companies", "invoices", "payments", "prospects", "jobs", "staff"])
def test_every_declared_accelo_column_type_builds_a_decoder(table: str) -> None:
    stream = ACCELO_STREAMS[table]
    decoder = PageDecoder(stream.converter())
    record = {name: ("1" if kind != "STRING" else "x") for name, kind in stream.columns.items()}
    body = _page([record])
    records = decoder.loads(body)["response"]
    assert type(records) is TypedRecords
    converter = stream.converter()
    want = [converter.convert(r) for r in json.loads(body)["response"]]
    assert _exact(decoder.rows(records)) == _exact(want)


# Values of the forms msgspec may type: pages of them must take the typed path and still give today's rows. (No
# control characters: JSON escapes them as \u00XX, which sends a page with dates to today's path, see _decode.)
_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=10)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)


def _int_forms(low: int, high: int) -> st.SearchStrategy[Any]:
    ints = st.integers(min_value=low, max_value=high)
    small = st.integers(min_value=-(2**50), max_value=2**50).filter(lambda n: low <= n <= high)
    return st.one_of(st.none(), ints, ints.map(str), small.map(lambda n: f"{n}.0"), small.map(float))


_finite = st.floats(allow_nan=False, allow_infinity=False)
_CLEAN: dict[str, st.SearchStrategy[Any]] = {
    "LONG": _int_forms(-(2**63), 2**63 - 1),
    "INT": _int_forms(-(2**31), 2**31 - 1),
    "FLOAT": st.one_of(st.none(), _finite, _finite.map(repr), st.integers(min_value=-(2**80), max_value=2**80)),
    "BOOLEAN": st.one_of(st.none(), st.booleans(), st.sampled_from(["yes", "no", "1", "0", "", "True", "n", "maybe"])),
    "UTC_DATETIME": st.one_of(  # years 1 to 9999 in unix seconds: a string of digits (as Accelo sends them) or a number
        st.none(),
        st.integers(min_value=-62135596800, max_value=253402300799).flatmap(lambda n: st.sampled_from([n, str(n)])),
    ),
    "STRING": st.one_of(st.none(), _text),
    "DECIMAL": st.one_of(st.none(), st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str)),
    "JSON": _json,
}


def _clean_record() -> st.SearchStrategy[dict[str, Any]]:
    fields = {name: _CLEAN[kind.split("(")[0].replace("DOUBLE", "FLOAT")] for name, kind in COLUMNS.items()}
    return st.fixed_dictionaries({}, optional=fields)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_clean_record(), max_size=8), ascii_only=st.booleans())
def test_pages_of_typeable_values_take_the_typed_path_with_todays_rows(
    records: list[dict[str, Any]], ascii_only: bool
) -> None:
    assert _same(_page(records, ensure_ascii=ascii_only))
