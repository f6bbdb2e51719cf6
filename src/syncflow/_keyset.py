"""Compact sets of primary keys, for knowing what a reconciliation sweep should delete without reading the destination.

A stream's state keeps every key it has upserted (and, while a sweep runs, every key seen since the sweep began).
Storing 1,000,000 keys verbatim would make each checkpoint megabytes, so keys are kept as sorted, disjoint ranges of
integers and serialised compactly:

- integer keys (Accelo ids) form one range set;
- string keys ending in digits (AwardCo employeeIds such as ``E000123``) are split into prefix + digit count + number,
  one range set per (prefix, digit count), so ``prefix + str(number).zfill(width)`` gives the exact key back;
- any other string is kept verbatim.

A range set with few ranges is written as a flat list ``[lo, hi, lo, hi, ...]``; a larger one as base64 of the
LZMA-compressed varint deltas (every gap between ranges, then every range length), in base85: about a byte per
range. Measured (`python -m benchmarks.reconcile`, BENCHMARKS.md): 1,000,000 ids with 1 % missing take ~13 KB; with
the simulator's gap after ~1 id in 10 (~100,000 ranges) ~116 KB, close to the entropy of such gaps (~87 KB of bits
before text encoding), so the 100 KB aim holds for ids up to roughly one gap in 12.

A live set in the state document may be written with the keys added since its last full encoding under ``"+"``
(`ADDED`), as a key set of its own (`_state._LiveKeys`); `KeySet.from_json` reads the two back as one set.
"""

from __future__ import annotations

import base64
import bisect
import heapq
import itertools
import lzma
import re
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from ._exceptions import StateError

__all__ = ["ADDED", "IntRanges", "KeySet"]

_FLAT_MAX_RANGES = 16
#: In a key set's JSON form: the keys added since the rest was written, as a key set of their own (see `_state`).
ADDED = "+"
# A 256 KiB window covers the packed ranges of ~1,000,000 ids and keeps each checkpoint's encode ~1 ms for a small
# set (the preset's 8 MiB window costs ~9 ms to set up, whatever the size of the data).
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 18}]
_TRAILING_DIGITS = re.compile(r"^(.*?)(\d+)$", re.DOTALL)
# IntRanges' bound arrays: 32-bit first ("i" is 4 bytes on every platform CPython supports), 64-bit once a bound
# needs it ("q" is always 8).
_NARROW, _WIDE = "i", "q"


class IntRanges:
    """A set of integers as sorted, disjoint, non-adjacent inclusive ranges.

    The bounds are kept in two arrays of 32-bit integers (4 bytes a bound; a list of Python ints costs ~36): a first
    sync of a million ids with the simulator's gaps holds ~100,000 ranges, and ids that large are rare. A bound
    outside 32 bits turns this set's bounds into arrays of 64-bit integers, and one outside 64 bits (an id that
    large, a digit string of 19 digits or more) into lists of Python ints (`_widen`), which hold any integer.
    """

    __slots__ = ("_hi", "_hint", "_lo")

    def __init__(self) -> None:
        self._lo: array[int] | list[int] = array(_NARROW)
        self._hi: array[int] | list[int] = array(_NARROW)
        # The range the last `add` touched: a page's ids arrive as an ascending run, so the next id almost always
        # lands there or just after it. Checked before use (any index is safe); saves the binary search, which on
        # an array makes an int object per probe.
        self._hint = 0

    def __repr__(self) -> str:
        return f"IntRanges(ranges={len(self._lo)}, size={len(self)})"

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in zip(self._lo, self._hi, strict=True))

    def __bool__(self) -> bool:
        return bool(self._lo)

    def __eq__(self, other: object) -> bool:
        # list(): an array never equals a list, and either side may have been widened.
        return isinstance(other, IntRanges) and list(self._lo) == list(other._lo) and list(self._hi) == list(other._hi)

    def __contains__(self, value: int) -> bool:
        index = bisect.bisect_right(self._lo, value) - 1
        return index >= 0 and value <= self._hi[index]

    def __iter__(self) -> Iterator[int]:
        for lo, hi in zip(self._lo, self._hi, strict=True):
            yield from range(lo, hi + 1)

    @property
    def ranges(self) -> int:
        return len(self._lo)

    def _widen(self) -> None:
        """One step wider: 32-bit arrays to 64-bit ones, 64-bit arrays to lists of Python ints."""
        lo, hi = self._lo, self._hi
        if isinstance(lo, array) and lo.typecode == _NARROW:
            self._lo, self._hi = array(_WIDE, lo), array(_WIDE, hi)
        else:
            self._lo, self._hi = list(lo), list(hi)

    def add(self, value: int) -> None:
        while True:
            try:
                self._add(value)
                return
            except OverflowError:
                # Nothing was changed: the first store of `value` is the one that failed (every other bound stored
                # is already in the arrays). At most two steps: a list holds any integer.
                self._widen()

    def _add(self, value: int) -> None:
        lo, hi = self._lo, self._hi
        if hi and value > hi[-1]:
            # Keyset pages deliver ids in ascending order: extend or open the last range without a search.
            if value == hi[-1] + 1:
                hi[-1] = value
            else:
                lo.append(value)
                hi.append(value)
            return
        hint, count = self._hint, len(lo)
        if hint < count and lo[hint] <= value and (hint + 1 == count or value < lo[hint + 1]):
            index = hint  # the range starting at or before `value` with the next one starting after it
        else:
            index = bisect.bisect_right(lo, value) - 1
        if index >= 0 and value <= hi[index]:
            self._hint = index
            return
        joins_left = index >= 0 and hi[index] == value - 1
        joins_right = index + 1 < count and lo[index + 1] == value + 1
        if joins_left and joins_right:
            hi[index] = hi[index + 1]
            del lo[index + 1], hi[index + 1]
            self._hint = index
        elif joins_left:
            hi[index] = value
            self._hint = index
        elif joins_right:
            lo[index + 1] = value
            self._hint = index + 1
        else:
            lo.insert(index + 1, value)
            hi.insert(index + 1, value)
            self._hint = index + 1

    def discard(self, value: int) -> None:
        # Every bound stored here lies within an existing range: it fits wherever the range's bounds fit.
        lo, hi = self._lo, self._hi
        index = bisect.bisect_right(lo, value) - 1
        if index < 0 or value > hi[index]:
            return
        start, end = lo[index], hi[index]
        if start == end:
            del lo[index], hi[index]
        elif value == start:
            lo[index] = value + 1
        elif value == end:
            hi[index] = value - 1
        else:
            hi[index] = value - 1
            lo.insert(index + 1, value + 1)
            hi.insert(index + 1, end)

    def difference(self, other: IntRanges) -> Iterator[int]:
        """The values in self and not in `other`, ascending (a merge of the two range lists)."""
        j = 0
        olo, ohi = other._lo, other._hi
        for lo, hi in zip(self._lo, self._hi, strict=True):
            cur = lo
            while j < len(olo) and ohi[j] < cur:
                j += 1
            k = j
            while cur <= hi:
                if k >= len(olo) or olo[k] > hi:
                    yield from range(cur, hi + 1)
                    break
                if olo[k] > cur:
                    yield from range(cur, olo[k])
                cur = max(cur, ohi[k] + 1)
                k += 1

    def union(self, other: IntRanges) -> IntRanges:
        """A new set of the values in either: the two range lists merged, range by range (a set holding a run of a
        million ids is one range, never a million values)."""
        merged = IntRanges()
        pairs = heapq.merge(zip(self._lo, self._hi, strict=True), zip(other._lo, other._hi, strict=True))
        current: tuple[int, int] | None = None
        for lo, hi in pairs:
            if current is not None and lo <= current[1] + 1:
                current = (current[0], max(current[1], hi))
                continue
            if current is not None:
                merged._append(*current)
            current = (lo, hi)
        if current is not None:
            merged._append(*current)
        return merged

    def encode(self) -> Any:
        if len(self._lo) <= _FLAT_MAX_RANGES:
            return [v for pair in zip(self._lo, self._hi, strict=True) for v in pair]
        # All gaps, then all lengths: two streams of similar small numbers compress better than interleaved.
        gaps, lengths = bytearray(), bytearray()
        previous_hi = -1
        for lo, hi in zip(self._lo, self._hi, strict=True):
            _varint(gaps, _zigzag(lo - previous_hi - 1))  # the gap (the first one from -1: the first value itself)
            _varint(lengths, hi - lo)
            previous_hi = hi
        packed = lzma.compress(bytes(gaps + lengths), format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        return base64.b85encode(packed).decode("ascii")  # b85 has no '"' or '\\': JSON-safe, 25 % smaller than b64

    @classmethod
    def decode(cls, raw: Any) -> IntRanges:
        # Streamed into the arrays, range by range: a resumed first sync of a million ids holds ~100,000 ranges, and
        # building them as lists of tuples first peaked at ~16 MiB per set (twice per stream: state and mirror).
        pairs: Iterator[tuple[int, int]]
        if isinstance(raw, list):
            if len(raw) % 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
                raise ValueError("a flat range list holds pairs of integers")
            pairs = zip(raw[::2], raw[1::2], strict=True)
        elif isinstance(raw, str):
            data = lzma.decompress(base64.b85decode(raw.encode("ascii")), format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
            pairs = _packed_pairs(data)
        else:
            raise ValueError(f"ranges must be a list or a packed string, not {type(raw).__name__}")
        ranges = cls()
        last = None
        for lo, hi in pairs:
            if hi < lo or (last is not None and lo <= last + 1):
                raise ValueError("ranges are not sorted and disjoint")
            ranges._append(lo, hi)
            last = hi
        return ranges

    def _append(self, lo: int, hi: int) -> None:
        """Store the range lo..hi after every stored one (the caller checked it lies above them)."""
        while True:
            try:
                self._lo.append(lo)
            except OverflowError:
                self._widen()
                continue
            try:
                self._hi.append(hi)
                return
            except OverflowError:
                self._lo.pop()  # both arrays keep one entry per range
                self._widen()


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value // 2 if value % 2 == 0 else -(value + 1) // 2


def _varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _packed_pairs(data: bytes) -> Iterator[tuple[int, int]]:
    """The (lo, hi) ranges `encode` packed: every gap, then every length, as two runs of varints of one count."""
    count = len(data) - len(data.translate(None, _VARINT_ENDS))  # a varint ends at each byte below 0x80
    if count % 2:
        raise ValueError("packed ranges end mid-pair")
    half = count // 2
    gaps, lengths = _read_varints(data), _read_varints(data)
    for _ in itertools.islice(lengths, half):
        pass  # `lengths` starts after the gaps
    previous_hi = -1
    for gap, length in zip(itertools.islice(gaps, half), lengths, strict=True):
        lo = previous_hi + 1 + _unzigzag(gap)
        previous_hi = lo + length
        yield lo, previous_hi


_VARINT_ENDS = bytes(range(0x80))


def _read_varints(data: bytes) -> Iterator[int]:
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
        else:
            yield value
            value = shift = 0
    if shift:
        raise ValueError("packed ranges end mid-number")


Key = int | str


class KeySet:
    """A set of primary-key values (ints, or strings), stored compactly; see the module docstring."""

    __slots__ = ("_groups", "_ints", "_verbatim")

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self._ints = IntRanges()
        self._groups: dict[tuple[str, int], IntRanges] = {}
        self._verbatim: set[str] = set()
        self.update(keys)

    def __repr__(self) -> str:
        return f"KeySet(size={len(self)})"

    def __len__(self) -> int:
        return len(self._ints) + sum(len(g) for g in self._groups.values()) + len(self._verbatim)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KeySet)
            and self._ints == other._ints
            and {k: v for k, v in self._groups.items() if v} == {k: v for k, v in other._groups.items() if v}
            and self._verbatim == other._verbatim
        )

    def __contains__(self, key: object) -> bool:
        if isinstance(key, int) and not isinstance(key, bool):
            return key in self._ints
        if not isinstance(key, str):
            return False
        split = _split(key)
        if split is None:
            return key in self._verbatim
        group = self._groups.get(split[0])
        return group is not None and split[1] in group

    def __iter__(self) -> Iterator[Key]:
        yield from self._ints
        for (prefix, width), numbers in self._groups.items():
            for number in numbers:
                yield f"{prefix}{number:0{width}d}"
        yield from self._verbatim

    def add(self, key: Key) -> None:
        if isinstance(key, int) and not isinstance(key, bool):
            self._ints.add(key)
            return
        if not isinstance(key, str):
            raise TypeError(f"a primary key must be an int or a string, not {type(key).__name__}")
        split = _split(key)
        if split is None:
            self._verbatim.add(key)
            return
        group = self._groups.get(split[0])
        if group is None:
            group = self._groups[split[0]] = IntRanges()
        group.add(split[1])

    def update(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self.add(key)

    def discard(self, key: Key) -> None:
        if not isinstance(key, str):
            self._ints.discard(key)
            return
        split = _split(key)
        if split is None:
            self._verbatim.discard(key)
            return
        group = self._groups.get(split[0])
        if group is not None:
            group.discard(split[1])

    @property
    def ranges(self) -> int:
        """What the set costs to encode: its ranges of integers plus its verbatim strings."""
        return self._ints.ranges + sum(g.ranges for g in self._groups.values()) + len(self._verbatim)

    def union_update(self, other: KeySet) -> None:
        """Add every key of `other`, range by range."""
        self._ints = self._ints.union(other._ints)
        for group, numbers in other._groups.items():
            mine = self._groups.get(group)
            self._groups[group] = numbers.union(IntRanges()) if mine is None else mine.union(numbers)
        self._verbatim |= other._verbatim

    def difference(self, other: KeySet) -> list[Key]:
        """The keys in self and not in `other`."""
        out: list[Key] = list(self._ints.difference(other._ints))
        empty = IntRanges()
        for (prefix, width), numbers in self._groups.items():
            theirs = other._groups.get((prefix, width), empty)
            out.extend(f"{prefix}{number:0{width}d}" for number in numbers.difference(theirs))
        out.extend(sorted(self._verbatim - other._verbatim))
        return out

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        if self._ints:
            document["i"] = self._ints.encode()
        groups = [[prefix, width, numbers.encode()]
                  for (prefix, width), numbers in sorted(self._groups.items()) if numbers]  # fmt: skip
        if groups:
            document["s"] = groups
        if self._verbatim:
            document["v"] = sorted(self._verbatim)
        return document

    @classmethod
    def from_json(cls, raw: Any, what: str) -> KeySet:
        """Read what `to_json` wrote; a malformed value raises StateError naming `what`."""
        keys = cls()
        if raw is None:
            return keys
        try:
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            if "i" in raw:
                keys._ints = IntRanges.decode(raw["i"])
            for entry in raw.get("s", []):
                prefix, width, encoded = entry
                if not isinstance(prefix, str) or not isinstance(width, int) or width < 1:
                    raise ValueError("a string-key group is [prefix, width, ranges]")
                keys._groups[(prefix, width)] = IntRanges.decode(encoded)
            verbatim = raw.get("v", [])
            if not isinstance(verbatim, list) or not all(isinstance(v, str) for v in verbatim):
                raise ValueError("verbatim keys must be a list of strings")
            keys._verbatim = set(verbatim)
            if ADDED in raw:  # the keys added since the rest was written (`_state._LiveKeys`): one level only
                added = raw[ADDED]
                if not isinstance(added, dict) or ADDED in added:
                    raise ValueError(f"{ADDED!r} holds a key set without one of its own")
                keys.union_update(cls.from_json(added, what))
        except (ValueError, TypeError, lzma.LZMAError) as exc:
            raise StateError(f"state: {what} is malformed ({exc})") from None
        return keys


def _split(key: str) -> tuple[tuple[str, int], int] | None:
    match = _TRAILING_DIGITS.match(key)
    if match is None or not match.group(2).isascii():
        return None
    digits = match.group(2)
    return (match.group(1), len(digits)), int(digits)
