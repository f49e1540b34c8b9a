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
from collections.abc import Sequence

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
        self._carrying: dict[tuple[int, ...], frozenset[int]] = {}
        self._orders: dict[tuple[int, bool], list[int]] = {}
        # The tokens a token test matched, by (parameter, what it asked): read by host.search.query.
        self.matching: dict[tuple[str, tuple[tuple[str | None, str | None], ...]], tuple[int, ...]] = {}

    def postings(self, token: int) -> array:  # type: ignore[type-arg]
        """The positions of the entries that carry token number `token`."""
        first, n = self._spans[token]
        found = array("I")
        found.frombytes(self._postings[4 * first : 4 * (first + n)])
        return _native(found)

    def carrying(self, tokens: tuple[int, ...]) -> frozenset[int]:
        """The positions of the entries that carry any of these tokens; kept, since the searches of one
        invocation ask the same few tokens (a category, a set of statuses) again and again."""
        found = self._carrying.get(tokens)
        if found is None:
            merged: set[int] = set()
            for token in tokens:
                merged.update(self.postings(token))
            found = self._carrying[tokens] = frozenset(merged)
        return found

    def order(self, sort: int, descending: bool) -> list[int]:
        """Every position in the order a search sorted on date parameter `sort` reads them: by the date
        (a period with no start by its end), ties by position, entries without the date last. Kept:
        one opened index answers many sorted searches."""
        found = self._orders.get((sort, descending))
        if found is None:
            lower, upper = self.lower[sort], self.upper[sort]
            sign = -1 if descending else 1
            keys = [
                OPEN_HIGH if low == NO_DATE else sign * (high if low == OPEN_LOW else low)
                for low, high in zip(lower, upper, strict=True)
            ]
            # Stable: equal dates keep position order. Undated share the largest key, so they come last.
            found = self._orders[(sort, descending)] = sorted(range(self.count), key=keys.__getitem__)
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
