"""The versioned state document: one small JSON object per connector, one entry per stream.

    {"version": 1, "streams": {"accelo.companies": {...}, "awardco.user": {...}},
     "sources": {"accelo": "https://acme.api.accelo.com", "awardco": "https://api.awardco.com"}}

`sources` records where each source's streams came from (a base URL, or the simulator's seed and scale). A state
from another source says nothing about this one: `adopt_sources` drops those streams so they start over (a mock run's
cursors applied to a real account would sync nothing, "successfully").

Only the drain thread changes it, by applying the `StatePatch` a batch carries *after* the batch's rows are
upserted, so any checkpoint of it covers only delivered rows. Each stream's entry is small: a cursor, mid-sync one
small record per slice, and the keys it knows for deletes (`sources/_reconcile.py`), packed as ranges (`_keyset.py`:
~13 KB for 1,000,000 ids with 1 % gaps) and kept live here so a batch adds its keys without re-encoding them.

`StateDocument.load` also reads an unversioned state an older connector saved: each source's `migrate_state` turns
its own old keys into stream entries (the example connectors' cursors), so their users resume instead of resyncing
from scratch. This module names no source.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ._exceptions import StateError
from ._keyset import ADDED, Key, KeySet

if TYPE_CHECKING:
    from ._source import Source

__all__ = ["STATE_VERSION", "AddKeys", "KeysNotIn", "RemoveKeys", "StateDocument", "StatePatch"]

logger = logging.getLogger("syncflow")

STATE_VERSION = 1

# A path from the stream's entry down, and the value to put there (None deletes the key).
StatePatch = Sequence[tuple[tuple[str, ...], Any]]

class AddKeys:
    """A patch value: add these primary keys to the key set at the patch's path (created empty when absent).

    Key sets (a stream's known keys, a sweep's seen keys) are kept live in the document and serialised compactly
    (`_keyset`) at each checkpoint, so a batch adds its ~100 keys without re-encoding a million.
    """

    __slots__ = ("keys",)

    def __init__(self, keys: Sequence[Key]) -> None:
        self.keys = tuple(keys)

    def __repr__(self) -> str:
        return f"AddKeys({len(self.keys)} keys)"


class RemoveKeys(AddKeys):
    """A patch value: remove these primary keys from the key set at the patch's path."""

    def __repr__(self) -> str:
        return f"RemoveKeys({len(self.keys)} keys)"


class KeysNotIn:
    """A patch value that changes nothing: it resolves `future` with the keys of the key set at the patch's path that
    are not in the one at `other` (a path from the stream's entry; a set that is absent counts as empty).

    A source asks this of the drain instead of mirroring a key set on its own thread: when the drain applies it,
    every earlier patch of the stream is applied, so the answer is the state's, exactly (a completed sweep's keys
    known and not seen). The future is the only thing the drain hands across threads.
    """

    __slots__ = ("future", "other")

    def __init__(self, other: tuple[str, ...], future: Future[list[Key]]) -> None:
        self.other = other
        self.future = future

    def __repr__(self) -> str:
        return f"KeysNotIn({'.'.join(self.other)})"


class _LiveKeys:
    """A key set held in the document, with its serialised form cached until it changes.

    The form is the whole set as of its last full encoding (the *base*) plus, under `ADDED`, the keys added since,
    as a key set of their own: a checkpoint re-encodes only those, and the whole set only once they outgrow
    1/`_FOLD_RATIO` of it, or after a removal. Every checkpoint of a first sync changes each stream's set, and
    re-encoding all of it each time grew with rows x checkpoints: a million-row sync spent 10.5 of its 25.7 s on it
    (the drain's thread; 200 checkpoints). The base grows by a fixed ratio between full encodings, so their total
    stays a small multiple of the final set's. `KeySet.from_json` reads both parts back as one set.
    """

    __slots__ = ("added", "base", "encoded", "keys")

    def __init__(self, keys: KeySet, saved: Any = None) -> None:
        self.keys = keys
        # A saved form without additions is this very set: it serves as the base until something changes.
        self.base: dict[str, Any] | None = saved if isinstance(saved, dict) and ADDED not in saved else None
        self.added = KeySet()
        self.encoded: dict[str, Any] | None = self.base

    def add(self, keys: Sequence[Key]) -> None:
        self.keys.update(keys)
        if self.base is not None:
            self.added.update(keys)
        self.encoded = None

    def remove(self, keys: Sequence[Key]) -> None:
        for key in keys:
            self.keys.discard(key)
        self.base, self.added, self.encoded = None, KeySet(), None  # the base holds them: encode anew

    def to_json(self) -> dict[str, Any]:
        if self.encoded is None:
            if self.base is None or self.added.ranges * _FOLD_RATIO > self.keys.ranges:
                self.encoded, self.added = self.keys.to_json(), KeySet()
                # A small set is re-encoded whole in a millisecond: not worth keeping its additions apart.
                self.base = self.encoded if self.keys.ranges >= _DELTA_FROM_RANGES else None
            else:
                self.encoded = {**self.base, ADDED: self.added.to_json()} if self.added else self.base
        return self.encoded


# The whole set is re-encoded once its additions exceed 1/16 of it (in ranges): a checkpoint then costs ~1/32 of a
# full encoding on average, and the full encodings of a growing set total ~17 times its final size.
_FOLD_RATIO = 16
# Below this many ranges (a few thousand keys with gaps) every checkpoint encodes the set whole (~1 ms).
_DELTA_FROM_RANGES = 1024


def _plain(node: Any) -> Any:
    """`node` with every live key set replaced by its JSON form (a copy; the document keeps changing)."""
    if isinstance(node, _LiveKeys):
        return node.to_json()
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(value) for value in node]
    return node


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
    def load(cls, raw: Mapping[str, Any] | None, *, sources: Sequence[Source] | None = None) -> StateDocument:
        """The document in `raw` (a checkpointed state); an unversioned one is read by each of `sources` (default:
        the built-in ones), for the keys an older connector saved."""
        if not raw:
            return cls()
        if not isinstance(raw, Mapping):
            raise StateError(f"state: expected a JSON object, got {type(raw).__name__}; delete the state to resync")
        version = raw.get("version")
        if version is None:
            if sources is None:
                from ._config import builtin_sources

                sources = builtin_sources()
            return cls(_migrate_legacy(raw, sources))
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
        origins = raw.get("sources", {})
        if not isinstance(origins, Mapping) or not all(isinstance(v, str) for v in origins.values()):
            # Unknown provenance: treated as this source's (as a state from before sources were recorded is).
            logger.warning("state: 'sources' is not a JSON object of strings; ignoring it")
            origins = {}
        return cls({key: entry for key, entry in streams.items() if isinstance(entry, Mapping)}, origins)

    def stream(self, key: str) -> dict[str, Any]:
        """A copy of one stream's entry ({} when it has none)."""
        entry = self._streams.get(key)
        return copy.deepcopy(_plain(entry)) if isinstance(entry, dict) else {}

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
            if isinstance(value, KeysNotIn):
                self._resolve(stream_key, node, path, value)
            elif isinstance(value, AddKeys):
                live = self._live(stream_key, node, path)
                if isinstance(value, RemoveKeys):
                    live.remove(value.keys)
                else:
                    live.add(value.keys)
            elif value is None:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value

    def _live(self, stream_key: str, node: dict[str, Any], path: tuple[str, ...]) -> _LiveKeys:
        """The live key set at `path` (whose parent is `node`), made from the saved one on first use."""
        live = node.get(path[-1])
        if not isinstance(live, _LiveKeys):
            # The source validated (or reset) the saved set before sending ops for it.
            live = node[path[-1]] = _LiveKeys(KeySet.from_json(live, f"{stream_key} {'.'.join(path)}"), live)
        return live

    def _resolve(self, stream_key: str, node: dict[str, Any], path: tuple[str, ...], request: KeysNotIn) -> None:
        if not request.future.set_running_or_notify_cancel():
            return  # the source stopped waiting (cancelled): nobody reads the answer
        try:
            keys = self._live(stream_key, node, path).keys
            parent: Any = self._streams[stream_key]
            for part in request.other[:-1]:
                parent = parent.get(part) if isinstance(parent, dict) else None
            other = KeySet()
            if isinstance(parent, dict) and parent.get(request.other[-1]) is not None:
                other = self._live(stream_key, parent, request.other).keys
            request.future.set_result(keys.difference(other))
        except BaseException as exc:
            request.future.set_exception(exc)  # the source sees it too; the drain fails the sync with it
            raise

    def as_dict(self) -> dict[str, Any]:
        """The document to checkpoint. The caller must serialise it before the next `apply`."""
        document: dict[str, Any] = {"version": STATE_VERSION, "streams": _plain(self._streams)}
        if self._sources:
            document["sources"] = dict(self._sources)
        return document


def _migrate_legacy(raw: Mapping[str, Any], sources: Sequence[Source]) -> dict[str, Any]:
    streams: dict[str, Any] = {}
    for source in sources:
        for key, entry in source.migrate_state(raw).items():
            streams[key] = dict(entry)
    if streams:
        logger.info(
            "state: read the example connector's cursors for %s (re-reading one day before each, which upserts make "
            "harmless)",
            ", ".join(sorted(streams)),
        )
    elif raw:
        logger.warning("state: no recognised keys in the saved state; starting a full sync")
    return streams
