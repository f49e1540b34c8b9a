"""The stored form of a search index: columns a query reads without making an object per resource.

Decoding a list of entries cost a patient with 3,800 Observations about 25 ms a query (an object
per resource); these columns cost a few: the ids are one JSON list, the dates flat arrays of
int64, and each token's postings (the positions of the entries that carry it) are read only when a
query asks about that token.

Layout: a uint32 (little-endian) header length, the header (JSON: version, entry count, date
parameter count, the token table as [parameter, system, code, first posting, posting count], the
ids section's length), the ids (a JSON list, sorted: position order is id order), then per date
parameter the lower bounds and the upper bounds (int64 each), then every posting (uint32).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence, Sized

import orjson

# Sentinels in the date columns: no date at all, and a period open at one end.
NO_DATE = -(2**63)
OPEN_LOW = -(2**63) + 1
OPEN_HIGH = 2**63 - 1
_LENGTH = struct.Struct("<I")
Token = tuple[str, str | None, str]
Range = tuple[int | None, int | None]


def _native(values: array) -> array:  # type: ignore[type-arg]
    """Stored little-endian whatever the host's byte order."""
    if sys.byteorder != "little":
        values.byteswap()
    return values


def encode(
    version: int, tokens: Sequence[Token], entries: Sequence[tuple[str, Sequence[Range | None], Sequence[int]]]
) -> bytes:
    """Columns of `entries` (id, a range per date parameter, token positions), which must be sorted by id."""
    dates = len(entries[0][1]) if entries else 0
    postings: list[list[int]] = [[] for _ in tokens]
    for position, (_, _, carried) in enumerate(entries):
        for token in carried:
            postings[token].append(position)
    table, first = [], 0
    for (param, system, code), found in zip(tokens, postings, strict=True):
        table.append([param, system, code, first, len(found)])
        first += len(found)
    ids = orjson.dumps([rid for rid, _, _ in entries])
    header = orjson.dumps({"v": version, "n": len(entries), "dates": dates, "tokens": table, "ids": len(ids)})
    lower = array("q", [_low(e[1][d]) for d in range(dates) for e in entries])
    upper = array("q", [_high(e[1][d]) for d in range(dates) for e in entries])
    flat = array("I", [p for found in postings for p in found])
    parts = [_LENGTH.pack(len(header)), header, ids]
    for d in range(dates):
        n = len(entries)
        parts += [_native(lower[d * n : (d + 1) * n]).tobytes(), _native(upper[d * n : (d + 1) * n]).tobytes()]
    parts.append(_native(flat).tobytes())
    return b"".join(parts)


def _low(found: Range | None) -> int:
    if found is None:
        return NO_DATE
    return OPEN_LOW if found[0] is None else found[0]


def _high(found: Range | None) -> int:
    if found is None:
        return NO_DATE
    return OPEN_HIGH if found[1] is None else found[1]


# What an opened index keeps of the questions asked of it (token sets, orders within them): entries
# up to this many times the index's own, then forgotten all at once (rare, and simpler than recency).
# A function asking ever new combinations of tokens must not grow the host's memory with them.
KEPT_PER_ENTRY = 4


class _Kept(dict):  # type: ignore[type-arg]
    def __init__(self, budget: int) -> None:
        super().__init__()
        self._budget, self._held = budget, 0

    def keep(self, key: object, value: Sized) -> None:
        size = len(value) + 1  # an answer of nothing is kept too, and costs its key
        if self._held + size > self._budget:
            self.clear()
            self._held = 0
        self[key] = value
        self._held += size


class Columns:
    """A stored index opened for reading: ids, date columns, and postings on demand."""

    def __init__(self, data: bytes) -> None:
        (length,) = _LENGTH.unpack_from(data)
        header = orjson.loads(data[4 : 4 + length])
        self.version: int = header["v"]
        self.count: int = header["n"]
        at = 4 + length
        self.ids: list[str] = orjson.loads(data[at : at + header["ids"]])
        at += header["ids"]
        self.lower: list[array] = []  # type: ignore[type-arg]
        self.upper: list[array] = []  # type: ignore[type-arg]
        width = 8 * self.count
        for _ in range(header["dates"]):
            self.lower.append(_native(array("q", data[at : at + width])))
            self.upper.append(_native(array("q", data[at + width : at + 2 * width])))
            at += 2 * width
        self.tokens: list[Token] = [(p, s, c) for p, s, c, _, _ in header["tokens"]]
        self._spans = [(first, n) for _, _, _, first, n in header["tokens"]]
        self._postings = memoryview(data)[at:]
        budget = KEPT_PER_ENTRY * self.count + 1024
        self._carrying = _Kept(budget)  # tokens -> the positions carrying any of them
        self._within = _Kept(budget)  # (tokens, sort, descending) -> those positions in that order
        self._orders: dict[tuple[int, bool], list[int]] = {}
        self._keys: dict[tuple[int, bool], list[int]] = {}
        # The tokens a token test matched, by (parameter, what it asked): kept by host.search.query.
        self.matching = _Kept(budget)

    def postings(self, token: int) -> array:  # type: ignore[type-arg]
        """The positions of the entries that carry token number `token`."""
        first, n = self._spans[token]
        found = array("I")
        found.frombytes(self._postings[4 * first : 4 * (first + n)])
        return _native(found)

    def carrying(self, tokens: tuple[int, ...]) -> frozenset[int]:
        """The positions of the entries that carry any of these tokens; kept, since the searches of one
        invocation ask the same few tokens (a category, a set of statuses) again and again."""
        found: frozenset[int] | None = self._carrying.get(tokens)
        if found is None:
            merged: set[int] = set()
            for token in tokens:
                merged.update(self.postings(token))
            found = frozenset(merged)
            self._carrying.keep(tokens, found)
        return found

    def order_within(self, tokens: tuple[int, ...], members: frozenset[int], sort: int, descending: bool) -> list[int]:
        """The entries carrying `tokens` (`members`: `carrying(tokens)`) in `order(sort, descending)`'s
        order; kept, so the latest entries of one code are found without a pass over all of them."""
        key = (tokens, sort, descending)
        found: list[int] | None = self._within.get(key)
        if found is None:
            if len(members) * 16 > self.count:
                found = [p for p in self.order(sort, descending) if p in members]
            else:
                found = sorted(sorted(members), key=self._sort_keys(sort, descending).__getitem__)
            self._within.keep(key, found)
        return found

    def order(self, sort: int, descending: bool) -> list[int]:
        """Every position in the order a search sorted on date parameter `sort` reads them: by the date
        (a period with no start by its end), ties by position, entries without the date last. Kept:
        one opened index answers many sorted searches."""
        found = self._orders.get((sort, descending))
        if found is None:
            # Stable: equal dates keep position order. Undated share the largest key, so they come last.
            found = self._orders[(sort, descending)] = sorted(
                range(self.count), key=self._sort_keys(sort, descending).__getitem__
            )
        return found

    def _sort_keys(self, sort: int, descending: bool) -> list[int]:
        found = self._keys.get((sort, descending))
        if found is None:
            lower, upper = self.lower[sort], self.upper[sort]
            sign = -1 if descending else 1
            found = self._keys[(sort, descending)] = [
                OPEN_HIGH if low == NO_DATE else sign * (high if low == OPEN_LOW else low)
                for low, high in zip(lower, upper, strict=True)
            ]
        return found

    def dates(self, position: int) -> tuple[Range | None, ...]:
        """The entry's range per date parameter, as it was given (None: no date)."""
        found: list[Range | None] = []
        for lower, upper in zip(self.lower, self.upper, strict=True):
            low, high = lower[position], upper[position]
            if low == NO_DATE:
                found.append(None)
            else:
                found.append((None if low == OPEN_LOW else low, None if high == OPEN_HIGH else high))
        return tuple(found)
