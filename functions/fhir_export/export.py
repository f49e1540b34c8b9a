"""A patient's record as a FHIR R4 Bundle, like `Patient/$everything`: plain Python, testable under CPython.

Resource types the decision withheld are named, as FHIR says it: an OperationOutcome entry with an
issue of code `suppressed` per type (in a searchset, with search mode `outcome`), so that a record
without allergies and a record whose allergies were not shown never read the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from wardfn_withheld import REASON, Withheld

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
    withheld: list[str] = []
    for resource_type in RESOURCE_TYPES:
        try:
            for raw in read(resource_type):
                entries.append(_entry(raw, resource_type, bundle_type))
        except Withheld:
            withheld.append(resource_type)
            continue
        if resource_type == "Patient" and not entries:
            raise PatientNotFound("no Patient resource")
    head: dict[str, object] = {"resourceType": "Bundle", "type": bundle_type}
    if bundle_type == "searchset":
        head["total"] = len(entries)  # matches and includes only: an outcome is not counted
    if withheld:
        entries.append(_outcome(withheld, bundle_type))
    opening = json.dumps(head, separators=(",", ":"))[:-1]
    return f'{opening},"entry":[{",".join(entries)}]}}'


def _outcome(withheld: list[str], bundle_type: str) -> str:
    """The entry saying which resource types were withheld: FHIR's issue type `suppressed`."""
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "information",
                "code": "suppressed",
                "details": {"text": f"{resource_type}: {REASON}"},
                "expression": [resource_type],
            }
            for resource_type in withheld
        ],
    }
    entry: dict[str, object] = {"resource": outcome}
    if bundle_type == "searchset":
        entry["search"] = {"mode": "outcome"}
    return json.dumps(entry, separators=(",", ":"))


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
