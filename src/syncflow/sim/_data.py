"""Deterministic synthetic records for both APIs, and the in-memory tables that serve and mutate them.

Records are stored exactly as the API returns them (Accelo: every scalar a string), sorted by primary key, with
parallel integer arrays for the primary key and the date fields so that queries can bisect and compare ints
instead of parsing strings per request.
"""

from __future__ import annotations

import bisect
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..sources import _accelo_catalog as _catalog

#: A stored date that matches no date filter (a null compares false with everything in SQL).
NO_DATE: Any = float("nan")

#: The fixed end of the generated history (2025-06-15T15:06:40Z): data does not depend on when the sim starts.
DATA_END = 1_750_000_000
_HISTORY = 4 * 365 * 86400
DATA_START = DATA_END - _HISTORY
_DAY = 86400

Record = dict[str, Any]


def iso(ts: int) -> str:
    """Unix seconds → the ISO-8601 UTC form AwardCo uses (``2024-03-01T12:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# --------------------------------------------------------------------------------------------------------------
# Shared shape of the history: ids with gaps, creation times rising with the id, bulk-edit clusters.


def _ids(rng: random.Random, n: int, start: int = 0) -> list[int]:
    # Gaps stand for deleted records: a client must not assume ids are dense.
    out: list[int] = []
    cur = start
    for _ in range(n):
        cur += 1 if rng.random() < 0.9 else rng.randint(2, 6)
        out.append(cur)
    return out


def _created_times(rng: random.Random, n: int) -> list[int]:
    # Ids are allocated chronologically, so creation times are sorted to follow the id order.
    return sorted(rng.randint(DATA_START, DATA_END - _DAY) for _ in range(n))


def _modified_times(rng: random.Random, created: Sequence[int]) -> list[int]:
    """A modification time per record, >= its creation time, with ~30 % of records in bulk-edit clusters.

    Clusters (many records sharing one ``date_modified`` second) are what break naive cursor pagination,
    so they are deliberately common; one large cluster exceeds a full page of 100 records.
    """
    n = len(created)
    modified: list[int] = []
    for c in created:
        if rng.random() < 0.25:
            modified.append(c)  # never edited after creation
        else:
            modified.append(min(DATA_END, c + int(rng.expovariate(1.0 / (45 * _DAY)))))
    clustered: set[int] = set()
    target = int(n * 0.3)
    sizes: list[int] = []
    if n >= 330:
        sizes.append(max(110, n // 20))  # a mass import / bulk update bigger than one page of 100
    while sum(sizes) < target:
        sizes.append(rng.randint(5, 50))
    for k, size in enumerate(sizes):
        # The big cluster lands in the recent half, where enough records exist to fill it.
        earliest = DATA_END - _HISTORY // 2 if k == 0 and size > 100 else DATA_START + _HISTORY // 8
        t = rng.randint(earliest, DATA_END)
        # Only records that existed at time t can be edited at t. Rejection sampling keeps this O(size), so a
        # scaled-up data set (hundreds of thousands of records) is still generated quickly.
        existing = bisect.bisect_right(created, t)
        placed = tries = 0
        while existing and placed < size and tries < 4 * size:
            i = rng.randrange(existing)
            tries += 1
            if i not in clustered:
                modified[i] = t
                clustered.add(i)
                placed += 1
    return modified


def _import_batches(rng: random.Random, created: list[int]) -> None:
    """Give runs of consecutive records one creation second (bulk imports), keeping the times sorted.

    This matters for streams whose cursor is ``date_created`` (payments): ties there must not lose rows either.
    """
    n = len(created)
    index = 0
    while index < n:
        if rng.random() < 0.03:
            run = rng.randint(5, 30)
            for j in range(index + 1, min(n, index + run)):
                created[j] = created[index]
            index += run
        else:
            index += 1


def _between(rng: random.Random, lo: int, hi: int) -> int:
    return rng.randint(lo, hi) if hi > lo else lo


_WORDS = ("Acme", "Apex", "Birch", "Cedar", "Delta", "Ember", "Falcon", "Granite", "Harbor", "Juniper", "Kestrel")
_PLACES = ("Lumen", "Maple", "Nimbus", "Onyx", "Pioneer", "Quartz", "Summit", "Tidal", "Vertex", "Willow", "Coastal")
_SUFFIXES = ("Pty Ltd", "Inc", "LLC", "Group", "Partners", "Consulting", "Studios", "Labs", "Co")
_FIRST = ("Alice", "Ben", "Chloe", "Daniel", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jack", "Kira", "Liam", "Maya")
_LAST = ("Nguyen", "Smith", "Patel", "Garcia", "Kim", "Brown", "Okafor", "Rossi", "Muller", "Tanaka", "Silva", "Cohen")
_TOPICS = ("Website rebuild", "Audit", "Retainer", "Migration", "Brand refresh", "Support", "Training", "Roadmap")


def _company_name(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS)} {rng.choice(_PLACES)} {rng.choice(_SUFFIXES)}"


def _money(rng: random.Random, lo: float, hi: float) -> float:
    return round(rng.uniform(lo, hi), 2)


def _maybe(rng: random.Random, p: float, value: str) -> str | None:
    return value if rng.random() >= p else None


# --------------------------------------------------------------------------------------------------------------
# Accelo record builders. A record holds exactly the fields the Accelo documentation defines for the object (the
# docs fixture, `syncflow/sources/accelo_catalog`), every scalar a string as in the docs' examples ("id": "39",
# "amount": "79.00", "date_completed": null). Each entity gives the values that carry meaning (amounts that add up,
# dates in order, a standing and the dates it implies); every other documented field gets a plain value of its
# documented type.

RecordBuilder = Callable[[random.Random, int, int, int], Record]
Semantics = Callable[[random.Random, int, int, int], Record]


def _company(rng: random.Random, rid: int, created: int, modified: int) -> Record:
    name = _company_name(rng)
    return {
        "standing": rng.choice(("active", "active", "active", "inactive", "prospect")),
        "name": name,
        "website": _maybe(rng, 0.2, f"www.{name.lower().replace(' ', '-')}.example.com"),
    }


def _invoice(rng: random.Random, rid: int, created: int, modified: int) -> Record:
    amount = _money(rng, 150, 25000)
    paid = rng.random() < 0.7
    return {
        "subject": f"{rng.choice(_TOPICS)} - {iso(created)[:7]}",
        "amount": f"{amount:.2f}",
        "against_type": rng.choice(("job", "job", "company", "prospect")),
        "invoice_number": str(10000 + rid % 1_000_000),
        "tax": f"{amount * 0.1:.2f}",
        "outstanding": "0.00" if paid else f"{_money(rng, 0, amount):.2f}",
        "date_raised": str(created),
        "date_due": str(created + rng.choice((14, 30, 30, 60)) * _DAY),
        "date_modified": str(modified),
    }


def _payment(rng: random.Random, rid: int, created: int, modified: int) -> Record:
    del modified  # payments are immutable in Accelo: only a creation date exists
    return {"amount": f"{_money(rng, 50, 20000):.2f}", "against_type": "account_invoice"}


def _prospect(rng: random.Random, rid: int, created: int, modified: int) -> Record:
    standing = rng.choice(("active", "active", "won", "lost", "abandoned"))
    weighting = rng.choice((10, 25, 50, 75, 90))
    value = _money(rng, 1000, 120000)
    progress = rng.choice((0, 10, 25, 50, 80, 100)) / 100
    closer = str(rng.randint(1, 40))
    return {
        "title": f"{rng.choice(_TOPICS)} for {_company_name(rng)}",
        "date_actioned": str(_between(rng, created, modified)) if standing != "active" else None,
        "date_due": str(created + rng.randint(7, 120) * _DAY),
        "weighting": str(weighting),
        "value": f"{value:.2f}",
        "success": "yes" if standing == "won" else "no",
        "progress": f"{progress:.4f}",  # a fraction, as in the docs' example ("0.2500")
        "value_weighted": str(round(value * weighting / 100)),  # documented as an integer ("20")
        "won_by_id": closer if standing == "won" else "0",
        "cancelled_by_id": closer if standing == "lost" else "0",
        "abandoned_by_id": closer if standing == "abandoned" else "0",
        "standing": standing,
    }


def _job(rng: random.Random, rid: int, created: int, modified: int) -> Record:
    standing = rng.choice(("pending", "active", "active", "paused", "complete", "closed"))
    commenced = _between(rng, created, modified) if standing != "pending" else 0
    completed = _between(rng, commenced, modified) if standing in ("complete", "closed") else 0
    against_type = rng.choice(("company", "company", "prospect"))
    against_id = str(rng.randint(1, 3000))
    job_type = str(rng.randint(1, 6))
    return {
        "title": f"{rng.choice(_TOPICS)} #{rid}",
        "against_type": against_type,
        "against_id": against_id,
        "against": f"{'companies' if against_type == 'company' else 'prospects'}/{against_id}",
        "custom_id": _maybe(rng, 0.5, f"JOB#{rid % 100000}"),
        "paused": str(rng.randint(1, 30)) if standing == "paused" else "0",
        "date_commenced": str(commenced) if commenced else None,
        "date_started": str(created + rng.randint(0, 14) * _DAY),
        "date_due": str(created + rng.randint(14, 180) * _DAY),
        "date_completed": str(completed) if completed else None,  # null until completed, as in the docs' example
        "type": job_type,
        "job_type": job_type,
        "rate_charged": f"{rng.choice((0, 95, 125, 150, 175, 210)):.2f}",
        "standing": standing,
        "company": against_id if against_type == "company" else str(rng.randint(1, 3000)),
    }


def _staff(rng: random.Random, rid: int, created: int, modified: int) -> Record:
    del created, modified  # the docs give staff no dates
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return {
        "firstname": first,
        "surname": last,
        "standing": rng.choice(("active", "active", "active", "inactive")),
        "title": rng.choice(("Mr", "Ms", "Mx", "Dr")),
        "email": f"{first.lower()}.{last.lower()}{rid}@example.com",
        "username": f"{first.lower()}{rid}",
        "position": rng.choice(("Consultant", "Project Manager", "Designer", "Engineer", "Account Manager")),
        "timezone": rng.choice(("Australia/Sydney", "America/New_York", "Europe/London")),
        "staff_rate": f"{rng.choice((120, 150, 180, 220)):.2f}",
        "staff_cost_rate": f"{rng.choice((60, 75, 90)):.2f}",
    }


def _plain_value(rng: random.Random, field: Mapping[str, Any], rid: int, created: int, modified: int) -> Any:
    """A value of a field's documented type, in the docs' format."""
    name, kind = field["name"], field["type"]
    values = field.get("values")
    if name == "id":
        return str(rid)
    if kind == "UTC_DATETIME":
        if name == "date_created":
            return str(created)
        if name == "date_modified":
            return str(modified)
        return str(_between(rng, created, modified))
    if kind == "LONG":
        return str(rng.randint(1, 40) if name in _STAFF_LINKS else rng.randint(1, 3000))
    if kind.startswith("DECIMAL"):
        return f"{_money(rng, 0, 5000):.2f}"
    if kind == "BOOLEAN":
        return rng.choice(values) if values else rng.choice(("0", "1"))
    if kind == "JSON":
        return None
    if values:
        return rng.choice(values)
    if name in ("phone", "mobile", "fax"):
        return _maybe(rng, 0.3, f"+61 2 {rng.randint(9000, 9999)} {rng.randint(1000, 9999)}")
    if name == "email":
        return f"{rng.choice(_FIRST).lower()}{rid}@example.com"
    if field["default"]:
        return f"{rng.choice(_TOPICS)} {rid}"
    return _maybe(rng, 0.5, f"{rng.choice(_TOPICS)} notes")


#: Linked staff (managers, owners, creators): a deployment has tens of staff, not thousands.
_STAFF_LINKS = frozenset({"manager", "modified_by", "owner_id", "created_by", "creator_id", "created_by_staff_id"})


def _documented_builder(
    resource: _catalog.AcceloResource, semantics: Semantics
) -> tuple[RecordBuilder, tuple[Mapping[str, Any], ...]]:
    endpoint = _catalog.list_endpoint(resource.doc_resource, resource.path)
    assert endpoint.object is not None
    documented = resource.columns
    owner = _catalog.CATALOG[endpoint.resource]["objects"][endpoint.object]["fields"]
    fields = tuple(f for f in owner if f["name"] in documented)
    entity = resource.table

    def build(rng: random.Random, rid: int, created: int, modified: int) -> Record:
        meaningful = semantics(rng, rid, created, modified)
        unknown = set(meaningful) - set(documented)
        if unknown:
            raise AssertionError(f"{entity}: builder sets undocumented fields {sorted(unknown)}")
        return {
            f["name"]: meaningful[f["name"]]
            if f["name"] in meaningful
            else _plain_value(rng, f, rid, created, modified)
            for f in fields
        }

    return build, fields


def _documented_only(rng: random.Random, rid: int, created: int, modified: int) -> Record:
    # The catalogue beyond the six: every field a plain value of its documented type, in the docs' format.
    del rng, rid, created, modified
    return {}


# Visible changes made by a modifying mutation, per entity (the date field is bumped separately).
def _touch_company(rng: random.Random, rec: Record) -> None:
    rec["name"] = _company_name(rng)


def _touch_invoice(rng: random.Random, rec: Record) -> None:
    rec["outstanding"] = f"{_money(rng, 0, float(rec['amount'])):.2f}"


def _touch_title(rng: random.Random, rec: Record) -> None:
    rec["title"] = f"{rng.choice(_TOPICS)} (revised {rng.randint(2, 99)})"


def _touch_staff(rng: random.Random, rec: Record) -> None:
    rec["position"] = rng.choice(("Senior Consultant", "Director", "Team Lead", "Principal"))


@dataclass(frozen=True)
class EntitySpec:
    """What the API knows about one Accelo entity: its documented fields and the filters its docs list."""

    name: str
    fields: tuple[str, ...]
    default_fields: tuple[str, ...]
    #: Date fields usable in ``_after``/``_before`` filters (the docs' date filters that are fields of the record).
    filter_dates: tuple[str, ...]
    #: Date fields present on the record (bumped to "now" by mutations).
    record_dates: tuple[str, ...]
    build: RecordBuilder
    touch: Callable[[random.Random, Record], None] | None
    #: The docs' list filters per kind (basic, date, range, order, object, empty, search).
    filters: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Fivetran type per field (to compare numbers as numbers in range filters and orders).
    types: Mapping[str, str] = field(default_factory=dict)


def _touch_generic(rng: random.Random, rec: Record) -> None:
    del rng, rec  # only the date changes (bumped by `Table.modify`): the record is re-read by its cursor


def _spec(entity: str, semantics: Semantics, touch: Callable[[random.Random, Record], None] | None) -> EntitySpec:
    resource = _catalog.RESOURCES[entity]
    build, documented = _documented_builder(resource, semantics)
    fields = tuple(f["name"] for f in documented)
    defaults = tuple(f["name"] for f in documented if f["default"])
    endpoint = resource
    dates = tuple(f["name"] for f in documented if f["type"] == "UTC_DATETIME")
    filter_dates = tuple(d for d in endpoint.filters.get("date", ()) if d in dates)
    types = {f["name"]: f["type"] for f in documented}
    return EntitySpec(entity, fields, defaults, filter_dates, dates, build, touch, endpoint.filters, types)


ENTITY_SPECS: dict[str, EntitySpec] = {
    s.name: s
    for s in (
        _spec("companies", _company, _touch_company),
        _spec("invoices", _invoice, _touch_invoice),
        _spec("payments", _payment, None),
        _spec("prospects", _prospect, _touch_title),
        _spec("jobs", _job, _touch_title),
        _spec("staff", _staff, _touch_staff),
        *(
            _spec(name, _documented_only, _touch_generic if resource.cursor else None)
            for name, resource in _catalog.RESOURCES.items()
            if name not in ("companies", "invoices", "payments", "prospects", "jobs", "staff")
        ),
    )
}


def _as_int(value: str | None) -> int:
    # Accelo reports "no date" as "0" (or null); both compare as 0.
    return int(value) if value else 0


_MAX_CACHED_SELECTIONS = 32  # distinct `_fields` selections whose serialized rows are kept


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class RowCache:
    """Each row serialized to JSON once per field selection, so a page costs a join instead of a json.dumps.

    A benchmark reads every row at least once and usually several times (retries, re-syncs), and serializing
    dominated the cost of a page; the cache keeps the simulator far from being the bottleneck.
    """

    def __init__(self) -> None:
        self._by_fields: dict[tuple[str, ...] | None, list[str | None]] = {}

    def rows_json(self, records: list[Record], rows: Iterable[int], fields: tuple[str, ...] | None) -> str:
        """The JSON array of the given rows; ``fields=None`` means every field of the record."""
        cache = self._by_fields.get(fields)
        if cache is None and len(self._by_fields) < _MAX_CACHED_SELECTIONS:
            cache = self._by_fields[fields] = [None] * len(records)
        parts: list[str] = []
        for i in rows:
            text = cache[i] if cache is not None else None
            if text is None:
                rec = records[i]
                text = dumps(rec if fields is None else {f: rec[f] for f in fields})
                if cache is not None:
                    cache[i] = text
            parts.append(text)
        return "[" + ",".join(parts) + "]"

    def appended(self) -> None:
        for cache in self._by_fields.values():
            cache.append(None)

    def removed(self, index: int) -> None:
        for cache in self._by_fields.values():
            del cache[index]

    def changed(self, index: int) -> None:
        for cache in self._by_fields.values():
            cache[index] = None


@dataclass
class Table:
    """One Accelo entity: records sorted by id plus int columns for fast filtering."""

    spec: EntitySpec
    records: list[Record] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    dates: dict[str, list[int]] = field(default_factory=dict)
    json: RowCache = field(default_factory=RowCache)

    def append(self, rec: Record) -> None:
        self.records.append(rec)
        self.ids.append(int(rec["id"]))
        for name in self.spec.filter_dates:
            self.dates.setdefault(name, []).append(_as_int(rec[name]))
        self.json.appended()

    def refresh(self, index: int) -> None:
        rec = self.records[index]
        for name in self.spec.filter_dates:
            self.dates[name][index] = _as_int(rec[name])
        self.json.changed(index)

    def modify(self, rng: random.Random, count: int, now: int) -> None:
        touch = self.spec.touch
        if touch is None:
            return  # payments: nothing can be modified
        dated = "date_modified" in self.spec.record_dates  # staff change without any date to show for it
        for index in sorted(rng.sample(range(len(self.records)), min(count, len(self.records)))):
            rec = self.records[index]
            touch(rng, rec)
            if dated:
                rec["date_modified"] = str(now)
            self.refresh(index)

    def create(self, rng: random.Random, count: int, now: int) -> None:
        last = self.ids[-1] if self.ids else 0
        for rid in _ids(rng, count, start=last):
            self.append(self.spec.build(rng, rid, now, now))

    def delete(self, rng: random.Random, count: int) -> None:
        for index in sorted(rng.sample(range(len(self.records)), min(count, len(self.records))), reverse=True):
            del self.records[index], self.ids[index]
            for column in self.dates.values():
                del column[index]
            self.json.removed(index)

    def blank_cursor(self, rng: random.Random, count: int) -> None:
        """Give `count` records a null, empty or zero cursor date (see SimConfig.blank_cursor_dates)."""
        cursor = "date_modified" if "date_modified" in self.spec.filter_dates else "date_created"
        if cursor not in self.spec.filter_dates:
            return  # staff: no date filter, nothing to hide from
        for n, index in enumerate(rng.sample(range(len(self.records)), min(count, len(self.records)))):
            value = (None, "", "0")[n % 3]
            self.records[index][cursor] = value
            # NaN fails every comparison: a null (or empty) date matches neither `_after` nor `_before`.
            self.dates[cursor][index] = 0 if value == "0" else NO_DATE
            self.json.changed(index)


def build_table(seed: int, entity: str, count: int, id_base: int = 0) -> Table:
    """``id_base`` offsets every id (e.g. 2**31 - 10 puts ids past the 32-bit range, as large deployments have)."""
    spec = ENTITY_SPECS[entity]
    # A string seed is hashed with SHA-512 by `random`, so it is stable across processes (no PYTHONHASHSEED).
    rng = random.Random(f"{seed}:accelo:{entity}")
    ids = _ids(rng, count, start=id_base)
    created = _created_times(rng, count)
    if "date_modified" not in spec.record_dates:
        _import_batches(rng, created)
    modified = _modified_times(rng, created)
    table = Table(spec, dates={name: [] for name in spec.filter_dates})
    for rid, c, m in zip(ids, created, modified, strict=True):
        table.append(spec.build(rng, rid, c, m))
    return table


# --------------------------------------------------------------------------------------------------------------
# AwardCo users.

_DEPARTMENTS = ("Engineering", "Sales", "Marketing", "Finance", "People", "Operations", "Support")
_CURRENCIES = ("USD", "USD", "USD", "USD", "EUR", "GBP", "AUD", "CAD")


@dataclass
class Users:
    """AwardCo users sorted by employeeId, with their ``updated_at`` as unix seconds."""

    records: list[Record] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    json: RowCache = field(default_factory=RowCache)

    def append(self, rec: Record, number: int, updated: int) -> None:
        self.records.append(rec)
        self.numbers.append(number)
        self.updated.append(updated)
        self.json.appended()

    def modify(self, rng: random.Random, count: int, now: int) -> None:
        for index in sorted(rng.sample(range(len(self.records)), min(count, len(self.records)))):
            rec = self.records[index]
            rec["balance"] = round(rec["balance"] + rng.choice((5, 10, 25, 50, 100)), 2)
            rec["updated_at"] = iso(now)
            self.updated[index] = now
            self.json.changed(index)

    def create(self, rng: random.Random, count: int, now: int) -> None:
        last = self.numbers[-1] if self.numbers else 0
        for number in _ids(rng, count, start=last):
            self.append(_user(rng, number, now, now), number, now)

    def delete(self, rng: random.Random, count: int) -> None:
        for index in sorted(rng.sample(range(len(self.records)), min(count, len(self.records))), reverse=True):
            del self.records[index], self.numbers[index], self.updated[index]
            self.json.removed(index)

    def blank_cursor(self, rng: random.Random, count: int) -> None:
        for n, index in enumerate(rng.sample(range(len(self.records)), min(count, len(self.records)))):
            self.records[index]["updated_at"] = (None, "")[n % 2]
            self.updated[index] = NO_DATE
            self.json.changed(index)


def _user(rng: random.Random, number: int, created: int, updated: int) -> Record:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return {
        "employeeId": f"E{number:06d}",
        "firstName": first,
        "lastName": last,
        "email": f"{first.lower()}.{last.lower()}.{number}@example.com",
        "balance": round(rng.uniform(0, 2500) * 2) / 2,
        "currencyCode": rng.choice(_CURRENCIES),
        "department": rng.choice(_DEPARTMENTS),
        "created_at": iso(created),
        "updated_at": iso(updated),
    }


def build_users(seed: int, count: int) -> Users:
    rng = random.Random(f"{seed}:awardco:user")
    numbers = _ids(rng, count)
    created = _created_times(rng, count)
    updated = _modified_times(rng, created)
    users = Users()
    for number, c, u in zip(numbers, created, updated, strict=True):
        users.append(_user(rng, number, c, u), number, u)
    return users
