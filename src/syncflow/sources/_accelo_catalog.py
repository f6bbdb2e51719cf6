"""The Accelo resource catalogue, read from the docs fixture (`accelo_catalog/<resource>.json`).

The fixture is generated from the Accelo API documentation by `tools/accelo_docs.py` (one file per doc file, each
naming its doc file and commit). Stream declarations are taken from it rather than typed by hand, so a column, its
type and every filter syncflow sends are ones the documentation defines for that resource.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

from .._streams import Stream

__all__ = [
    "ACCELO_STREAMS",
    "API_PREFIX",
    "CATALOG",
    "CURSORS",
    "LEFT_OUT",
    "RESOURCES",
    "STREAM_NAMES",
    "AcceloResource",
    "ListEndpoint",
    "accelo_resource",
    "list_endpoint",
    "main_list",
    "object_fields",
    "order_filters",
]

API_PREFIX = "/api/v0"

#: The six tables syncflow synced before the full catalogue: names, keys and cursors unchanged.
STREAM_NAMES = ("companies", "invoices", "payments", "prospects", "jobs", "staff")

#: Cursors that are not the rule (`date_modified` where the docs list a `date_modified` date filter and the object
#: has the field; otherwise a full refresh): payments list only `date_created` (payments are immutable).
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


def list_endpoint(resource: str, path: str) -> ListEndpoint:
    """The documented list `GET <path>` of a resource's doc file, as the fixture records it."""
    entry = CATALOG[resource]
    for item in entry["lists"]:
        if item["path"] == path:
            filters = {kind: frozenset(names) for kind, names in item["filters"].items()}
            return ListEndpoint(resource, item["path"], bool(item["count"]), item["object"], MappingProxyType(filters))
    raise KeyError(f"the Accelo docs fixture lists no GET {path} for {entry['doc_file']}")


def _main_path(resource: str) -> str:
    # Every resource's own list is `/<resource>`, except time_externals (`/time/externals`).
    return _MAIN_PATHS.get(resource, f"/{resource}")


_MAIN_PATHS: Mapping[str, str] = MappingProxyType({"time_externals": "/time/externals"})


def main_list(resource: str) -> ListEndpoint:
    """The resource's own list (`GET /<resource>`), as the fixture records it."""
    return list_endpoint(resource, _main_path(resource))


def _fields_of(endpoint: ListEndpoint) -> tuple[Mapping[str, Any], ...]:
    if endpoint.object is None:
        raise KeyError(f"the Accelo docs fixture names no object for GET {endpoint.path}")
    objects = CATALOG[endpoint.resource]["objects"]
    if endpoint.object not in objects:
        raise KeyError(f"GET {endpoint.path} returns {endpoint.object}, defined in another doc file")
    return tuple(objects[endpoint.object]["fields"])


def object_fields(resource: str, path: str | None = None) -> Mapping[str, str]:
    """The documented fields of the object a list returns: name -> Fivetran type, in the doc's order."""
    endpoint = list_endpoint(resource, path or _main_path(resource))
    return MappingProxyType({field["name"]: field["type"] for field in _fields_of(endpoint)})


def order_filters(resource: str) -> tuple[str, ...]:
    """The order filter syncflow appends to its id-keyset pages: `order_by_asc(id)` where the docs list an `id` order
    filter; none where they list none (staff), since the documented default order is ascending id anyway."""
    return ("order_by_asc(id)",) if main_list(resource).allows("order", "id") else ()


@dataclass(frozen=True)
class AcceloResource(Stream):
    """One Accelo list resource as data: the stream (table, columns, key, cursor, endpoint) plus what reading it needs
    (the list's documented filters, whether it has a `/count`, the order filter its pages use, its doc file).

    Built from the docs fixture by `accelo_resource`; adding a resource is one call (one entry in `RESOURCES`)."""

    filters: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    count: bool = True
    order: tuple[str, ...] = ()
    doc_file: str = ""
    doc_resource: str = ""  # the fixture entry (doc file) it comes from
    keyset: bool = True  # paged by id keyset; False: read whole by page number (no id range filter documented)
    path: str = ""  # under /api/v0

    def allows(self, kind: str, name: str) -> bool:
        return name in self.filters.get(kind, frozenset())


def accelo_resource(
    resource: str,
    path: str | None = None,
    *,
    name: str | None = None,
    columns: Sequence[str] | None = None,
    cursor: str | bool | None = True,
) -> AcceloResource:
    """The stream `accelo.<name>` for a documented list, declared from the docs fixture.

    `resource` names the doc file (`contracts`), `path` the list in it (default `/<resource>`), `name` the table
    (default `resource`), `columns` a subset of the documented fields (default all; `id` always). `cursor=True` takes
    the rule: `date_modified` where the list documents a `date_modified` filter and the object has the field, else a
    full refresh (deletes captured by each completed refresh); a name or None overrides it. Pages are an id keyset
    (`id_greater_than`) where the list documents an `id` range filter; elsewhere the list is a full refresh read by
    page number (`_page`), ordered by id where the docs allow it.
    """
    path = path or _main_path(resource)
    endpoint = list_endpoint(resource, path)
    fields = {f["name"]: f["type"] for f in _fields_of(endpoint)}
    table = name or resource
    where = f"accelo.{table} (GET {path}, {CATALOG[resource]['doc_file']})"
    if "id" not in fields:
        raise ValueError(f"{where}: the docs give its object no id field, so its rows have no key")
    keyset = endpoint.allows("range", "id")
    if columns is not None:
        unknown = sorted(set(columns) - set(fields))
        if unknown:
            raise ValueError(f"{where}: {', '.join(unknown)} not documented fields; choose from {', '.join(fields)}")
        fields = {n: t for n, t in fields.items() if n == "id" or n in columns}
    if cursor is True:
        documented = endpoint.allows("date", "date_modified") and fields.get("date_modified") == "UTC_DATETIME"
        chosen: str | None = "date_modified" if documented and keyset else None
    else:
        chosen = cursor or None
        if chosen is not None and not (endpoint.allows("date", chosen) and chosen in fields):
            raise ValueError(f"{where}: cursor {chosen!r} is not a documented date filter and field of the list")
        if chosen is not None and not keyset:
            raise ValueError(f"{where}: an incremental window needs the id range filter the docs do not list")
    order = ("order_by_asc(id)",) if endpoint.allows("order", "id") else ()
    return AcceloResource(
        "accelo", table, MappingProxyType(fields), ("id",), chosen, endpoint=f"{API_PREFIX}{path}",
        filters=endpoint.filters, count=endpoint.count, order=order, keyset=keyset,
        doc_file=CATALOG[resource]["doc_file"], doc_resource=resource, path=path,
    )  # fmt: skip


def _catalog_resources() -> tuple[tuple[AcceloResource, ...], Mapping[str, str]]:
    """Every documented list syncflow streams (the six first, as before), and why each other one is left out."""
    chosen: list[AcceloResource] = [accelo_resource(name, cursor=CURSORS[name]) for name in STREAM_NAMES]
    left_out: dict[str, str] = {}
    for resource, entry in CATALOG.items():
        for item in entry["lists"]:
            path = item["path"]
            main = path == _main_path(resource)
            if resource in STREAM_NAMES and main:
                continue
            where = f"GET {path} ({entry['doc_file']})"
            if item["nested"]:
                left_out[where] = "nested under one object: needs a sweep over every parent id"
                continue
            if not main and path.endswith(("/recent", "/newest", "/profiles/values", "/extensions/values")):
                left_out[where] = "a view or the values of another resource's records: not a table of its own"
                continue
            if path.endswith(("/profiles/fields", "/extensions/fields", "/meta")):
                left_out[where] = "field definitions (metadata of another resource), not records"
                continue
            if path.startswith("/prospect/"):
                left_out[where] = "the docs' path is outside /prospects (a typo or a legacy path): not verifiable"
                continue
            if item["object"] is None:
                left_out[where] = "the docs define no object for it: no columns to declare"
                continue
            if item["object"] not in entry["objects"]:
                left_out[where] = f"returns {item['object']}, defined in another doc file (not in this entry)"
                continue
            table = resource if main else f"{resource}_{path.rsplit('/', 1)[-1]}"
            try:
                chosen.append(accelo_resource(resource, path, name=table))
            except (KeyError, ValueError) as exc:
                left_out[where] = str(exc.args[0]).split(": ", 1)[-1]
    return tuple(chosen), MappingProxyType(left_out)


_RESOURCES, LEFT_OUT = _catalog_resources()

#: Every Accelo stream, by table name: the six original tables first, then the catalogue in resource order.
RESOURCES: Mapping[str, AcceloResource] = MappingProxyType({r.table: r for r in _RESOURCES})

ACCELO_STREAMS: Mapping[str, Stream] = RESOURCES
