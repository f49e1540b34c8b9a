"""A patient's record as FHIR R4 Bundles, like `Patient/$everything`: plain Python, testable under CPython.

The record comes a page at a time (wardfn_pages): each Bundle holds up to `_count` resources and at
most PAGE_BUDGET bytes of them, and links to the next with `link` relation `next`, whose url is
the token to send back as the `page` argument. A record that fits in one page has `total`; a paged
one does not (counting it would mean reading it all on every page).

Resource types the decision withheld are named, as FHIR says it: an OperationOutcome entry with an
issue of code `suppressed` per type (in a searchset, with search mode `outcome`), so that a record
without allergies and a record whose allergies were not shown never read the same.
"""

from __future__ import annotations

import json
import re

from wardfn_pages import DEFAULT_COUNT, Query, read_page
from wardfn_withheld import REASON

# The clinical record, in the order a reader expects: the patient first.
RESOURCE_TYPES = (
    "Patient", "Encounter", "Condition", "AllergyIntolerance", "MedicationRequest", "Observation",
    "Procedure", "Immunization", "DiagnosticReport", "DocumentReference", "CarePlan", "CareTeam",
    "Claim", "ExplanationOfBenefit", "Consent",
)  # fmt: skip
BUNDLE_TYPES = ("searchset", "collection")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Half the manifest's output cap (32 MiB): an entry adds its wrapping to the resource's own bytes.
PAGE_BUDGET = 16 * 1024 * 1024


class PatientNotFound(Exception):
    """The authorised patient has no Patient resource."""


def export(
    query: Query,
    bundle_type: str = "searchset",
    count: int = DEFAULT_COUNT,
    page: str | None = None,
    budget: int = PAGE_BUDGET,
) -> str:
    """One page of the record as a Bundle's JSON text (the first without `page`). Resources are passed
    through as stored, never re-serialised field by field."""
    if bundle_type not in BUNDLE_TYPES:
        raise ValueError(f"bundle type must be one of {', '.join(BUNDLE_TYPES)}")
    found = read_page(query, RESOURCE_TYPES, count, page, budget)
    if found.first and "Patient" not in found.withheld and not any(t == "Patient" for t, _ in found.items):
        raise PatientNotFound("no Patient resource")
    entries = [_entry(raw, resource_type, bundle_type) for resource_type, raw in found.items]
    head: dict[str, object] = {"resourceType": "Bundle", "type": bundle_type}
    if bundle_type == "searchset" and found.first and found.next_token is None:
        head["total"] = len(entries)  # matches and includes only: an outcome is not counted
    if found.next_token is not None:
        head["link"] = [{"relation": "next", "url": found.next_token}]
    if found.withheld:
        entries.append(_outcome(found.withheld, bundle_type))
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
