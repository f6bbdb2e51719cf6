"""The one ISO-8601 reader: configuration (`start_date`), saved state, record values, API bodies and the simulator
all read timestamps through it, so they agree on what a timestamp is."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["parse_iso8601"]


def parse_iso8601(text: str) -> datetime:
    """An ISO-8601 date or date-time as an aware datetime; one without an offset is UTC. ValueError if it is not one.

    A trailing ``Z`` is rewritten because Python 3.10's `datetime.fromisoformat` does not accept it.
    """
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
