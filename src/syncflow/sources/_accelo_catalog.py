"""The Accelo resource catalogue, read from the docs fixture (`accelo_catalog/<resource>.json`).

The fixture is generated from the Accelo API documentation by `tools/accelo_docs.py` (one file per doc file, each
naming its doc file and commit). Stream declarations are taken from it rather than typed by hand, so a column, its
type and every filter syncflow sends are ones the documentation defines for that resource.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from .._streams import Stream

__all__ = [
    "ACCELO_STREAMS",
    "API_PREFIX",
    "CATALOG",
    "CURSORS",
    "ListEndpoint",
    "main_list",
    "object_fields",
    "order_filters",
]

API_PREFIX = "/api/v0"

#: The six tables syncflow has synced since its first release (the full catalogue is issue 17's work).
STREAM_NAMES = ("companies", "invoices", "payments", "prospects", "jobs", "staff")

#: The date the incremental filter applies to: `date_modified` where the docs list a `date_modified` date filter;
#: payments list only `date_created` (payments are immutable); staff list no date filter at all (full refresh).
CURSORS: Mapping[str, str | None] = MappingProxyType(
    {
        "companies": "date_modified",
        "invoices": "date_modified",
        "payments": "date_created",
        "prospects": "date_modified",
        "jobs": "date_modified",
        "staff": None,
    }
)


def _load() -> Mapping[str, Mapping[str, Any]]:
    folder = resources.files("syncflow.sources").joinpath("accelo_catalog")
    entries = {}
    for item in folder.iterdir():
        if item.name.endswith(".json"):
            entry = json.loads(item.read_text(encoding="utf-8"))
            entries[entry["resource"]] = entry
    return MappingProxyType(dict(sorted(entries.items())))


#: resource -> its fixture entry (read-only; parsed once at import).
CATALOG: Mapping[str, Mapping[str, Any]] = _load()


@dataclass(frozen=True)
class ListEndpoint:
    """One documented list request: its path (under /api/v0), whether `/count` exists, and its filters per kind."""

    resource: str
    path: str
    count: bool
    object: str | None
    filters: Mapping[str, frozenset[str]]

    def allows(self, kind: str, name: str) -> bool:
        return name in self.filters.get(kind, frozenset())


def main_list(resource: str) -> ListEndpoint:
    """The resource's own list (`GET /<resource>`), as the fixture records it."""
    entry = CATALOG[resource]
    for item in entry["lists"]:
        if item["path"] == f"/{resource}":
            filters = {kind: frozenset(names) for kind, names in item["filters"].items()}
            return ListEndpoint(resource, item["path"], bool(item["count"]), item["object"], MappingProxyType(filters))
    raise KeyError(f"the Accelo docs fixture lists no GET /{resource} for {entry['doc_file']}")


def object_fields(resource: str) -> Mapping[str, str]:
    """The documented fields of the object the resource's list returns: name -> Fivetran type, in the doc's order."""
    endpoint = main_list(resource)
    if endpoint.object is None:
        raise KeyError(f"the Accelo docs fixture names no object for GET /{resource}")
    fields = CATALOG[resource]["objects"][endpoint.object]["fields"]
    return MappingProxyType({field["name"]: field["type"] for field in fields})


def order_filters(resource: str) -> tuple[str, ...]:
    """The order filter syncflow appends to its id-keyset pages: `order_by_asc(id)` where the docs list an `id` order
    filter; none where they list none (staff), since the documented default order is ascending id anyway."""
    return ("order_by_asc(id)",) if main_list(resource).allows("order", "id") else ()


ACCELO_STREAMS: Mapping[str, Stream] = MappingProxyType(
    {
        name: Stream("accelo", name, object_fields(name), ("id",), CURSORS[name], endpoint=f"{API_PREFIX}/{name}")
        for name in STREAM_NAMES
    }
)
