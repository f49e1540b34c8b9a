"""A patient's record as a FHIR R4 Bundle, like `Patient/$everything`: plain Python, testable under CPython."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

# The clinical record, in the order a reader expects: the patient first.
RESOURCE_TYPES = (
    "Patient", "Encounter", "Condition", "AllergyIntolerance", "MedicationRequest", "Observation",
    "Procedure", "Immunization", "DiagnosticReport", "DocumentReference", "CarePlan", "CareTeam",
    "Claim", "ExplanationOfBenefit", "Consent",
)  # fmt: skip
BUNDLE_TYPES = ("searchset", "collection")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

Reader = Callable[[str], list[str]]


class PatientNotFound(Exception):
    """The authorised patient has no Patient resource."""


def export(read: Reader, bundle_type: str = "searchset") -> str:
    """The Bundle as JSON text. Resources are passed through as stored, never re-serialised field by field."""
    if bundle_type not in BUNDLE_TYPES:
        raise ValueError(f"bundle type must be one of {', '.join(BUNDLE_TYPES)}")
    entries: list[str] = []
    for resource_type in RESOURCE_TYPES:
        for raw in read(resource_type):
            entries.append(_entry(raw, resource_type, bundle_type))
        if resource_type == "Patient" and not entries:
            raise PatientNotFound("no Patient resource")
    head = {"resourceType": "Bundle", "type": bundle_type}
    if bundle_type == "searchset":
        head["total"] = len(entries)
    opening = json.dumps(head, separators=(",", ":"))[:-1]
    return f'{opening},"entry":[{",".join(entries)}]}}'


def _entry(raw: str, resource_type: str, bundle_type: str) -> str:
    resource = json.loads(raw)  # only to learn the id; the text itself goes out unchanged
    resource_id = str(resource.get("id", ""))
    parts = []
    if UUID.match(resource_id):
        parts.append(f'"fullUrl":"urn:uuid:{resource_id}"')
    parts.append(f'"resource":{raw}')
    if bundle_type == "searchset":
        mode = "match" if resource_type == "Patient" else "include"
        parts.append(f'"search":{{"mode":"{mode}"}}')
    return "{" + ",".join(parts) + "}"
