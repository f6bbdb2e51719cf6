"""Fivetran's destination names, so `to_duckdb` and a Fivetran warehouse name the same columns the same way.

Fivetran renames what a connector writes: `employeeId` → `employee_id`, `firstName` → `first_name`, `__meta` → `meta`
for a table. This is the same rule as the Connector SDK's (`fivetran_connector_sdk_core.renaming`: `redshift_safe` for
columns, `safe_drop_underscores` for tables), written out here because the Python API does not depend on the SDK;
`tests/test_naming.py` checks the two agree on every name it generates.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["destination_column", "destination_table"]

_NON_WORD = re.compile(r"\W", re.ASCII)
_DROP_LEADING_UNDERSCORE = re.compile(r"_+([a-zA-Z]\w*)", re.ASCII)
_WORD_DASH_DOT = re.compile(r"[\w\-.]*", re.ASCII)
_WORD_START = re.compile(r"\w", re.ASCII)
_UNDERSCORES = re.compile("_+")


def destination_column(name: str) -> str:
    """The column name Fivetran gives `name`: accents dropped, non-word characters → `_`, snake case, one `_` at a
    time, and a leading `_` when the first character cannot start a name."""
    return _leading(_snake(_NON_WORD.sub("_", _transliterate(name))))


def destination_table(name: str) -> str:
    """The table name Fivetran gives `name`: as a column, less leading underscores before a letter."""
    safe = destination_column(name)
    match = _DROP_LEADING_UNDERSCORE.fullmatch(safe)
    return match.group(1) if match else safe


def _transliterate(name: str) -> str:
    if _WORD_DASH_DOT.fullmatch(name):
        return name
    decomposed = unicodedata.normalize("NFD", name)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn"))


def _leading(name: str) -> str:
    return "_" + name if name and not _WORD_START.match(name[0]) else name


def _snake(name: str) -> str:
    # A word starts at a capital after a lower-case letter, or where digits start or stop.
    out: list[str] = []
    previous = "\0"
    for c in name:
        if (previous.islower() and c.isupper()) or (previous.isdigit() != c.isdigit()):
            out.append("_")
        out.append(c.lower())
        previous = c
    return _UNDERSCORES.sub("_", "".join(out))
