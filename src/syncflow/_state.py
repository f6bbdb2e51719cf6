"""The versioned state document: one small JSON object per connector, one entry per stream.

    {"version": 1, "streams": {"accelo.companies": {...}, "awardco.user": {...}},
     "sources": {"accelo": "https://acme.api.accelo.com", "awardco": "https://api.awardco.com"}}

`sources` records where each source's streams came from (a base URL, or the simulator's seed and scale). A state
from another source says nothing about this one: `adopt_sources` drops those streams so they start over (a mock run's
cursors applied to a real account would sync nothing, "successfully").

Only the drain thread changes it, by applying the `StatePatch` a batch carries *after* the batch's rows are
upserted, so any checkpoint of it covers only delivered rows. Each stream's entry is bounded in size (a cursor and,
mid-sync, one small record per slice), never proportional to the data.

`StateDocument.load` also reads the example connectors' keys (`last_company_sync`…, `last_sync_time`), so their users
resume instead of resyncing from scratch.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ._exceptions import StateError
from ._time import parse_iso8601

__all__ = ["STATE_VERSION", "StateDocument", "StatePatch"]

logger = logging.getLogger("syncflow")

STATE_VERSION = 1

# A path from the stream's entry down, and the value to put there (None deletes the key).
StatePatch = Sequence[tuple[tuple[str, ...], Any]]

# The example connectors saved cursors that can run ahead of what they delivered (max(newest, now()), and a filter
# moved per page). Re-reading a day is harmless with upserts and recovers what they may have skipped at the edge.
LEGACY_LOOKBACK = timedelta(days=1)

_LEGACY_ACCELO_KEYS = {
    "companies": ("last_company_sync", "last_companies_sync"),
    "invoices": ("last_invoice_sync", "last_invoices_sync"),
    "payments": ("last_payment_sync", "last_payments_sync"),
    "prospects": ("last_prospect_sync", "last_prospects_sync"),
    "jobs": ("last_job_sync", "last_jobs_sync"),
}
_LEGACY_AWARDCO_KEY = "last_sync_time"


class StateDocument:
    def __init__(self, streams: Mapping[str, Any] | None = None, sources: Mapping[str, str] | None = None) -> None:
        self._streams: dict[str, Any] = copy.deepcopy(dict(streams or {}))
        self._sources: dict[str, str] = dict(sources or {})

    def __repr__(self) -> str:
        return f"StateDocument(streams={sorted(self._streams)}, sources={sorted(self._sources)})"

    def source(self, name: str) -> str | None:
        """Which source (`identify_source`'s text) the streams of `name` were synced from; None when unrecorded."""
        return self._sources.get(name)

    def adopt_sources(self, current: Mapping[str, str]) -> list[str]:
        """Record the sources this sync reads; drop the streams of any whose recorded source differs.

        Returns one line per changed source. A state that recorded no source (written before sources were recorded)
        is taken to be from the current one: there is nothing to compare, and resyncing everything would be a
        surprise.
        """
        changes: list[str] = []
        for name, identity in sorted(current.items()):
            before = self._sources.get(name)
            if before is not None and before != identity:
                dropped = sorted(key for key in self._streams if key.split(".", 1)[0] == name)
                for key in dropped:
                    del self._streams[key]
                changes.append(
                    f"state: the {name} source changed (was {before}, now {identity}); its saved state belongs to the "
                    f"other source, so {', '.join(dropped) or 'its streams'} start over"
                )
            self._sources[name] = identity
        return changes

    @classmethod
    def load(cls, raw: Mapping[str, Any] | None) -> StateDocument:
        if not raw:
            return cls()
        if not isinstance(raw, Mapping):
            raise StateError(f"state: expected a JSON object, got {type(raw).__name__}; delete the state to resync")
        version = raw.get("version")
        if version is None:
            return cls(_migrate_legacy(raw))
        if version != STATE_VERSION:
            raise StateError(
                f"state: version {version!r} is not one this syncflow understands (expected {STATE_VERSION}); "
                "upgrade syncflow, or reset the connector's state to resync"
            )
        streams = raw.get("streams", {})
        if not isinstance(streams, Mapping):
            raise StateError("state: 'streams' must be a JSON object; reset the connector's state to resync")
        damaged = sorted(str(key) for key, entry in streams.items() if not isinstance(entry, Mapping))
        if damaged:
            # Safe, if slower: those streams start over, and upserts make re-read rows harmless.
            logger.warning("state: entries for %s are not JSON objects; resyncing them from the start", damaged)
        sources = raw.get("sources", {})
        if not isinstance(sources, Mapping) or not all(isinstance(v, str) for v in sources.values()):
            # Unknown provenance: treated as this source's (as a state from before sources were recorded is).
            logger.warning("state: 'sources' is not a JSON object of strings; ignoring it")
            sources = {}
        return cls({key: entry for key, entry in streams.items() if isinstance(entry, Mapping)}, sources)

    def stream(self, key: str) -> dict[str, Any]:
        """A copy of one stream's entry ({} when it has none)."""
        entry = self._streams.get(key)
        return copy.deepcopy(entry) if isinstance(entry, dict) else {}

    def apply(self, stream_key: str, patch: StatePatch) -> None:
        for path, value in patch:
            if not path:
                if value is None:
                    self._streams.pop(stream_key, None)
                else:
                    self._streams[stream_key] = copy.deepcopy(value)
                continue
            node = self._streams.get(stream_key)
            if not isinstance(node, dict):
                node = self._streams[stream_key] = {}
            for part in path[:-1]:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            if value is None:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value

    def as_dict(self) -> dict[str, Any]:
        """The document to checkpoint. The caller must serialise it before the next `apply`."""
        document: dict[str, Any] = {"version": STATE_VERSION, "streams": self._streams}
        if self._sources:
            document["sources"] = self._sources
        return document


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_iso8601(value)
    except ValueError:
        return None


def _migrate_legacy(raw: Mapping[str, Any]) -> dict[str, Any]:
    streams: dict[str, Any] = {}
    for entity, keys in _LEGACY_ACCELO_KEYS.items():
        for key in keys:
            when = _parse_iso(raw.get(key))
            if when is not None:
                streams[f"accelo.{entity}"] = {"cursor": int((when - LEGACY_LOOKBACK).timestamp())}
                break
    since = _parse_iso(raw.get(_LEGACY_AWARDCO_KEY))
    if since is not None:
        streams["awardco.user"] = {"cursor": (since - LEGACY_LOOKBACK).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if streams:
        logger.info(
            "state: read the example connector's cursors for %s (re-reading one day before each, which upserts make "
            "harmless)",
            ", ".join(sorted(streams)),
        )
    elif raw:
        logger.warning("state: no recognised keys in the saved state; starting a full sync")
    return streams
