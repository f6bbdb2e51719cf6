"""Reliability test helpers: a rule-driven fault transport over the simulator, durable-state views of a recorded
sync, and a checker that every checkpoint only covers rows that were upserted before it."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

from support.sim import RecordingSink
from syncflow.sim import Simulator

# A rule sees the request and how many requests (1-based, this one included) were made to its path so far; it
# returns a response to send instead of the simulator's, or None to let the simulator answer.
Rule = Callable[[httpx.Request, int], "httpx.Response | None"]


class RuleTransport(httpx.AsyncBaseTransport):
    """The simulator's in-process transport, except where `rule` answers instead (bad bodies, dead endpoints)."""

    def __init__(self, sim: Simulator, rule: Rule) -> None:
        self._inner = sim.transport()
        self._rule = rule
        self.counts: Counter[str] = Counter()
        self.overridden: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.counts[path] += 1
        response = self._rule(request, self.counts[path])
        if response is not None:
            self.overridden[path] += 1
            return response
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def durable_sink(sink: RecordingSink, checkpoint: int | None = None) -> RecordingSink:
    """A copy of `sink` holding only the rows upserted before checkpoint number `checkpoint` (default: the last).

    This is what a destination that commits at checkpoints holds after the process dies right after that checkpoint.
    """
    if checkpoint is None:
        checkpoint = len(sink.checkpoints) - 1
    kept = RecordingSink()
    if checkpoint < 0:
        return kept
    for kind, value in sink.log:
        if kind == "checkpoint" and value == checkpoint:
            break
        if kind == "upsert":
            stream, key = value
            row = sink.tables.get(stream, {}).get(key) or sink.deleted.get(stream, {}).get(key)
            assert row is not None
            kept.tables.setdefault(stream, {})[key] = row
            kept.deleted.get(stream, {}).pop(key, None)
        elif kind == "delete":
            stream, key = value
            kept.deleted.setdefault(stream, {})[key] = kept.tables.get(stream, {}).pop(key, None)
    kept.checkpoints = list(sink.checkpoints[: checkpoint + 1])
    return kept


def _accelo_cursor_value(record: Mapping[str, Any], cursor: str) -> int:
    raw = record.get(cursor)
    return int(raw) if raw else 0


def covered_keys(
    state: Mapping[str, Any], truth: Mapping[str, Mapping[str, list[dict[str, Any]]]]
) -> dict[str, set[Any]]:
    """The primary keys a checkpointed state claims are delivered, for a sync that started from an empty state over
    data that did not change during it (the cursor ranges and slice watermarks, read against the ground truth)."""
    from syncflow.sources import ACCELO_STREAMS

    covered: dict[str, set[Any]] = {}
    streams = state.get("streams", {})
    for entity, records in truth["accelo"].items():
        key = f"accelo.{entity}"
        entry = streams.get(key)
        cursor_field = ACCELO_STREAMS[entity].cursor
        if not isinstance(entry, dict):
            continue
        run = entry.get("run")
        ids: set[Any] = set()
        if isinstance(run, dict):
            lower, upper = run.get("lower"), run.get("upper")
            in_window = [
                r
                for r in records
                if cursor_field is None
                or (
                    (lower is None or _accelo_cursor_value(r, cursor_field) >= lower)
                    and (upper is None or _accelo_cursor_value(r, cursor_field) < upper)
                )
            ]
            for bounds in (run.get("slices") or {}).values():
                lo, hi, after, done = bounds["lo"], bounds["hi"], bounds["after"], bounds["done"]
                for r in in_window:
                    rid = int(r["id"])
                    if (lo is not None and rid < lo) or (hi is not None and rid >= hi):
                        continue
                    if done or (after is not None and rid <= after):
                        ids.add(rid)
        elif "cursor" in entry and cursor_field is not None:
            ids = {int(r["id"]) for r in records if _accelo_cursor_value(r, cursor_field) < entry["cursor"]}
        covered[key] = ids
    entry = streams.get("awardco.user")
    if isinstance(entry, dict):
        users = truth["awardco"]["user"]
        run = entry.get("run")
        if isinstance(run, dict) and run.get("since") is None:
            covered["awardco.user"] = {u["employeeId"] for u in users[: (run["next_page"] - 1) * 100]}
        elif "cursor" in entry:
            covered["awardco.user"] = {u["employeeId"] for u in users if u["updated_at"] < entry["cursor"]}
    return covered


def assert_checkpoints_safe(sink: RecordingSink, sim: Simulator) -> int:
    """Every checkpoint covers only rows upserted before it (first sync from an empty state, static data).

    Returns how many checkpoints were checked (so a caller can assert the check was not vacuous)."""
    truth = sim.ground_truth()
    seen: dict[str, set[Any]] = {}
    checked = 0
    for kind, value in sink.log:
        if kind == "upsert":
            stream, key = value
            seen.setdefault(stream, set()).add(key)
            continue
        state = sink.checkpoints[value]
        for stream, keys in covered_keys(state, truth).items():
            missing = keys - seen.get(stream, set())
            assert not missing, (
                f"checkpoint {value} covers {len(missing)} {stream} row(s) not yet upserted, e.g. "
                f"{sorted(missing)[:5]}; state: {json.dumps(state['streams'].get(stream))}"
            )
        checked += 1
    return checked


def text_of(*parts: Any) -> str:
    """Everything a person could read from these objects: str, repr and JSON where possible."""
    chunks: list[str] = []
    for part in parts:
        chunks.append(str(part))
        chunks.append(repr(part))
        with contextlib.suppress(TypeError, ValueError):
            chunks.append(json.dumps(part, default=str))
    return "\n".join(chunks)


def leaked(text: str, secrets: Iterable[str]) -> list[str]:
    return [s for s in secrets if s and s in text]
