"""Row conversion: values that do not convert become null and are counted."""

from __future__ import annotations

from syncflow import Stream


def test_unconvertible_values_become_null_and_are_counted_once_per_column() -> None:
    stream = Stream("s", "t", {"id": "INT", "n": "FLOAT", "ok": "BOOLEAN", "at": "UTC_DATETIME"}, ("id",), None)
    converter = stream.converter()
    row = converter.convert({"id": "3", "n": "x", "ok": "yes", "at": "1495671183"})
    assert row is not None and row["n"] is None and row["ok"] is True and row["at"].year == 2017
    converter.convert({"id": "4", "n": "y", "ok": "maybe", "at": "0"})
    assert converter.failures == {"n": 2, "ok": 1}
    assert converter.convert({"id": None}) is None and converter.missing_key == 1
