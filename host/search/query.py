"""A FHIR search, read from (name, value) pairs and evaluated on index entries.

Supported, with FHIR R4's semantics: the type's parameters from host.search.params (a token
as `code`, `system|code`, `|code` or `system|`; a date with the prefixes eq, ne, gt, lt, ge, le,
sa, eb); commas in a value mean any of them, a name given twice means both; `_sort` on one date
parameter (`date` or `-date`; without it, by id); `_count`; `_offset` (results skipped before
the `_count` kept, for paging: not in FHIR R4's core, a common server extension); `_elements` (top-level elements; the
answer keeps resourceType, id and meta, and is tagged SUBSETTED). Anything else (modifiers such
as `:text`, `_include`, chained parameters, escapes) is refused with a message naming it, never
ignored: a function must not mistake a filter the host skipped for an answer.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import orjson

from host.errors import InvalidRequest
from host.search.columns import NO_DATE, OPEN_LOW, Columns
from host.search.params import DATE, SEARCH_PARAMETERS, date_params, parse_date

MAX_ALTERNATIVES = 64
# A sorted search walks the index's kept order when more than one entry in DENSE matches.
DENSE = 64
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
KEPT_ELEMENTS = frozenset({"resourceType", "id", "meta"})
# The type suffixes of FHIR R4 choice elements: `_elements=value` keeps valueQuantity, valueString, ...
_CHOICE_TYPES = frozenset(
    "Address Age Annotation Attachment Base64Binary Boolean Canonical Code CodeableConcept Coding ContactPoint "
    "Count Date DateTime Decimal Distance Duration HumanName Id Identifier Instant Integer Markdown Money Oid "
    "Period PositiveInt Quantity Range Ratio Reference SampledData Signature String Time Timing UnsignedInt Uri "
    "Url Uuid".split()
)
_ELEMENT = re.compile(r"[a-z][A-Za-z0-9]*")

# (system, code) as asked: system None for any system, "" for none; code None for any code.
TokenAsk = tuple[str | None, str | None]


@dataclass(frozen=True)
class TokenTest:
    """A token parameter's test: the entries that carry any of the asked tokens."""

    name: str
    asks: tuple[TokenAsk, ...]

    def tokens(self, columns: Columns) -> tuple[int, ...]:
        """The index's tokens this test matches; each distinct token is compared once, and kept."""
        key = (self.name, self.asks)
        found: tuple[int, ...] | None = columns.matching.get(key)
        if found is None:
            found = tuple(
                token
                for token, (param, system, code) in enumerate(columns.tokens)
                if param == self.name and any(_token_matches(system, code, ask) for ask in self.asks)
            )
            columns.matching.keep(key, found)
        return found


@dataclass(frozen=True)
class DateTest:
    """A date parameter's test on one entry (any of its alternatives)."""

    index: int  # among the type's date parameters
    asks: tuple[tuple[str, tuple[int, int]], ...]

    def keeps(self, columns: Columns, position: int) -> bool:
        low, high = columns.lower[self.index][position], columns.upper[self.index][position]
        return low != NO_DATE and any(_date_matches(low, high, prefix, ask) for prefix, ask in self.asks)


@dataclass(frozen=True)
class SearchQuery:
    """One search on one type: the tests every result passes, its order, its size and its projection."""

    resource_type: str
    tokens: tuple[TokenTest, ...] = ()
    dates: tuple[DateTest, ...] = ()
    sort: int | None = None  # the index, among the type's date parameters, of the one sorted on
    descending: bool = False
    count: int | None = None
    elements: frozenset[str] | None = None
    offset: int = 0  # results skipped (after sorting) before the `count` kept: a page's start

    @property
    def indexed(self) -> bool:
        return self.resource_type in SEARCH_PARAMETERS

    def select(self, columns: Columns) -> list[str]:
        """The ids of the index's entries that pass every test, in the query's order, at most `count`."""
        if self.count == 0:
            return []  # a probe (is this type readable?) costs nothing, whatever the chart
        if not self.tokens and not self.dates and self.sort is None:
            return self.page(columns.ids)  # every entry in id order: a page of a walk through the type
        carried = sorted(((columns.carrying(k), k) for k in (t.tokens(columns) for t in self.tokens)), key=_size)
        wanted = None if self.count is None else self.offset + self.count
        if self.sort is not None and wanted is not None and carried:
            # The latest few of one code: walk the narrowest token's entries in date order (kept with the
            # index), testing the rest on each, instead of intersecting thousands of entries each time.
            (narrowest, key), others = carried[0], [found for found, _ in carried[1:]]
            order = columns.order_within(key, narrowest, self.sort, self.descending)
            return self.page([columns.ids[p] for p in itertools.islice(self._passing(columns, order, others), wanted)])
        found: Iterable[int] = range(columns.count)
        if carried:
            found = carried[0][0].intersection(*(f for f, _ in carried[1:]))
        if self.dates:
            found = [p for p in found if all(test.keeps(columns, p) for test in self.dates)]
        ids = columns.ids
        if self.sort is None:
            return self.page([ids[p] for p in sorted(found)])  # position order is id order
        members = found if isinstance(found, (set, frozenset)) else set(found)
        if wanted is not None and len(members) * DENSE > columns.count:
            # Many match and few are wanted: walk the index's kept order, not a sort of every match.
            order = columns.order(self.sort, self.descending)
            return self.page([ids[p] for p in itertools.islice((p for p in order if p in members), wanted)])
        lower, upper = columns.lower[self.sort], columns.upper[self.sort]
        positions = list(members)
        starts = list(map(lower.__getitem__, positions))  # gathered in C: a chart holds tens of thousands
        if NO_DATE in starts or OPEN_LOW in starts:
            dated, undated = [], []
            for p, start in zip(positions, starts, strict=True):
                if start == NO_DATE:
                    undated.append(p)
                else:
                    dated.append((start if start != OPEN_LOW else upper[p], p))  # no start: sorts by its end
        else:
            dated, undated = list(zip(starts, positions, strict=True)), []
        if self.descending:
            dated = [(-start, p) for start, p in dated]
        # Descending or ascending by date, ties by id (position) ascending, entries with no date last
        # either way; the latest few of many need no full sort.
        first = sorted(dated) if wanted is None or wanted >= len(dated) else heapq.nsmallest(wanted, dated)
        ordered = [ids[p] for _, p in first]
        return self.page(ordered + [ids[p] for p in sorted(undated)][: _room(wanted, len(ordered))])

    def _passing(self, columns: Columns, order: Iterable[int], others: list[frozenset[int]]) -> Iterator[int]:
        for p in order:
            if all(p in found for found in others) and all(test.keeps(columns, p) for test in self.dates):
                yield p

    def page(self, ordered: list[str]) -> list[str]:
        """The `count` results from `offset` on, of all the results in order."""
        end = None if self.count is None else self.offset + self.count
        return ordered[self.offset : end]

    def project(self, body: str) -> str:
        """The body with only the asked-for elements (and resourceType, id, meta), tagged SUBSETTED."""
        if self.elements is None:
            return body
        resource = orjson.loads(body)
        kept = {key: value for key, value in resource.items() if self._keeps(key)}
        meta = dict(kept.get("meta") or {})
        meta["tag"] = [*(meta.get("tag") or []), SUBSETTED]
        kept["meta"] = meta
        return orjson.dumps(kept).decode()

    def _keeps(self, key: str) -> bool:
        assert self.elements is not None
        if key in KEPT_ELEMENTS or key in self.elements:
            return True
        return any(key.startswith(name) and key[len(name) :] in _CHOICE_TYPES for name in self.elements)


def _size(carried: tuple[frozenset[int], tuple[int, ...]]) -> int:
    return len(carried[0])


def _room(count: int | None, used: int) -> int | None:
    return None if count is None else max(0, count - used)


def parse_query(resource_type: str, params: Sequence[tuple[str, str]]) -> SearchQuery:
    """The search these (name, value) pairs ask for on `resource_type`; InvalidRequest naming what is wrong."""
    known = SEARCH_PARAMETERS.get(resource_type, {})
    dates = date_params(resource_type)
    tests: list[TokenTest] = []
    date_tests: list[DateTest] = []
    sort: int | None = None
    descending = False
    count: int | None = None
    elements: frozenset[str] | None = None
    offset = 0
    for name, value in params:
        if not value:
            raise InvalidRequest(f"search parameter {name!r} has no value")
        if "\\" in value:
            raise InvalidRequest(f"search parameter {name!r}: escaped characters are not supported")
        if name == "_count":
            if not value.isdigit():
                raise InvalidRequest("_count must be a whole number")
            count = int(value) if count is None else min(count, int(value))
        elif name == "_offset":
            if not value.isdigit():
                raise InvalidRequest("_offset must be a whole number")
            offset = int(value)
        elif name == "_sort":
            descending = value.startswith("-")
            key = value.removeprefix("-")
            if key not in dates:
                raise InvalidRequest(
                    f"_sort: {resource_type} sorts on one of its date parameters ({', '.join(dates) or 'none'})"
                )
            sort = dates.index(key)
        elif name == "_elements":
            elements = _elements(resource_type, value)
        elif name in known:
            param = known[name]
            alternatives = value.split(",")
            if len(alternatives) > MAX_ALTERNATIVES:
                raise InvalidRequest(f"search parameter {name!r}: at most {MAX_ALTERNATIVES} values")
            if param.kind == DATE:
                date_tests.append(_date_test(name, dates.index(name), alternatives))
            else:
                tests.append(_token_test(name, alternatives))
        else:
            base = name.split(":")[0].split(".")[0]
            what = "modifiers and chains are" if base != name else f"{name!r} is"
            supported = ", ".join([*known, "_count", "_offset", "_sort", "_elements"])
            raise InvalidRequest(f"{what} not supported on {resource_type}: use {supported}")
    return SearchQuery(resource_type, tuple(tests), tuple(date_tests), sort, descending, count, elements, offset)


def _elements(resource_type: str, value: str) -> frozenset[str]:
    names = set()
    for raw in value.split(","):
        name = raw.strip().removeprefix(f"{resource_type}.").removesuffix("[x]")
        if not _ELEMENT.fullmatch(name):
            raise InvalidRequest("_elements: give top-level element names, such as code,valueQuantity")
        names.add(name)
    return frozenset(names)


def _token_test(name: str, alternatives: list[str]) -> TokenTest:
    return TokenTest(name, tuple(_token_ask(name, text) for text in alternatives))


def _token_ask(name: str, text: str) -> TokenAsk:
    if "|" not in text:
        return None, text
    system, _, code = text.partition("|")
    if "|" in code or (not system and not code):
        raise InvalidRequest(f"search parameter {name!r}: a token is code, system|code, |code or system|")
    return system, code or None


def _token_matches(system: str | None, code: str, ask: TokenAsk) -> bool:
    asked_system, asked_code = ask
    if asked_code is not None and code != asked_code:
        return False
    if asked_system is None:
        return True
    if asked_system == "":
        return system is None
    return system == asked_system


def _date_test(name: str, index: int, alternatives: list[str]) -> DateTest:
    return DateTest(index, tuple(_date_ask(name, text) for text in alternatives))


def _date_ask(name: str, text: str) -> tuple[str, tuple[int, int]]:
    prefix = text[:2] if text[:2].isalpha() else "eq"
    if text[:2].isalpha() and prefix not in DATE_PREFIXES:
        raise InvalidRequest(f"search parameter {name!r}: a date's prefix is one of {', '.join(DATE_PREFIXES)}")
    parsed = parse_date(text[2:] if text[:2].isalpha() else text)
    if parsed is None:
        raise InvalidRequest(f"search parameter {name!r}: a date is YYYY, YYYY-MM, YYYY-MM-DD or a FHIR dateTime")
    return prefix, parsed


def _date_matches(lower: int, upper: int, prefix: str, ask: tuple[int, int]) -> bool:
    """FHIR's comparison of the resource's range with the searched one (R4, 3.1.1.5.7); open ends are extremes."""
    within = lower >= ask[0] and upper <= ask[1]
    if prefix == "eq":
        return within
    if prefix == "ne":
        return not within
    if prefix == "gt":
        return upper > ask[1]
    if prefix == "lt":
        return lower < ask[0]
    if prefix == "ge":
        return upper > ask[1] or within
    if prefix == "le":
        return lower < ask[0] or within
    if prefix == "sa":
        return lower >= ask[1]
    return upper <= ask[0]  # eb
