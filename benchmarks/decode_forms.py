"""Decoding an Accelo page (100 records, every scalar a string) into typed rows: what each decoder costs per row.

    python -m benchmarks.decode_forms                # pages from a fresh `python -m syncflow.sim`, ~30 s
    python -m benchmarks.decode_forms --repeats 9

The pages are the simulator's own bytes (`GET /api/v0/<entity>?_fields=...&_limit=100&_page=n`, as syncflow asks for
them), a few per entity. Each decoder turns the page's bytes into the list of typed rows syncflow upserts today
(the same dicts: int / float / bool / aware datetime / str / None), and is checked against today's output before it
is timed. The forms are timed side by side, interleaved in a shuffled order each round; the median is reported.

- `json + RowConverter` is today: `json.loads` in the client, then `RowConverter.convert` per record.
- `orjson + RowConverter`: only the JSON parse moves to C.
- `msgspec TypedDict + fixups`: `msgspec.json.Decoder(Envelope, strict=False)` with one `TypedDict` per entity, its
  INT columns typed `int | None` and FLOAT `float | None` (strict=False parses "123" / "12.50" in C), dates typed
  `int | None` (unix seconds; "0" means never), then a Python pass for what msgspec cannot express: 0 -> None and
  seconds -> datetime for dates (cached as today), "yes"/"no" -> bool. A page msgspec rejects (a value that is not
  a number where one is declared) would fall back to today's path, which nulls and counts the bad value; that
  fallback is not timed (the simulator's pages are clean).
- `syncflow PageDecoder (shipped)`: what a sync runs now (`syncflow._decode`): msgspec with dates as datetime in C,
  a byte check of the date fields, today's converters for BOOLEAN/DECIMAL, RowConverter for a page it cannot type.
- `msgspec -> datetime in C`: the same, but dates typed `datetime | None`, which strict=False would decode from unix
  seconds if given as JSON numbers; Accelo sends them as strings, so the run says whether it is accepted.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypedDict

from syncflow._streams import RowConverter, _from_unix, _to_bool
from syncflow.sim._model import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET
from syncflow.sources._accelo_catalog import STREAM_NAMES
from syncflow.sources.accelo import ACCELO_STREAMS

from ._sim import SimOptions, SimProcess

__all__ = ["main"]

PAGES_PER_ENTITY = 12  # at most; staff has 3 full pages at scale 8
SCALE = 8.0

Decode = Callable[[bytes], list[dict[str, Any]]]


def fetch_pages(url: str, pages: int = PAGES_PER_ENTITY) -> dict[str, list[bytes]]:
    """Raw page bodies per entity, as the simulator serves them to syncflow."""
    basic = base64.b64encode(f"{ACCELO_CLIENT_ID}:{ACCELO_CLIENT_SECRET}".encode()).decode()
    request = urllib.request.Request(
        url + "/oauth2/v0/token",
        data=urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "read(all)"}).encode(),
        headers={"Authorization": f"Basic {basic}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        token = json.loads(response.read())["access_token"]
    out: dict[str, list[bytes]] = {}
    for entity in STREAM_NAMES:  # the six tables the benchmarks sync
        stream = ACCELO_STREAMS[entity]
        out[entity] = []
        for page in range(pages):
            query = urllib.parse.urlencode({"_fields": ",".join(stream.columns), "_limit": 100, "_page": page})
            request = urllib.request.Request(
                f"{url}{stream.endpoint}?{query}", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
            if len(json.loads(body)["response"]) < 100:
                break
            out[entity].append(body)
    return out


def _today(json_loads: Callable[[bytes], Any], converter: RowConverter) -> Decode:
    convert = converter.convert

    def decode(body: bytes) -> list[dict[str, Any]]:
        records = json_loads(body)["response"]
        return [row for row in map(convert, records) if row is not None]

    return decode


def _msgspec_decoder(entity: str, dates_in_c: bool) -> Decode:
    import msgspec

    stream = ACCELO_STREAMS[entity]
    date_type: Any = datetime | None if dates_in_c else int | None
    kinds = {"INT": int | None, "LONG": int | None, "DECIMAL(28,6)": str | None, "FLOAT": float | None,
             "UTC_DATETIME": date_type, "STRING": str | None, "BOOLEAN": str | None}  # fmt: skip
    record_type = TypedDict(  # type: ignore[misc]
        f"{entity}_record", {name: kinds[kind] for name, kind in stream.columns.items()}, total=False
    )
    envelope = msgspec.defstruct(f"{entity}_page", [("response", list[record_type])])
    decoder = msgspec.json.Decoder(envelope, strict=False)
    dates = [name for name, kind in stream.columns.items() if kind == "UTC_DATETIME"]
    bools = [name for name, kind in stream.columns.items() if kind == "BOOLEAN"]
    names = list(stream.columns)

    def decode(body: bytes) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = decoder.decode(body).response  # type: ignore[attr-defined]
        for row in rows:
            if dates_in_c:
                for name in dates:  # msgspec decodes 0 as 1970-01-01: Accelo's "never"
                    value = row.get(name)
                    if value is not None and value.timestamp() <= 0:
                        row[name] = None
            else:
                for name in dates:
                    seconds = row.get(name)
                    row[name] = _from_unix(seconds) if seconds else None
            for name in bools:
                row[name] = _to_bool(row.get(name))
            if len(row) != len(names):  # an absent field is a null column, as today
                for name in names:
                    row.setdefault(name, None)
        return rows

    return decode


def _shipped(entity: str) -> Decode:
    """What a sync runs now: `syncflow._decode.PageDecoder` (msgspec, with RowConverter wherever they could differ)."""
    from syncflow._decode import PageDecoder

    decoder = PageDecoder(ACCELO_STREAMS[entity].converter())

    def decode(body: bytes) -> list[dict[str, Any]]:
        return decoder.rows(decoder.loads(body)["response"])

    return decode


def _receivers(bodies: list[bytes], today: Decode) -> dict[str, Decode]:
    """What the writer would pay per page if fetching and decoding ran in another process: only the transfer's
    decode of the already typed rows (the other process's encode is not on the writer's interpreter)."""
    import pickle

    import msgspec

    pickled = {body: pickle.dumps(today(body), protocol=pickle.HIGHEST_PROTOCOL) for body in bodies}
    packed = {body: msgspec.msgpack.encode(today(body)) for body in bodies}
    unpack = msgspec.msgpack.Decoder(list[dict[str, Any]]).decode
    out: dict[str, Decode] = {
        "receive typed page from another process: pickle.loads": lambda body: pickle.loads(pickled[body]),
        "receive typed page from another process: msgspec.msgpack": lambda body: unpack(packed[body]),
    }
    for label, receive in out.items():
        if not all(receive(body) == today(body) for body in bodies):
            raise AssertionError(f"{label}: rows differ from today's")
    return out


def _orjson_loads() -> Callable[[bytes], Any] | None:
    try:
        import orjson
    except ImportError:
        return None
    loads: Callable[[bytes], Any] = orjson.loads
    return loads


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return a == b  # key order is not compared: op.upsert does not depend on it


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_forms", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--loops", type=int, default=1,
        help="decodes of every page per timed sample (1: each distinct page once, as a sync sees it)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    # Scale 8: staff (40 at scale 1) fills 3 pages of 100, the others PAGES_PER_ENTITY.
    with SimProcess(SimOptions(scale=SCALE, latency=0.0, jitter=0.0)) as sim:
        pages = fetch_pages(sim.url)
    rows_total = sum(len(json.loads(p)["response"]) for ps in pages.values() for p in ps)

    forms: dict[str, dict[str, Decode]] = {}
    rejected: dict[str, str] = {}
    loads = _orjson_loads()
    for entity in pages:
        forms.setdefault("json + RowConverter (today)", {})[entity] = _today(
            json.loads, ACCELO_STREAMS[entity].converter()
        )
        if loads is not None:
            forms.setdefault("orjson + RowConverter", {})[entity] = _today(loads, ACCELO_STREAMS[entity].converter())
        shipped = _shipped(entity)
        today = forms["json + RowConverter (today)"][entity]
        if not all(_same(shipped(p), today(p)) for p in pages[entity]):
            raise AssertionError(f"syncflow PageDecoder ({entity}): rows differ from today's")
        forms.setdefault("syncflow PageDecoder (shipped)", {})[entity] = shipped
        for label, in_c in (("msgspec TypedDict + fixups", False), ("msgspec, dates as datetime in C", True)):
            try:
                decoder = _msgspec_decoder(entity, in_c)
                got = [decoder(p) for p in pages[entity]]
            except Exception as exc:
                rejected[f"{label} ({entity})"] = f"{type(exc).__name__}: {exc}"[:160]
                continue
            want = [forms["json + RowConverter (today)"][entity](p) for p in pages[entity]]
            if not all(_same(g, w) for g, w in zip(got, want, strict=True)):
                rejected[f"{label} ({entity})"] = "rows differ from today's"
                continue
            forms.setdefault(label, {})[entity] = decoder
    for entity in pages:
        for label, receiver in _receivers(pages[entity], forms["json + RowConverter (today)"][entity]).items():
            forms.setdefault(label, {})[entity] = receiver
    complete = {label: d for label, d in forms.items() if len(d) == len(pages)}

    samples: dict[str, list[float]] = {label: [] for label in complete}
    per_entity: dict[tuple[str, str], list[float]] = {}
    rng = random.Random(args.seed)
    plan = [(label, entity) for label in complete for entity in pages]
    for _ in range(args.repeats):
        rng.shuffle(plan)
        totals = dict.fromkeys(complete, 0.0)
        for label, entity in plan:
            decode = complete[label][entity]
            # A sync sees each page once: start every sample with today's unix-seconds cache cold, as a sync does.
            _from_unix.cache_clear()
            started = time.thread_time()  # CPU of this thread: robust to being descheduled on a shared machine
            for _ in range(args.loops):
                for body in pages[entity]:
                    decode(body)
            elapsed = time.thread_time() - started
            totals[label] += elapsed
            n = args.loops * sum(len(json.loads(p)["response"]) for p in pages[entity])
            per_entity.setdefault((label, entity), []).append(elapsed / n * 1e6)
        for label, total in totals.items():
            samples[label].append(total / (args.loops * rows_total) * 1e6)

    today = statistics.median(samples["json + RowConverter (today)"])
    print(
        f"decoding {rows_total} Accelo rows (full pages: "
        + ", ".join(f"{entity} {len(bodies)}" for entity, bodies in pages.items())
        + ") into typed rows; "
        f"{args.repeats} interleaved rounds x {args.loops} decodes; median CPU µs/row (min-max)\n"
    )
    print("| decoder | µs/row | x today | " + " | ".join(pages) + " |")
    print("|---|---:|---:|" + "---:|" * len(pages))
    for label, values in samples.items():
        med = statistics.median(values)
        cells = " | ".join(f"{statistics.median(per_entity[(label, e)]):.1f}" for e in pages)
        print(f"| {label} | {med:.2f} ({min(values):.2f}-{max(values):.2f}) | {med / today:.2f} | {cells} |")
    for name, why in rejected.items():
        print(f"\nnot timed: {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
