"""The one ISO-8601 reader: what `start_date`, saved state, record values and AwardCo's bodies accept."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from syncflow._time import parse_iso8601

UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),  # a bare date is midnight UTC
        ("2024-05-01T10:20:30Z", datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)),  # Z, which 3.10 cannot read alone
        ("2024-05-01T10:20:30z", datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)),
        ("2024-05-01T10:20:30", datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)),  # no offset: UTC, not local time
        ("2024-05-01T12:20:30+02:00", datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)),
        ("2024-05-01T10:20:30.250Z", datetime(2024, 5, 1, 10, 20, 30, 250_000, tzinfo=UTC)),
    ],
)
def test_iso8601_is_read_as_an_aware_moment(text: str, expected: datetime) -> None:
    parsed = parse_iso8601(text)
    assert parsed == expected
    assert parsed.utcoffset() is not None


def test_an_offset_is_kept_not_converted() -> None:
    assert parse_iso8601("2024-05-01T12:00:00+02:00").utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01", "1714521600", "Z"])
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_iso8601(text)
