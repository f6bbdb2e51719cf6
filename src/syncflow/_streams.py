"""What a stream is: a destination table (schema, name, typed columns, primary key), its cursor, and how a raw API
record becomes a typed row.

Type conversion never crashes a sync: a value that cannot be converted becomes null, is counted per column, and is
reported once per column (then summarised at the end).
"""

from __future__ import annotations

import decimal
import functools
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._time import parse_iso8601

__all__ = ["RowConverter", "Stream", "converter_for", "decimal_params"]

logger = logging.getLogger("syncflow")

Converter = Callable[[Any], Any]

_TRUE = frozenset({"yes", "true", "1", "y", "t"})
_FALSE = frozenset({"no", "false", "0", "n", "f"})


class _Unconvertible(ValueError):
    pass


def _to_int(value: Any) -> int | None:
    if type(value) is str:  # the common case (Accelo sends every scalar as a string): one C call
        try:
            return int(value)
        except ValueError:
            if not value.strip():
                return None
            number = float(value)  # "12.0" is an integer written oddly; "abc" raises ValueError
            if number.is_integer():
                return int(number)
            raise _Unconvertible(value) from None
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Unconvertible(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Unconvertible(value)


# The ranges of Fivetran's INT and LONG (Java's int and long): the SDK refuses anything outside them with a raw
# `ValueError: Value out of range`, which would fail the whole sync for one value.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _to_int32(value: Any) -> int | None:
    number = _to_int(value)
    if number is not None and not _INT_MIN <= number <= _INT_MAX:
        raise _Unconvertible(value)
    return number


def _to_long(value: Any) -> int | None:
    number = _to_int(value)
    if number is not None and not _LONG_MIN <= number <= _LONG_MAX:
        raise _Unconvertible(value)
    return number


_DECIMAL_KIND = re.compile(r"DECIMAL\(\s*(\d+)\s*,\s*(\d+)\s*\)")


def decimal_params(kind: str) -> tuple[int, int] | None:
    """``"DECIMAL(28,6)"`` -> ``(28, 6)``; None for any other type name."""
    match = _DECIMAL_KIND.fullmatch(kind.strip().upper())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _decimal_converter(precision: int, scale: int) -> Converter:
    """Exact numbers as the SDK takes them for DECIMAL (a str: it refuses Decimal and float objects).

    A value with more digits before the point than the column holds, or more after it than its scale, does not fit:
    it becomes null and is reported, rather than being rounded or (as the SDK would do silently) nulled unseen.
    """
    whole_digits = precision - scale
    # The common case, a plain number that visibly fits ("125.00"), is passed on as written: one regex match.
    fraction = rf"(?:\.\d{{1,{scale}}})?" if scale else ""
    plain = re.compile(rf"-?\d{{1,{whole_digits}}}{fraction}") if whole_digits > 0 else None

    def convert(value: Any) -> str | None:
        if plain is not None and type(value) is str and plain.fullmatch(value):
            return value
        if value is None:
            return None
        if isinstance(value, bool):
            raise _Unconvertible(value)
        text = value.strip() if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
        if not text:
            return None
        try:
            number = decimal.Decimal(text)
        except decimal.InvalidOperation:
            raise _Unconvertible(value) from None
        if not number.is_finite():
            raise _Unconvertible(value)
        if number.is_zero():
            return "0"
        reduced = number.normalize()  # trailing zeros are no digits: "1.0000000" fits a scale of 6
        exponent = int(reduced.as_tuple().exponent)
        if -exponent > scale or reduced.adjusted() + 1 > whole_digits:
            raise _Unconvertible(value)
        return format(reduced, "f")

    return convert


def _to_float(value: Any) -> float | None:
    if type(value) is str:
        return float(value) if value.strip() else None
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Unconvertible(value)
    return float(value)


def _to_bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Unconvertible(value)


@functools.lru_cache(maxsize=1024)
def _from_unix(seconds: int) -> datetime:
    # Records cluster on the same seconds (bulk edits, shared due dates): a small cache skips most conversions.
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _to_utc_datetime(value: Any) -> datetime | None:
    if type(value) is str:
        try:
            seconds = int(value)  # unix seconds, as Accelo sends them
        except ValueError:
            text = value.strip()
            if not text:
                return None
            return parse_iso8601(text)
        return _from_unix(seconds) if seconds > 0 else None  # Accelo writes 0 for "never"
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, bool):
        raise _Unconvertible(value)
    if isinstance(value, (int, float)):
        return _from_unix(int(value)) if value > 0 else None
    raise _Unconvertible(value)


def _to_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _identity(value: Any) -> Any:
    return value


_CONVERTERS: Mapping[str, Converter] = {
    "INT": _to_int32,
    "LONG": _to_long,
    "FLOAT": _to_float,
    "DOUBLE": _to_float,
    "BOOLEAN": _to_bool,
    "UTC_DATETIME": _to_utc_datetime,
    "STRING": _to_string,
    "JSON": _identity,
}


def converter_for(kind: str) -> Converter:
    """The converter for a Fivetran type name (``"LONG"``, ``"DECIMAL(28,6)"``...); KeyError for an unknown one."""
    params = decimal_params(kind)
    if params is not None:
        return _decimal_converter(*params)
    return _CONVERTERS[kind.upper()]


def _schema_type(kind: str) -> str | dict[str, Any]:
    # The SDK declares a DECIMAL only as a dict with its precision and scale; every other type is its name.
    params = decimal_params(kind)
    if params is None:
        return kind
    return {"type": "DECIMAL", "precision": params[0], "scale": params[1]}


@dataclass(frozen=True)
class Stream:
    """One destination table and how to fill it."""

    source: str  # also the destination schema
    table: str
    columns: Mapping[str, str]  # name -> Fivetran type; a decimal is written "DECIMAL(precision,scale)"
    primary_key: tuple[str, ...]
    cursor: str | None  # the field the incremental filter applies to; None: full refresh
    keep_extra_fields: bool = False  # pass through fields the API returns that are not declared
    endpoint: str = ""  # the API path its pages come from (per-stream figures come from request labels, not this)

    @property
    def key(self) -> str:
        return f"{self.source}.{self.table}"

    def schema_entry(self) -> dict[str, Any]:
        return {
            "schema": self.source,
            "table": self.table,
            "primary_key": list(self.primary_key),
            "columns": {name: _schema_type(kind) for name, kind in self.columns.items()},
        }

    def converter(self) -> RowConverter:
        return RowConverter(self)


@dataclass
class RowConverter:
    """Turns raw records into typed rows for one stream; counts what could not be converted."""

    stream: Stream
    failures: dict[str, int] = field(default_factory=dict)
    missing_key: int = 0

    def __post_init__(self) -> None:
        self._plan = [(name, converter_for(kind)) for name, kind in self.stream.columns.items()]
        self._declared = frozenset(self.stream.columns)

    def convert(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """The typed row, or None when the record has no usable primary key (counted and reported)."""
        row: dict[str, Any] = {}
        get = record.get
        for name, convert in self._plan:
            raw = get(name)
            try:
                row[name] = convert(raw)
            except (ValueError, TypeError, OverflowError, OSError):  # OSError: fromtimestamp past the platform's range
                row[name] = None
                self._failed(name, raw)
        if self.stream.keep_extra_fields:
            for name, value in record.items():
                if name not in self._declared:
                    row[name] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
        if any(row.get(k) is None for k in self.stream.primary_key):
            self._keyless()
            return None
        return row

    def _keyless(self) -> None:
        # A record skipped for want of a primary key (also counted here by `_decode.PageDecoder`).
        self.missing_key += 1
        if self.missing_key == 1:
            logger.warning(
                "%s: skipping a record without a usable primary key %s (reported once; counted in the summary)",
                self.stream.key,
                "/".join(self.stream.primary_key),
            )

    def _failed(self, column: str, raw: Any) -> None:
        # A value stored as null (also counted here by `_decode.PageDecoder`).
        count = self.failures.get(column, 0) + 1
        self.failures[column] = count
        if count == 1:
            kind = self.stream.columns[column]
            shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:37] + "..."
            logger.warning(
                "%s.%s: value %s is not a valid %s; stored as null (reported once per column)",
                self.stream.key,
                column,
                shown,
                kind,
            )
