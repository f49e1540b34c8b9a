"""Withheld is an answer, never "none": plain Python every function's logic shares, testable under CPython.

A read the policy decision does not grant raises `Withheld` (the adapters' `read_granted` turns the
host's WIT `denied` into it), so no function can mistake it for an empty list: one that forgets to
handle it fails (the error boundary answers `internal`) rather than telling a clinician "no
allergies". A section of an answer built from a withheld read is `marker()`, never `[]` or 0, and
whether it is so depends on the grant alone, never on whether the patient has such data.

A field the host masked or dropped before the record entered the sandbox carries FHIR's
data-absent-reason `masked` (`absent` says whether an element is such a marker).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

# Fixed and free of patient data: the same for every patient and every type.
REASON = "not granted for this purpose of use"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"

T = TypeVar("T")
S = TypeVar("S")


class Withheld(Exception):
    """The decision did not grant this read: the function must say so, never answer as if there were none."""

    def __init__(self, resource_type: str) -> None:
        super().__init__(resource_type)
        self.resource_type = resource_type


def marker(reason: str = REASON) -> dict[str, Any]:
    """What a withheld section of an answer is, in place of its list."""
    return {"withheld": True, "reason": reason}


def section(read: Callable[[str], T], resource_type: str, build: Callable[[T], S]) -> S | dict[str, Any]:
    """`build(read(resource_type))`, or `marker()` when the read is withheld."""
    try:
        return build(read(resource_type))
    except Withheld:
        return marker()


def is_marker(value: Any) -> bool:
    """Whether `value` is a withheld section's marker."""
    return isinstance(value, dict) and value.get("withheld") is True


def absent(element: Any) -> bool:
    """Whether a FHIR element is only a data-absent-reason `masked` marker (the host dropped what it held)."""
    if isinstance(element, list):
        return bool(element) and all(absent(e) for e in element)
    if not isinstance(element, dict):
        return False
    extensions = element.get("extension")
    return (
        set(element) == {"extension"}
        and isinstance(extensions, list)
        and any(isinstance(e, dict) and e.get("url") == DATA_ABSENT_REASON for e in extensions)
    )


def field_absent(resource: dict[str, Any], element: str) -> bool:
    """Whether the host dropped `element` from `resource` (the marker in its place, or a primitive's `_element`)."""
    return absent(resource.get(element)) or (element not in resource and absent(resource.get("_" + element)))
