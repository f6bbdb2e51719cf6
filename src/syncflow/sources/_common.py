"""What every source shares: its end-of-sync report."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._streams import RowConverter

__all__ = ["SourceReport", "report_conversions"]


@dataclass
class SourceReport:
    source: str
    completed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stopped_early: bool = False
    repaired: dict[str, int] = field(default_factory=dict)  # stream -> rows upserted by a reconciliation sweep
    deleted: dict[str, int] = field(default_factory=dict)  # stream -> rows deleted (sweep or full refresh)


def report_conversions(report: SourceReport, converter: RowConverter) -> None:
    """Summarise, once per stream, the values that could not be converted (they were stored as null)."""
    stream = converter.stream.key
    for column, count in sorted(converter.failures.items()):
        report.warnings.append(f"{stream}.{column}: {count} value(s) could not be converted and were stored as null")
    if converter.missing_key:
        report.warnings.append(f"{stream}: {converter.missing_key} record(s) without a primary key were skipped")
