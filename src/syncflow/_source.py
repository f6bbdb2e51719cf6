"""What a source is, to the engine: the `Source` protocol every plug-in implements, and what a run of one gets.

The engine (`_sync`, `_config`, `_state`, `_http`, `_pipeline`) names no source. A source plug-in owns:

- its configuration keys (`keys`, entries like the engine's own in `syncflow.Key`) and their parsing
  (`configure`, from a `ConfigReader` whose every error names the key the user wrote), returning its settings, or
  None when the configuration does not set it up;
- its streams (`streams`, by table; each stream's key is "<source>.<table>" and its destination schema the source's
  name), auth and client setup (its settings' `authenticator`), and what it does in one sync (`run`);
- where its data comes from, as recorded in the state (its settings' `fingerprint`: never a credential);
- reading an older connector's state (`migrate_state`) and its wording (`permission_hint`);
- the values that point it at syncflow's simulator in mock mode (`mock_configuration`; {} when it has none).

Built-in sources are listed once, in `syncflow.sources.BUILTIN_SOURCES`; the public API takes more
(`syncflow.sync(configuration, sink, sources=[MySource()])`). See `examples/custom_source.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import httpx
from anyio.abc import ObjectSendStream

from ._exceptions import AuthenticationError, BudgetExhausted, PermissionDenied, SourceError
from ._streams import RowConverter, Stream

if TYPE_CHECKING:
    from ._config import ConfigReader, Key
    from ._http import ApiClient, Authenticator
    from ._pipeline import Batch

__all__ = [
    "Source",
    "SourceReport",
    "SourceRun",
    "SourceSettings",
    "fails_alone",
    "permission_hint",
    "report_conversions",
    "run_alone",
    "without_userinfo",
]

logger = logging.getLogger("syncflow")


def without_userinfo(url: str) -> str:
    """`url` as a fingerprint may record it: scheme, host, port and path, never userinfo, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class SourceSettings(Protocol):
    """A configured source's settings, as the engine uses them (a frozen dataclass of the source's own does)."""

    @property
    def base_url(self) -> str:
        """The API's base URL (requests use paths under it)."""
        ...

    @property
    def requests_per_hour(self) -> int:
        """The client-side rate budget of this API (its streams share it)."""
        ...

    def fingerprint(self) -> str:
        """Where the data comes from, recorded in the state: a state saved from another origin is not applied."""
        ...

    def authenticator(self, http: httpx.AsyncClient, *, api: str, max_response_bytes: int) -> Authenticator:
        """The auth scheme requests are sent with (`syncflow.ApiKeyAuth`, `syncflow.OAuth2ClientCredentials`...)."""
        ...


@dataclass
class SourceRun:
    """What one sync hands a source's `run`: its settings, a client under its rate gate and retries, and where to
    send its batches (in order per stream; a batch's state patch is applied once its rows are written)."""

    name: str
    settings: SourceSettings
    client: ApiClient
    send: ObjectSendStream[Batch]
    tables: Sequence[str]  # the tables chosen for this sync, of the source's `streams`
    prior: Mapping[str, Mapping[str, Any]]  # each chosen stream's saved state entry, by stream key ({} when none)
    report: SourceReport
    concurrency: int  # requests in flight the source may use
    start_date: datetime | None
    clock_now: float  # this machine's clock at sync start (unix seconds)
    # How often each stream is swept whole (reconciliation: repairs and deletes), and the most requests sweeps may
    # spend in this sync (a larger sweep continues in the next one).
    reconcile_every_seconds: float = 24 * 3600.0
    sweep_requests: int = 1250
    # The chosen streams by table, as declared (a caller may pass streams of its own, e.g. an extra Accelo resource
    # declared with `syncflow.accelo_resource`); empty: the source's own `streams`.
    chosen: Mapping[str, Stream] = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """A REST API syncflow can sync: implement this (see the module docstring) and pass it in `sources=`."""

    @property
    def name(self) -> str:
        """The source's name: its streams' prefix ("<name>.<table>"), destination schema and rate-gate label."""
        ...

    @property
    def keys(self) -> Sequence[Key]:
        """The configuration keys it reads (its own, named "<name>_..." by convention)."""
        ...

    @property
    def streams(self) -> Mapping[str, Stream]:
        """Its streams, by table."""
        ...

    def configure(self, config: ConfigReader) -> SourceSettings | None:
        """This source's settings from the configuration, or None when it is not set up (its keys are absent)."""
        ...

    def mock_configuration(self) -> Mapping[str, str]:
        """Configuration values pointing this source at syncflow's simulator (use_mock); {} when it has none."""
        ...

    def migrate_state(self, legacy: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
        """Stream entries (by stream key) from an unversioned state an older connector saved; {} when none."""
        ...

    def permission_hint(self, table: str) -> str:
        """How to grant read access to `table` (for the warning when the API answers 403)."""
        ...

    async def run(self, run: SourceRun) -> None:
        """Sync `run.tables`: send each stream's batches, record completed streams in `run.report`."""
        ...


@dataclass
class SourceReport:
    """What one source's run did, per stream (completed, failed, skipped, repaired/deleted counts), and its
    warnings; the engine builds `SyncResult` from it. A source appends to it as its streams finish."""

    source: str
    completed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stopped_early: bool = False
    failed: dict[str, SourceError] = field(default_factory=dict)  # stream -> why it failed for good
    skipped: dict[str, str] = field(default_factory=dict)  # stream -> why it was skipped (a 403)
    repaired: dict[str, int] = field(default_factory=dict)  # stream -> rows upserted by a reconciliation sweep
    deleted: dict[str, int] = field(default_factory=dict)  # stream -> rows deleted (sweep or full refresh)
    # The source's wording for granting read access to a table (`Source.permission_hint`).
    grant: Callable[[str], str] | None = field(default=None, repr=False)


def report_conversions(report: SourceReport, converter: RowConverter) -> None:
    """Summarise, once per stream, the values that could not be converted (they were stored as null)."""
    stream = converter.stream.key
    for column, count in sorted(converter.failures.items()):
        report.warnings.append(f"{stream}.{column}: {count} value(s) could not be converted and were stored as null")
    if converter.missing_key:
        report.warnings.append(f"{stream}: {converter.missing_key} record(s) without a primary key were skipped")


def _leaves(exc: BaseException) -> list[BaseException]:
    nested = getattr(exc, "exceptions", None)
    if nested is None:
        return [exc]
    return [leaf for inner in nested for leaf in _leaves(inner)]


def fails_alone(exc: BaseException) -> list[SourceError] | None:
    """The errors of `exc` when they end only the stream that raised them, else None (they end more, or are bugs).

    A stream fails alone on an exhausted retry, a 4xx, a body that stays malformed, and a 403 (skipped). Not alone:
    a 401 or refused token (the credentials are wrong for the whole API), a spent rate budget (the whole API stops
    cleanly), cancellation, and anything that is not a `SourceError` (a bug must not be reported as an API error).
    """
    leaves = _leaves(exc)
    alone: list[SourceError] = []
    for leaf in leaves:
        if not isinstance(leaf, SourceError) or isinstance(leaf, BudgetExhausted):
            return None
        if isinstance(leaf, AuthenticationError) and not isinstance(leaf, PermissionDenied):
            return None
        alone.append(leaf)
    return alone


def permission_hint(stream: str, error: SourceError, grant: str | None = None) -> str:
    """The dashboard warning for a stream the credentials may not read: what, which permission, how to leave it out."""
    source, _, table = stream.partition(".")
    grant = grant or f"grant these credentials read access to {table}"
    return (
        f'{stream} skipped: {error} — {grant}, or leave the stream out: list the streams to sync in "streams" '
        f'(without {stream}), or drop {source} from "sources". Its state is untouched: it starts cleanly once '
        "readable; the other streams synced"
    )


async def run_alone(stream: str, work: Callable[[], Awaitable[None]], report: SourceReport) -> bool:
    """Run one stream's work; if it fails alone, record that in `report` and return False instead of raising.

    Its siblings keep running: the caller's task group never sees the error. What the stream delivered before it
    failed stays checkpointed (its batches were sent in order), and its cursor does not move, so the next sync
    resumes it from its own last checkpoint.
    """
    try:
        await work()
    except BaseException as exc:
        errors = fails_alone(exc)
        if not errors:
            raise
        if all(isinstance(error, PermissionDenied) for error in errors):
            table = stream.partition(".")[2]
            message = permission_hint(stream, errors[0], report.grant(table) if report.grant else None)
            report.skipped[stream] = str(errors[0])
        else:
            first = next(error for error in errors if not isinstance(error, PermissionDenied))
            report.failed[stream] = first
            message = f"{stream} failed: {first}; the other streams carry on"
        logger.warning("%s", message)
        report.warnings.append(message)
        return False
    return True
