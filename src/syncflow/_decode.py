"""A page of records decoded straight into typed rows, in C (msgspec), with today's `RowConverter` as the reference.

Why: in `fivetran debug` the event-loop thread shares the GIL with the SDK's writer, so every microsecond it spends
per row is one the writer waits. `json.loads` + `RowConverter.convert` cost ~20 µs per Accelo row (every scalar is a
string: "123", "12.50", unix seconds "1600000000", "0" for a date that never happened); msgspec's typed decoder with
`strict=False` parses those strings into int / float / aware datetime while it parses the JSON, for about a quarter
of that (benchmarks/decode_forms.py).

The rows must be exactly the ones `RowConverter` makes, so msgspec is only trusted where it provably agrees, and a
page it cannot decode that way goes through today's path whole (`json.loads`, then `RowConverter.convert` per
record, which nulls and counts a bad value):

- LONG / INT: `int` with the column's range (the SDK refuses a value outside it; `RowConverter` nulls it), FLOAT /
  DOUBLE: `float`, STRING: `str`. msgspec refuses what it does not parse exactly (`""`, `" 12"`, `"1_000"`,
  `"abc"`, `true`, `12.5` for an int, a number for a string, an integer past 2^53 written as a float): the page
  falls back and today's converter decides. One thing msgspec accepts that `RowConverter` does not: the text
  `"null"` (any case) in a number column, which it reads as None where `RowConverter` counts a failed value; a
  page holding that text is seen in its bytes and falls back too.
- UTC_DATETIME: `datetime`, decoded in C from unix seconds. Only the forms on which msgspec and `RowConverter`
  agree are let through: a string of digits (`"1600000000"`, `"0"`, `"-5"`), an integer, or null. Anything else in
  a date field (an ISO string, `"1600000000.5"`, `1.6e9`, `""`) is seen in the page's bytes before decoding and
  sends the page to today's path: msgspec would read `"1600000000.0"` as a date, where `RowConverter` nulls it, and an
  ISO date before 1970 would be indistinguishable from Accelo's `"0"` once decoded. Seconds <= 0 mean "never"
  (Accelo writes 0): null, as today.
- BOOLEAN ("yes"/"no"/"1"/"0"...), DECIMAL and JSON: decoded as plain JSON values (msgspec's are json.loads's), then
  today's converter for that type runs on each value, with today's failure counting.
- A missing field is a null column, an undeclared one is dropped (as `RowConverter` does); a record without a usable
  primary key is skipped and counted by the stream's `RowConverter`, as today.

A stream that keeps undeclared fields (`keep_extra_fields`) is not decoded this way: its pages take today's path.

Decoding (`loads`, called by the HTTP client inside its retries) has no side effects; the typing that can count a
failure (`rows`) runs once a page has been accepted, exactly where `RowConverter.convert` ran before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, TypedDict

import msgspec

from ._streams import Converter, RowConverter, converter_for

__all__ = ["PageDecoder", "TypedRecords"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# The ranges RowConverter enforces (Fivetran's INT and LONG): outside them msgspec refuses, and the page falls back.
_INT = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
_LONG = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

_TYPED: Mapping[str, Any] = {
    "INT": _INT | None,
    "LONG": _LONG | None,
    "FLOAT": float | None,
    "DOUBLE": float | None,
    "STRING": str | None,
    "UTC_DATETIME": datetime | None,
}

# A JSON escape of an ASCII character (`\u005f` is "_"): it could spell a date field's name, or the text "null", in a
# way the byte checks below do not see, so a page holding one is decoded the old way. (Non-ASCII escapes, `\u00e9`,
# cannot.)
_ASCII_ESCAPE = re.compile(rb"\\u00[0-7]")
# The *text* "null" in any letter case: msgspec's lax mode reads it as None in a number column, where RowConverter
# counts it as a value that failed to convert. This cheap scan finds it anywhere; only then is the page searched for
# it as the value of a number column (`_null_number_pattern`), so a clean page pays one simple scan.
_NULL_TEXT = re.compile(rb'(?i)"null"')  # ~40 µs on a 40 kB page; [nN][uU]... is slower


# What `_to_bool` makes of the strings a BOOLEAN column usually holds (checked against it in the tests).
_BOOLEANS: Mapping[str, bool | None] = {
    text: value for value, texts in ((True, ("yes", "true", "1", "y", "t")), (False, ("no", "false", "0", "n", "f")))
    for text in (*texts, *(t.upper() for t in texts), *(t.capitalize() for t in texts))
} | {"": None}  # fmt: skip


class TypedRecords(list[dict[str, Any]]):
    """A page's records as msgspec decoded them: typed, except the columns `PageDecoder.rows` still converts."""

    __slots__ = ()


class PageDecoder:
    """Decodes one stream's pages (`{"response": [records], "meta": ...}` for Accelo) into typed records.

    Built once per stream, from its declared columns. `loads` replaces `json.loads` for the stream's list requests;
    `rows` replaces `RowConverter.convert` over the page's records (and takes records `loads` could not type too).
    """

    def __init__(self, converter: RowConverter, *, records: str = "response", keep: Sequence[str] = ("meta",)) -> None:
        stream = converter.stream
        self.converter = converter
        self._records = records
        self._names = tuple(stream.columns)
        self._key = stream.primary_key
        fields: dict[str, Any] = {}
        # Columns msgspec decodes as plain JSON values; today's converter then types each value.
        self._converted: list[tuple[str, Converter, Mapping[str, bool | None]]] = []
        dates: list[str] = []
        numbers: list[str] = []
        for name, kind in stream.columns.items():
            typed = _TYPED.get(kind.upper())
            if typed is None:
                fields[name] = Any
                convert = converter_for(kind)
                # The strings a BOOLEAN column holds are few ("yes"/"no", "1"/"0"): their values are looked up.
                known = _BOOLEANS if kind.upper() == "BOOLEAN" else {}
                self._converted.append((name, convert, known))
            else:
                fields[name] = typed
                if kind.upper() == "UTC_DATETIME":
                    dates.append(name)
                elif kind.upper() != "STRING":
                    numbers.append(name)
        self._dates = tuple(dates)
        record = TypedDict("Record", fields, total=False)  # type: ignore[misc]  # columns known only at run time
        envelope = TypedDict("Page", {records: list[record], **dict.fromkeys(keep, Any)}, total=False)  # type: ignore[misc]
        # A stream that keeps undeclared fields needs every field of a record: today's path (json.loads) for it.
        self._decoder: msgspec.json.Decoder[Any] | None = (
            None if stream.keep_extra_fields else msgspec.json.Decoder(envelope, strict=False)
        )
        self._odd_date = _odd_date_pattern(dates) if dates else None
        self._null_number = _null_number_pattern(numbers) if numbers else None

    def loads(self, content: bytes) -> Any:
        """The body, as `json.loads` would give it, except that its records come back as `TypedRecords` when msgspec
        can type them exactly; otherwise exactly `json.loads(content)` (which raises on a body that is not JSON)."""
        if (
            self._decoder is None
            or _ASCII_ESCAPE.search(content)
            or (self._odd_date is not None and self._odd_date.search(content))
            or (self._null_number is not None and _NULL_TEXT.search(content) and self._null_number.search(content))
        ):
            return json.loads(content)
        try:
            body: dict[str, Any] = self._decoder.decode(content)
        except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
            return json.loads(content)
        records = body.get(self._records)
        if records is not None:
            body[self._records] = TypedRecords(records)
        return body

    def rows(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The typed rows of a page's records, without those that have no usable primary key (counted)."""
        converter = self.converter
        if type(records) is not TypedRecords:
            return [row for row in map(converter.convert, records) if row is not None]
        names, width, dates, converted, key = self._names, len(self._names), self._dates, self._converted, self._key
        out: list[dict[str, Any]] = []
        for row in records:
            if len(row) != width:  # a missing field is a null column
                for name in names:
                    row.setdefault(name, None)
            for name in dates:
                value = row[name]
                if value is not None and value <= _EPOCH:
                    row[name] = None  # Accelo writes 0 for "never"; RowConverter nulls any seconds <= 0
            for name, convert, known in converted:
                raw = row[name]
                if type(raw) is str and raw in known:
                    row[name] = known[raw]
                    continue
                try:
                    row[name] = convert(raw)
                except (ValueError, TypeError, OverflowError, OSError):  # as RowConverter.convert
                    row[name] = None
                    converter._failed(name, raw)
            for name in key:
                if row.get(name) is None:
                    converter._keyless()
                    break
            else:
                out.append(row)
        return out


def _null_number_pattern(numbers: Sequence[str]) -> re.Pattern[bytes]:
    """Finds the text "null" (any case) as the value of a number column: msgspec reads it as None, RowConverter as
    a value that failed (see `_NULL_TEXT`)."""
    names = b"|".join(re.escape(name.encode()) for name in numbers)
    return re.compile(rb'"(?:' + names + rb')"\s*:\s*"[nN][uU][lL][lL]"')


def _odd_date_pattern(dates: Sequence[str]) -> re.Pattern[bytes]:
    """Finds a date field whose value is not a string of digits, an integer or null: a form msgspec and
    RowConverter may read differently (see the module's docstring)."""
    names = b"|".join(re.escape(name.encode()) for name in dates)
    end = rb"[\s,}\]]"
    # The spaces after the colon are inside the lookahead: outside it, backtracking over them would let the lookahead
    # look at a space and report every date.
    return re.compile(rb'"(?:' + names + rb')"\s*:(?!\s*"-?[0-9]+"|\s*-?[0-9]+' + end + rb"|\s*null" + end + rb")")

