"""What every source shares: its end-of-sync report, and running one stream so that its failure is its own."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .._exceptions import AuthenticationError, BudgetExhausted, PermissionDenied, SourceError
from .._streams import RowConverter

__all__ = ["SourceReport", "fails_alone", "permission_hint", "report_conversions", "run_alone"]

logger = logging.getLogger("syncflow")


@dataclass
class SourceReport:
    source: str
    completed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stopped_early: bool = False
    failed: dict[str, SourceError] = field(default_factory=dict)  # stream -> why it failed for good
    skipped: dict[str, str] = field(default_factory=dict)  # stream -> why it was skipped (a 403)
    repaired: dict[str, int] = field(default_factory=dict)  # stream -> rows upserted by a reconciliation sweep
    deleted: dict[str, int] = field(default_factory=dict)  # stream -> rows deleted (sweep or full refresh)


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


def permission_hint(stream: str, error: SourceError) -> str:
    """The dashboard warning for a stream the credentials may not read: what, which permission, how to leave it out."""
    source, _, table = stream.partition(".")
    if source == "accelo":
        grant = (
            f"grant the Accelo service application read (view) access to {table} (its module must be licensed on the "
            "deployment)"
        )
    else:
        grant = f"ask AwardCo to let this API key read {table}s"
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
            message = permission_hint(stream, errors[0])
            report.skipped[stream] = str(errors[0])
        else:
            first = next(error for error in errors if not isinstance(error, PermissionDenied))
            report.failed[stream] = first
            message = f"{stream} failed: {first}; the other streams carry on"
        logger.warning("%s", message)
        report.warnings.append(message)
        return False
    return True
