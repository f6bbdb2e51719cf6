"""What every source shares for deletes: the keys a stream knows, reconciliation sweeps, and their request budget.

A stream's state entry carries (beside the source's own cursor/run fields):

    "keys":  every primary key upserted into the destination and not deleted since (compact: `_keyset`)
    "sweep": while a sweep is under way: {"started": unix s, "seen": keys upserted since it started, <progress>}
    "swept": when the last completed sweep started (unix s, server clock)

Both key sets are maintained by the drain from the batches' patches (`AddKeys`), i.e. only for rows actually
upserted, and never by reading the destination. A sweep re-reads the whole stream without date filters and upserts
every record; once it has completed (never after a partial one) the keys known but not seen since it started are
deleted. "Seen" counts every upsert of the stream since the sweep started, including the incremental part's, so a
record created or changed after the sweep passed its place is never deleted: a key is deleted only when no read since
the sweep began returned it. A crash mid-sweep resumes from the checkpointed progress with the checkpointed "seen".

Known limits: a row upserted after the last checkpoint before a crash, and deleted at the source before the resumed
sync reads it again, is not in "keys" and so is never deleted (the same window every cursor has). After an upgrade
from a syncflow without sweeps, rows synced before it and deleted before the first sweep completes are not known
either (the first sweep is scheduled one interval after the upgrade; it learns every live key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from .._exceptions import StateError
from .._keyset import Key, KeySet
from .._source import SourceReport
from .._state import AddKeys, KeysNotIn, RemoveKeys, StatePatch
from .._streams import Stream

__all__ = ["KeyTracker", "SweepBudget"]

logger = logging.getLogger("syncflow")


class SweepBudget:
    """The requests sweeps may still spend in this sync, shared by a source's streams."""

    def __init__(self, requests: int) -> None:
        self.remaining = requests
        self.exhausted = False

    def take(self) -> bool:
        if self.remaining <= 0:
            self.exhausted = True
            return False
        self.remaining -= 1
        return True


#: Seen keys a `KeyTracker` holds unmerged (during a sweep) before it merges them. Unmerged keys cost ~40 bytes each
#: (a list slot and the int or str object the row made; merged, a run of ids is two numbers of a range), and every
#: stream's tracker holds its own: at 50,000 seven streams held up to ~14 MB, which was most of the growth of
#: syncflow's peak RSS from 100,000 to 1,000,000 rows (BENCHMARKS.md, memory_probe). Merging costs the same per key
#: at any chunk size (a sort and one range update each), so a smaller chunk costs no throughput.
MERGE_AFTER_KEYS = 5_000


class KeyTracker:
    """One stream's keys and sweep, on the producer side. The known keys live only in the state (the drain applies
    the `AddKeys` sent here); a completed sweep asks the drain for `known - seen` (`finish`). The sweep's seen keys
    are mirrored here as the patches are sent (AwardCo's paging reads them)."""

    def __init__(self, stream: Stream, prior: Mapping[str, Any], report: SourceReport) -> None:
        self.stream = stream
        self.report = report
        self.key_column = stream.primary_key[0]
        self._reset: list[tuple[tuple[str, ...], Any]] = []
        try:
            # Read to validate it (and know its size), not kept: the state holds the known keys (a million ids with
            # the simulator's gaps are ~0.8 MB of ranges; a second copy here was ~1.5 MiB of syncflow's peak RSS).
            self.known_at_start = len(KeySet.from_json(prior.get("keys"), f"{stream.key} keys"))
            sweep = prior.get("sweep")
            if sweep is not None and not (isinstance(sweep, dict) and _unix(sweep.get("started"))):
                raise StateError(f"state: {stream.key} has a malformed 'sweep' entry")
            self.sweep: dict[str, Any] | None = dict(sweep) if sweep is not None else None
            self.seen = KeySet.from_json(sweep.get("seen"), f"{stream.key} sweep") if sweep is not None else None
            swept = prior.get("swept")
            if swept is not None and not _unix(swept):
                raise StateError(f"state: {stream.key} has a malformed 'swept' time {swept!r}")
            self.swept: int | None = swept
        except StateError as exc:
            # Safe: the next sweep starts over and re-learns every key (until then no delete is sent).
            message = f"{exc}; its known keys start over and the next sweep relearns them"
            logger.warning("%s", message)
            report.warnings.append(message)
            self.known_at_start, self.sweep, self.seen, self.swept = 0, None, None, None
            self._reset = [(("keys",), None), (("sweep",), None), (("swept",), None)]
        self.repaired = 0
        # Seen keys sent since the mirror was last brought up to date: merged when a sweep ends, or once
        # `MERGE_AFTER_KEYS` have piled up, so a sweep's batch costs a list extend, not a set insert per row.
        self._unmerged_seen: list[Key] = []

    @property
    def sweeping(self) -> bool:
        return self.sweep is not None

    def ops_for(self, rows: Sequence[Mapping[str, Any]]) -> StatePatch:
        """The patch ops that record `rows`' keys (to append to the patch of the batch that upserts them)."""
        ops, self._reset = self._reset, []
        if not rows:
            return ops
        column = self.key_column
        keys: list[Key] = [row[column] for row in rows]
        ops.append((("keys",), AddKeys(keys)))
        if self.seen is not None:
            self._unmerged_seen.extend(keys)
            ops.append((("sweep", "seen"), AddKeys(keys)))
            if len(self._unmerged_seen) >= MERGE_AFTER_KEYS:
                # Safe at any time: every key here has been sent in a patch already; merging only updates the mirror.
                self.merge()
        return ops

    def merge(self) -> None:
        """Bring `seen` up to date with every key sent so far."""
        if self.seen is not None:
            self.seen.update(sorted(self._unmerged_seen, key=_order))
        self._unmerged_seen.clear()

    def due(self, now: int, every_seconds: float) -> bool:
        """Whether a sweep should run (or continue) in this sync."""
        if self.sweep is not None:
            return True
        if self.swept is None:
            # The first sweep is due one interval after the first sync (`first_read_ops`): a stream read from
            # scratch has just learnt every key it holds, and a state from before sweeps existed is not made to
            # pay a full re-read on its first sync after an upgrade.
            return False
        return now - self.swept >= every_seconds

    def first_read_ops(self, now: int) -> StatePatch:
        """For a stream's first sync (or first since sweeps existed): schedule its first sweep (see `due`)."""
        if self.swept is None and self.sweep is None:
            self.swept = now
            return [(("swept",), now)]
        return []

    def begin(self, now: int, **progress: Any) -> StatePatch:
        self.merge()
        self.sweep = {"started": now, **progress}
        self.seen = KeySet()
        ops, self._reset = self._reset, []
        return [*ops, (("sweep",), {"started": now, "seen": {}, **progress})]

    def abandon(self) -> StatePatch:
        """End the sweep without deleting anything (what it read could not prove the rest gone); keys stay known."""
        self.merge()
        self.sweep, self.seen = None, None
        return [(("sweep",), None)]

    async def finish(
        self, ask: Callable[[StatePatch], Awaitable[None]]
    ) -> tuple[list[dict[str, Any]], StatePatch]:
        """The deletes (as {column: key} rows) and patch ops that complete the sweep.

        `ask` sends a batch without rows carrying the given patch, after every batch sent for this stream so far; the
        drain answers it once those are applied, with the keys the state knows and the sweep has not seen. Nothing
        else of this stream may be sent until this returns (the answer would be out of date)."""
        assert self.sweep is not None and self.seen is not None
        future: Future[list[Key]] = Future()
        await ask([(("keys",), KeysNotIn(("sweep", "seen"), future))])
        gone = await asyncio.wrap_future(future)
        self.merge()
        started = self.sweep["started"]
        self.sweep, self.seen, self.swept = None, None, started
        self.report.repaired[self.stream.key] = self.report.repaired.get(self.stream.key, 0) + self.repaired
        self.report.deleted[self.stream.key] = self.report.deleted.get(self.stream.key, 0) + len(gone)
        logger.info(
            "%s: reconciliation complete: %d rows re-read, %d deleted at the source",
            self.stream.key,
            self.repaired,
            len(gone),
        )
        ops: list[tuple[tuple[str, ...], Any]] = [(("sweep",), None), (("swept",), started)]
        if gone:
            ops.insert(0, (("keys",), RemoveKeys(gone)))
        return [{self.key_column: key} for key in gone], ops


def _order(key: Key) -> tuple[int, Any]:
    # Ints and strings sort apart (a stream has one kind; this only keeps `sorted` from comparing the two).
    return (0, key) if isinstance(key, int) else (1, key)


def _unix(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
