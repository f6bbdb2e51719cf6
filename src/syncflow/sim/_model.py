"""The simulator's public value types: configuration knobs and request statistics.

Everything here is an immutable value so one config can be shared by many simulators (and by threads).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from ..sources._accelo_catalog import RESOURCES

ACCELO_CLIENT_ID = "syncflow-sim"
ACCELO_CLIENT_SECRET = "syncflow-sim-secret"
AWARDCO_API_KEY = "syncflow-sim-key"
#: Every Accelo table syncflow streams (the docs catalogue): the six original ones first.
ACCELO_ENTITIES: tuple[str, ...] = tuple(RESOURCES)

#: The six original tables keep the counts other tests were written against; every other resource starts small (a
#: default mock sync reads the whole catalogue, and the suite must stay fast), with two pages' worth for mid-sized ones.
_ORIGINAL_COUNTS = {"companies": 300, "invoices": 400, "payments": 300, "prospects": 200, "jobs": 250, "staff": 40}
NEW_RESOURCE_COUNT = 25
DEFAULT_ACCELO_COUNTS: Mapping[str, int] = MappingProxyType(
    {name: _ORIGINAL_COUNTS.get(name, NEW_RESOURCE_COUNT) for name in ACCELO_ENTITIES}
)

#: The fault kinds a schedule may name.
FAULT_KINDS = frozenset({"500", "502", "503", "504", "429", "401", "drop", "malformed", "html", "slow"})
# Also counted in `faults_by_kind` (not schedulable): "outage" (see `Outage`).


def _frozen(mapping: Mapping[int, str] | Mapping[str, int] | None) -> Mapping:  # type: ignore[type-arg]
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Faults:
    """Fault injection on data requests (``SimConfig.faults``) or on token requests (``SimConfig.token_faults``).

    Rates are fractions of data requests; ``schedule`` forces a fault on the data request with that 1-based number
    (token requests are not counted; for ``token_faults``, the 1-based token-request number) and overrides the
    random draw for it. A data request is checked in this order:
    authentication (401), the rate-limit window (429), then the fault, so a fault drawn for a request that was
    already refused is not injected (and not counted in ``faults_injected``). "slow" only delays a normal answer.
    """

    error_rate: float = 0.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    schedule: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate", "malformed_rate", "slow_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name} must be within [0, 1], got {value!r}")
        if self.error_rate + self.drop_rate + self.malformed_rate > 1.0:
            raise ValueError("Faults.error_rate + drop_rate + malformed_rate must not exceed 1")
        if self.slow_seconds < 0:
            raise ValueError("Faults.slow_seconds must be >= 0")
        for number, kind in self.schedule.items():
            if not isinstance(number, int) or number < 1:
                raise ValueError(f"Faults.schedule keys are 1-based data-request numbers, got {number!r}")
            if kind not in FAULT_KINDS:
                raise ValueError(f"Faults.schedule[{number}]: unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        # A caller's dict must not change the behaviour of an already-built (frozen) config.
        object.__setattr__(self, "schedule", _frozen(self.schedule))


@dataclass(frozen=True)
class Mutation:
    """Records modified, created and/or deleted just before the data request numbered ``after_requests`` is served.

    Deletes remove records outright (AwardCo users, Accelo records): they vanish from every later list, count and
    ``total``, shifting later pages as a real deletion does. ``Simulator.apply_mutation`` applies one between syncs.
    ``late_by`` models a long transaction: the records become visible at that request but carry a timestamp
    ``late_by`` seconds before the server's clock (the time the transaction started), so a sync whose window ends
    after that stamp but that already read past them never sees them.
    """

    after_requests: int
    source: str
    entity: str
    modify: int = 0
    create: int = 0
    late_by: float = 0.0
    delete: int = 0

    def __post_init__(self) -> None:
        if self.source not in ("accelo", "awardco"):
            raise ValueError(f"Mutation.source must be 'accelo' or 'awardco', got {self.source!r}")
        valid = ACCELO_ENTITIES if self.source == "accelo" else ("user",)
        if self.entity not in valid:
            raise ValueError(f"Mutation.entity for {self.source} must be one of {valid}, got {self.entity!r}")
        if self.after_requests < 1:
            raise ValueError(f"Mutation.after_requests is a 1-based data-request number, got {self.after_requests}")
        if self.modify < 0 or self.create < 0 or self.delete < 0:
            raise ValueError("Mutation.modify, Mutation.create and Mutation.delete must be >= 0")
        if self.late_by < 0:
            raise ValueError("Mutation.late_by must be >= 0 (seconds before the server's clock)")


@dataclass(frozen=True)
class Outage:
    """One API answers ``status`` to every request for ``seconds`` (real, monotonic time; ``clock`` does not apply).

    It starts when the API has served ``start_after_requests`` data requests and the next request to it arrives (0:
    at its first request). ``include_token`` extends it to Accelo's token endpoint, so a client that needs a token
    during the outage cannot get one either. Refused requests count as faults of kind "outage".
    """

    api: str
    start_after_requests: int
    seconds: float
    status: int = 502
    include_token: bool = True

    def __post_init__(self) -> None:
        if self.api not in ("accelo", "awardco"):
            raise ValueError(f"Outage.api must be 'accelo' or 'awardco', got {self.api!r}")
        if self.start_after_requests < 0 or self.seconds < 0:
            raise ValueError("Outage.start_after_requests and Outage.seconds must be >= 0")
        if not 400 <= self.status <= 599:
            raise ValueError(f"Outage.status must be an HTTP error status, got {self.status}")


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulator. ``accelo_counts`` entries missing from a given mapping keep their default.

    Clocks: the server's clock is ``clock() + clock_offset`` (seconds ahead of ours; negative: behind), stepped back
    by ``clock_step_back[1]`` seconds from the data request numbered ``clock_step_back[0]`` on; it stamps records,
    rate-limit windows (``X-RateLimit-Reset``) and the ``Date`` header, which ``send_date=False`` leaves out.
    ``accelo_page_size_max`` caps the rows an Accelo list serves whatever ``_limit`` asks (a deployment serving 50).
    """

    seed: int = 7
    accelo_counts: Mapping[str, int] = field(default_factory=lambda: DEFAULT_ACCELO_COUNTS)
    awardco_users: int = 250
    latency: float = 0.0
    jitter: float = 0.0
    accelo_rate_limit: int = 5000
    awardco_rate_limit: int = 1000
    rate_window: float = 3600.0
    token_ttl: int = 2592000
    faults: Faults = field(default_factory=Faults)
    token_faults: Faults = field(default_factory=Faults)
    mutations: Sequence[Mutation] = ()
    awardco_include_total: bool = True
    awardco_page_size_max: int = 100
    accelo_page_size_max: int = 100
    clock_offset: float = 0.0
    clock_step_back: tuple[int, float] | None = None
    send_date: bool = True
    clock: Callable[[], float] = field(default=time.time)
    accelo_client_id: str = ACCELO_CLIENT_ID
    accelo_client_secret: str = ACCELO_CLIENT_SECRET
    awardco_api_key: str = AWARDCO_API_KEY
    awardco_updated_since_param: str = "updated_since"
    outages: Sequence[Outage] = ()
    # Resources the credentials may not read ("accelo.prospects", "awardco.user"): their list and count requests
    # answer 403 (Accelo: meta status "invalid_permission", as its status-code docs define).
    forbidden: Sequence[str] = ()
    #: Every Accelo id is offset by this (ids are unbounded: 2**31 - 10 makes most of them exceed 32 bits).
    accelo_id_base: int = 0
    #: Failed authentications (bad client credentials or tokens) within ``accelo_lockout_seconds`` after which the
    #: client is locked out (the docs: 100 within 5 minutes; each attempt while locked out restarts the timer).
    accelo_lockout_after: int = 100
    accelo_lockout_seconds: float = 300.0
    #: The order AwardCo pages users in: "employee_id" (stable), or "updated_at" — ascending ``updated_at`` with ties
    #: in a different random order for every request (an API sorting on a non-unique column), so an update moves a
    #: user to the end and tied users swap places between pages.
    awardco_order: str = "employee_id"
    #: How many records per table get a null, empty or zero cursor date (Accelo: date_modified, payments:
    #: date_created; AwardCo: updated_at). Null and empty dates match no date filter, as a real API's SQL
    #: comparison with NULL; "0" matches only a `_before`. Only a read without date filters finds them all.
    blank_cursor_dates: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.accelo_counts) - set(ACCELO_ENTITIES)
        if unknown:
            raise ValueError(f"SimConfig.accelo_counts: unknown entities {sorted(unknown)}")
        counts = {**DEFAULT_ACCELO_COUNTS, **self.accelo_counts}
        if any(n < 0 for n in counts.values()) or self.awardco_users < 0:
            raise ValueError("record counts must be >= 0")
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        if self.accelo_rate_limit < 1 or self.awardco_rate_limit < 1 or self.rate_window <= 0:
            raise ValueError("rate limits must be >= 1 and rate_window > 0")
        if self.token_ttl < 1 or self.awardco_page_size_max < 1 or self.accelo_page_size_max < 1:
            raise ValueError("token_ttl, awardco_page_size_max and accelo_page_size_max must be >= 1")
        if self.clock_step_back is not None and (self.clock_step_back[0] < 1 or self.clock_step_back[1] < 0):
            raise ValueError("clock_step_back is (1-based data-request number, seconds >= 0)")
        if self.accelo_id_base < 0 or self.accelo_lockout_after < 1 or self.accelo_lockout_seconds <= 0:
            raise ValueError("accelo_id_base must be >= 0, accelo_lockout_after >= 1, accelo_lockout_seconds > 0")
        if self.awardco_order not in ("employee_id", "updated_at"):
            raise ValueError(
                f"SimConfig.awardco_order must be 'employee_id' or 'updated_at', got {self.awardco_order!r}"
            )
        if self.blank_cursor_dates < 0:
            raise ValueError("SimConfig.blank_cursor_dates must be >= 0")
        object.__setattr__(self, "accelo_counts", _frozen(counts))
        object.__setattr__(self, "mutations", tuple(self.mutations))
        object.__setattr__(self, "outages", tuple(self.outages))
        known = {f"accelo.{entity}" for entity in ACCELO_ENTITIES} | {"awardco.user"}
        if set(self.forbidden) - known:
            raise ValueError(f"SimConfig.forbidden: unknown resources {sorted(set(self.forbidden) - known)}")
        object.__setattr__(self, "forbidden", frozenset(self.forbidden))


@dataclass(frozen=True)
class SimStats:
    """A snapshot of the request statistics (see ``Simulator.stats``)."""

    requests: int
    data_requests: int
    token_requests: int
    by_endpoint: Mapping[str, int]
    by_status: Mapping[int, int]
    rate_limited: int
    peak_in_flight: int
    peak_in_flight_by_api: Mapping[str, int]
    faults_injected: int
    faults_by_kind: Mapping[str, int]

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict (status codes become string keys)."""
        return {
            "requests": self.requests,
            "data_requests": self.data_requests,
            "token_requests": self.token_requests,
            "by_endpoint": dict(self.by_endpoint),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "rate_limited": self.rate_limited,
            "peak_in_flight": self.peak_in_flight,
            "peak_in_flight_by_api": dict(self.peak_in_flight_by_api),
            "faults_injected": self.faults_injected,
            "faults_by_kind": dict(self.faults_by_kind),
        }
