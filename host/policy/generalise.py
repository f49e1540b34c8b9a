"""Generalising fields, as HIPAA Safe Harbor (45 CFR 164.514(b)(2)) allows, before a function reads them.

Where dropping would throw away what research needs, a decision may generalise instead: a
`generalise` selector is `Type.element:method` (or `*.element:method`, or `*.*:method` for every
element of every type). The methods, each idempotent (applying it to its own output changes
nothing, so the check on the answer can apply it again):

- `year`: every date, dateTime and instant in the element cut to its year. On a Patient's
  `birthDate` it also records the age in years (FHIR's `valueAge` in an extension on
  `_birthDate`), and for ages 90 and over keeps no year at all: the age is only `>= 90`.
- `zip3`: each address keeps its `use`, `type`, state and country, and its postal code's first
  three digits, or `000` for the 3-digit prefixes whose population is 20,000 or fewer (per HHS
  guidance on the 2000 census); lines, city, district, text and period go.

What a method removes is added to `withheld`, so that the answer can be checked for it.
"""

from __future__ import annotations

import datetime
import functools
import re
from dataclasses import dataclass
from typing import Any

DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
METHODS = frozenset({"year", "zip3"})
# The age the host records beside a generalised birth year (a FHIR extension holding a valueAge).
AGE_EXTENSION = "urn:wardfn:fhir:StructureDefinition:age"
UCUM = "http://unitsofmeasure.org"
# Safe Harbor: all ages over 89 are aggregated into one category, 90 or older.
OLDEST_AGE = 90
RESTRICTED_ZIP3 = frozenset(
    {"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878", "879", "884", "890",
     "893"}
)  # fmt: skip
ADDRESS_KEPT = ("use", "type", "state", "country")
# Keys whose strings are codes or links, never dates, however they look.
NOT_DATES = frozenset({"system", "url", "code", "reference", "id", "version"})

_SELECTOR = re.compile(r"^(\*|[A-Z][A-Za-z]*)\.(\*|[a-z][A-Za-z0-9]*):([a-z0-9-]+)$")
_DATE = re.compile(r"^(\d{4})-\d{2}(-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?$")
_YEAR = re.compile(r"^\d{4}$")


@dataclass(frozen=True)
class Generalisation:
    resource_type: str  # "*" for any
    element: str  # "*" for every element
    method: str

    @property
    def field(self) -> str:
        """The field it generalises, as a drop selector would name it."""
        return f"{self.resource_type}.{self.element}"

    def applies_to(self, resource_type: object) -> bool:
        return self.resource_type in ("*", resource_type)


@functools.lru_cache(maxsize=256)
def parse_generalisation(text: str) -> Generalisation:
    """`Type.element:method`, `*.element:method` or `*.*:method` with a known method; ValueError otherwise."""
    match = _SELECTOR.match(text)
    if match is None:
        raise ValueError(f"not a generalisation: {text!r} (expected Type.element:method)")
    if match.group(3) not in METHODS:
        raise ValueError(f"unknown generalisation method in {text!r} (known: {', '.join(sorted(METHODS))})")
    return Generalisation(match.group(1), match.group(2), match.group(3))


def generalise(resource: dict[str, Any], rule: Generalisation, withheld: set[str], today: datetime.date) -> None:
    """Apply `rule` to `resource` in place (only ever `apply`'s private copy)."""
    elements = [k for k in resource if k not in ("resourceType", "id")] if rule.element == "*" else [rule.element]
    for element in elements:
        if element not in resource:
            continue
        if rule.method == "zip3":
            resource[element] = _addresses(resource[element], withheld)
        elif element == "birthDate" and resource.get("resourceType") == "Patient":
            _birth_year(resource, withheld, today)
        else:
            resource[element] = _years(resource[element], element, withheld)


def _years(value: Any, key: str, withheld: set[str]) -> Any:
    """`value` with every date in it cut to its year."""
    if isinstance(value, str):
        match = _DATE.match(value) if key not in NOT_DATES else None
        if match is None:
            return value
        withheld.add(value)
        return match.group(1)
    if isinstance(value, list):
        return [_years(item, key, withheld) for item in value]
    if isinstance(value, dict):
        return {k: _years(v, k, withheld) for k, v in value.items()}
    return value


def _birth_year(patient: dict[str, Any], withheld: set[str], today: datetime.date) -> None:
    born = patient["birthDate"]
    if isinstance(born, str) and _YEAR.match(born):
        return  # already a year: generalised before (the check on the answer applies this again)
    patient.pop("birthDate")
    age = _age(born, today)
    if isinstance(born, str):
        withheld.add(born)
    if age is None:
        patient["_birthDate"] = absent()  # not a date the host can read: nothing of it is kept
        return
    if age < OLDEST_AGE:
        patient["birthDate"] = born[:4]
        patient["_birthDate"] = {"extension": [_age_extension(age, None)]}
    else:  # the year would say how old: no year at all, only "90 or older"
        withheld.add(born[:4])
        patient["_birthDate"] = {"extension": [*absent()["extension"], _age_extension(OLDEST_AGE, ">=")]}


def _age(born: Any, today: datetime.date) -> int | None:
    if not isinstance(born, str) or not _DATE.match(born) or len(born) < 10:
        return None
    try:
        date = datetime.date.fromisoformat(born[:10])
    except ValueError:
        return None
    return today.year - date.year - ((today.month, today.day) < (date.month, date.day))


def _age_extension(years: int, comparator: str | None) -> dict[str, Any]:
    age: dict[str, Any] = {"value": years, "unit": "a", "system": UCUM, "code": "a"}
    if comparator is not None:
        age["comparator"] = comparator
    return {"url": AGE_EXTENSION, "valueAge": age}


def absent() -> dict[str, Any]:
    """An element that holds only FHIR's data-absent-reason `masked`: what stands where the host removed a value."""
    return {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "masked"}]}


def _addresses(value: Any, withheld: set[str]) -> Any:
    if isinstance(value, list):
        return [_address(a, withheld) for a in value]
    return _address(value, withheld)


def _address(address: Any, withheld: set[str]) -> Any:
    if not isinstance(address, dict):
        return address
    kept = {key: address[key] for key in ADDRESS_KEPT if key in address}
    for key, value in address.items():
        if key not in kept and key != "postalCode":
            withheld.update(_texts(value))
    postal = address.get("postalCode")
    if postal is not None:
        digits = re.sub(r"\D", "", str(postal))
        if len(digits) >= 3:
            kept["postalCode"] = "000" if digits[:3] in RESTRICTED_ZIP3 else digits[:3]
        if str(postal) != kept.get("postalCode"):
            withheld.add(str(postal))
    return kept


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _texts(item)]
    if isinstance(value, dict):
        return [s for k, item in value.items() if k not in ("system", "url", "use") for s in _texts(item)]
    return []


def is_absent(value: Any) -> bool:
    """Whether `value` is `absent()` (or a list of them): a value the host already removed."""
    if isinstance(value, list):
        return bool(value) and all(is_absent(v) for v in value)
    return bool(value == absent())
