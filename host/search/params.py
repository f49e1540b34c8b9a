"""FHIR search parameters: which element each one reads, per resource type, and what it finds there.

`SEARCH_PARAMETERS` is the one table (documented in docs/functions.md, "Search parameters"). A
parameter is a token (an element of type CodeableConcept, Coding or code: its values are
(system, code) pairs, a code's system being none) or a date (dateTime, date, instant or Period:
its value is a range of epoch milliseconds, lower bound included, upper bound excluded, as wide
as the value's precision). The names and semantics are FHIR R4's; `date` is also given to types
whose FHIR name for their main date is another (MedicationRequest's `authoredon`, Condition's
`onset-date`), so that `_sort=-date` reads the same on every type: the table says which element.

Everything here is plain computation on resources already decrypted: no database, no keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from host.search.columns import Columns, encode

TOKEN = "token"
DATE = "date"

# A date range in epoch milliseconds: (lower, upper), upper excluded; None for an open end.
Range = tuple[int | None, int | None]
# A token: (system, code); system None for a code element or a coding that names none.
Token = tuple[str | None, str]


@dataclass(frozen=True)
class Param:
    """One search parameter: its kind and the elements it reads, the first one present winning for dates."""

    kind: str
    elements: tuple[str, ...]


def _token(*elements: str) -> Param:
    return Param(TOKEN, elements)


def _date(*elements: str) -> Param:
    return Param(DATE, elements)


# Bump when the table or the extraction changes: stored indexes of another version are rebuilt.
INDEX_VERSION = 1

SEARCH_PARAMETERS: dict[str, dict[str, Param]] = {
    "Observation": {
        "code": _token("code"),
        "category": _token("category"),
        "status": _token("status"),
        "date": _date("effectiveDateTime", "effectivePeriod", "effectiveInstant"),
    },
    "Condition": {
        "code": _token("code"),
        "category": _token("category"),
        "clinical-status": _token("clinicalStatus"),
        "verification-status": _token("verificationStatus"),
        "onset-date": _date("onsetDateTime", "onsetPeriod"),
        "recorded-date": _date("recordedDate"),
        # wardfn's: the onset, or where none is recorded, the date it was recorded.
        "date": _date("onsetDateTime", "onsetPeriod", "recordedDate"),
    },
    "AllergyIntolerance": {
        "code": _token("code"),
        "clinical-status": _token("clinicalStatus"),
        "verification-status": _token("verificationStatus"),
        "category": _token("category"),
        "criticality": _token("criticality"),
        "date": _date("recordedDate"),
    },
    "MedicationRequest": {
        "code": _token("medicationCodeableConcept"),
        "status": _token("status"),
        "intent": _token("intent"),
        "category": _token("category"),
        "authoredon": _date("authoredOn"),
        # wardfn's: FHIR's `date` on MedicationRequest is the dosage timing; here it is `authoredon`.
        "date": _date("authoredOn"),
    },
    "Encounter": {
        "status": _token("status"),
        "class": _token("class"),
        "type": _token("type"),
        "date": _date("period"),
    },
    "Procedure": {
        "code": _token("code"),
        "category": _token("category"),
        "status": _token("status"),
        "date": _date("performedDateTime", "performedPeriod"),
    },
    "Immunization": {
        "vaccine-code": _token("vaccineCode"),
        "status": _token("status"),
        "date": _date("occurrenceDateTime"),
    },
    "DiagnosticReport": {
        "code": _token("code"),
        "category": _token("category"),
        "status": _token("status"),
        "date": _date("effectiveDateTime", "effectivePeriod"),
    },
    "CarePlan": {
        "category": _token("category"),
        "status": _token("status"),
        "date": _date("period"),
    },
    "CareTeam": {
        "category": _token("category"),
        "status": _token("status"),
        "date": _date("period"),
    },
    "Consent": {
        "category": _token("category"),
        "status": _token("status"),
        "date": _date("dateTime"),
    },
}


def date_params(resource_type: str) -> tuple[str, ...]:
    """The type's date parameters, in the table's order (the order of a stored entry's ranges)."""
    return tuple(name for name, p in SEARCH_PARAMETERS.get(resource_type, {}).items() if p.kind == DATE)


@dataclass(frozen=True)
class Entry:
    """What the index holds of one resource: its id, a range per date parameter, its tokens."""

    id: str
    dates: tuple[Range | None, ...]
    tokens: frozenset[int]  # positions in the index's token table


@dataclass
class Index:
    """One patient's resources of one type as index entries, with the table of their tokens.

    A token is (parameter, system, code); entries name tokens by their position in the table, so
    a search compares each distinct token once, not once per resource.
    """

    resource_type: str
    tokens: list[tuple[str, str | None, str]] = field(default_factory=list)
    entries: dict[str, Entry] = field(default_factory=dict)

    _positions: dict[tuple[str, str | None, str], int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._positions = {token: i for i, token in enumerate(self.tokens)}

    def add(self, resource: dict[str, Any]) -> None:
        """Index one resource of this type, replacing its earlier entry (by id)."""
        params = SEARCH_PARAMETERS[self.resource_type]
        dates: list[Range | None] = []
        tokens: set[int] = set()
        for name, param in params.items():
            if param.kind == DATE:
                dates.append(_first_range(resource, param.elements))
                continue
            for element in param.elements:
                tokens.update(self._position((name, system, code)) for system, code in _tokens(resource.get(element)))
        resource_id = str(resource["id"])
        self.entries[resource_id] = Entry(resource_id, tuple(dates), frozenset(tokens))

    def to_bytes(self) -> bytes:
        """The index as stored (host.search.columns), entries in id order."""
        entries = [(e.id, e.dates, sorted(e.tokens)) for _, e in sorted(self.entries.items())]
        return encode(INDEX_VERSION, self.tokens, entries)

    @classmethod
    def from_bytes(cls, resource_type: str, data: bytes) -> Index:
        """A stored index back in a form that can take more resources (for writes; queries read Columns)."""
        columns = Columns(data)
        carried: list[set[int]] = [set() for _ in range(columns.count)]
        for token in range(len(columns.tokens)):
            for position in columns.postings(token):
                carried[position].add(token)
        entries = {
            rid: Entry(rid, columns.dates(position), frozenset(carried[position]))
            for position, rid in enumerate(columns.ids)
        }
        return cls(resource_type, list(columns.tokens), entries)

    def _position(self, token: tuple[str, str | None, str]) -> int:
        position = self._positions.get(token)
        if position is None:
            position = self._positions[token] = len(self.tokens)
            self.tokens.append(token)
        return position


def _tokens(value: Any) -> Iterator[Token]:
    if isinstance(value, str):
        yield None, value
    elif isinstance(value, list):
        for item in value:
            yield from _tokens(item)
    elif isinstance(value, dict):
        if isinstance(value.get("code"), str):  # a Coding
            system = value.get("system")
            yield (system if isinstance(system, str) else None), value["code"]
        yield from _tokens([c for c in value.get("coding") or [] if isinstance(c, dict)])


def _first_range(resource: dict[str, Any], elements: tuple[str, ...]) -> Range | None:
    for element in elements:
        value = resource.get(element)
        found: Range | None
        if isinstance(value, str):
            found = parse_date(value)
        elif isinstance(value, dict):  # a Period: open where it names no end
            start, end = parse_date(value.get("start")), parse_date(value.get("end"))
            lower = start[0] if start is not None else None
            upper = end[1] if end is not None else None
            found = None if lower is None and upper is None else (lower, upper)
        else:
            continue
        if found is not None:
            return found
    return None


_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def parse_date(text: Any) -> tuple[int, int] | None:
    """A FHIR date, dateTime or instant as (lower, upper) epoch milliseconds, as wide as its precision.

    None for anything else. A time without a zone is read as UTC.
    """
    if not isinstance(text, str):
        return None
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        tz = UTC if zone in (None, "Z") else datetime.strptime(zone.replace(":", ""), "%z").tzinfo
        start = datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=tz
        )
    except ValueError:
        return None
    if fraction:
        start += timedelta(microseconds=int(fraction[:6].ljust(6, "0")))
    if month is None:
        end = start.replace(year=start.year + 1)
    elif day is None:
        end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    elif hour is None:
        end = start + timedelta(days=1)
    elif second is None:
        end = start + timedelta(minutes=1)
    elif not fraction:
        end = start + timedelta(seconds=1)
    else:
        end = start + timedelta(milliseconds=1)
    lower = int(start.timestamp() * 1000)
    return lower, max(lower + 1, int(end.timestamp() * 1000))
