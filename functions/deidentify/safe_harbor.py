"""HIPAA Safe Harbor de-identification (45 CFR 164.514(b)(2)) of one patient's FHIR record.

Plain Python, testable under CPython. The 18 identifier kinds and what happens to each:

 1 names ................................ every HumanName dropped; Reference.display dropped
 2 geography below state ................ address lines, city, district dropped; ZIP cut to its
                                          first three digits, or 000 for the restricted prefixes
 3 dates (except year) .................. every date, dateTime and instant cut to its year;
   ages over 89 ......................... folded into "90+", and the birth year dropped too
 4-6 telephone, fax, email .............. every ContactPoint (telecom) dropped
 7-10 SSN, MRN, plan, account numbers ... every Identifier dropped
 11-13 licence, vehicle, device ids ..... Identifiers dropped; Device and serial numbers not read
 14-15 URLs, IP addresses ............... attachments, narrative and meta dropped; free strings
                                          that look like a URL, an email or an IP dropped
 16-17 biometrics, photos ............... Patient.photo and every attachment dropped
 18 any other unique code ............... resource ids replaced by digests (SHA-256 of the
                                          pseudonym and the id: the same on every page of
                                          an export, never the id); the patient's id
                                          replaced by the host's pseudonym
Free text (narrative, notes, comments, valueString) is dropped whole: it can hold any of the above.

The host may have done some of this before the record reached the function (research's decision
generalises the birth date to its year with the age beside it, the address to three ZIP digits,
every date to its year, and drops the identifiers): the age is read from what the host left. A
resource type the decision withheld is named under `withheld`, never silently absent.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from wardfn_pages import DEFAULT_COUNT, Query, read_page
from wardfn_withheld import Withheld, field_absent, marker

Resource = dict[str, Any]

RESOURCE_TYPES = (
    "Patient", "Encounter", "Condition", "AllergyIntolerance", "MedicationRequest", "Observation",
    "Procedure", "Immunization", "DiagnosticReport", "CarePlan",
)  # fmt: skip
RESTRICTED_ZIP3 = {
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878", "879", "884",
    "890", "893",
}  # fmt: skip
KEPT_EXTENSIONS = {
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
}
DROPPED_KEYS = {
    "identifier", "telecom", "photo", "contact", "link", "meta", "note", "comment", "valueString",
    "valueAttachment", "presentedForm", "content", "attachment", "generalPractitioner", "managingOrganization",
    "udiCarrier", "serialNumber", "lotNumber", "implicitRules",
    # FHIR instants must carry a full time, so they cannot be cut to a year: dropped instead.
    "issued", "recorded", "lastUpdated",
}  # fmt: skip
DATE = re.compile(r"^(\d{4})(-\d{2}(-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?$")
LOOKS_IDENTIFYING = re.compile(
    r"(https?://|www\.|@[A-Za-z0-9-]+\.|\b\d{1,3}(\.\d{1,3}){3}\b|\b\d{3}-\d{2}-\d{4}\b|\(\d{3}\)|\b\d{3}[-.]\d{3}[-.]\d{4}\b)"
)
# The age the host records beside a generalised birth year (host/policy/generalise.py).
AGE_EXTENSION = "urn:wardfn:fhir:StructureDefinition:age"
OLDEST = "90+"
# Keys whose string values are code-system or profile URIs, not about the individual.
URI_KEYS = {"system", "url", "profile"}

Pseudonymize = Callable[[str], str]
# Under half the manifest's output cap (16 MiB): a cleaned resource is no larger than the stored one.
PAGE_BUDGET = 6 * 1024 * 1024


def deidentify_page(
    patient_id: str,
    query: Query,
    pseudonym: str,
    today: datetime.date,
    count: int = DEFAULT_COUNT,
    token: str | None = None,
    budget: int = PAGE_BUDGET,
) -> dict[str, Any]:
    """One page of the de-identified record (wardfn_pages), with `next` (the next page's token) unless
    it is the last. Resource ids are the same on every page, so references across pages hold."""
    page = read_page(query, RESOURCE_TYPES, count, token, budget)
    resources: dict[str, list[Resource]] = {}
    for resource_type, raw in page.items:
        resources.setdefault(resource_type, []).append(json.loads(raw))
    try:
        # Every page's age comes from the Patient, which only the first page holds.
        patient = next(iter(json.loads(r) for r in query("Patient", [("_count", "1")])), None)
    except Withheld:
        patient = None
    answer = deidentify(patient_id, resources, pseudonym, today, tuple(page.withheld), patient)
    if page.next_token is not None:
        answer["next"] = page.next_token
    return answer


def deidentify(
    patient_id: str,
    resources: dict[str, list[Resource]],
    pseudonym: str,
    today: datetime.date,
    withheld: tuple[str, ...] = (),
    patient: Resource | None = None,
) -> dict[str, Any]:
    """The record (or one page of it) with Safe Harbor applied: resources, the patient's pseudonym and
    age, and each resource type the decision withheld (`withheld`) marked as such. `patient`, for a
    page without the Patient resource, is where the age comes from."""
    patients = resources.get("Patient") or ([patient] if patient is not None else [])
    if not patients and "Patient" not in withheld:
        raise LookupError("no Patient resource")
    age = marker() if not patients else _age_of(patients[0], today)
    over_89 = age == OLDEST
    local = _local_ids(patient_id, pseudonym, withheld)
    out: list[Resource] = []
    for resource_type in RESOURCE_TYPES:
        for resource in resources.get(resource_type, []):
            clean = _clean(resource, local)
            clean["id"] = str(local(f"{resource_type}/{resource.get('id')}")).split("/", 1)[1]
            if resource_type == "Patient":
                clean.pop("name", None)
                if over_89:
                    clean.pop("birthDate", None)
                    clean.pop("deceasedDateTime", None)
                addresses = [kept for a in resource.get("address") or [] if (kept := _address(a))]
                if addresses:
                    clean["address"] = addresses
            out.append(clean)
    return {
        "pseudonym": pseudonym,
        "age": age,
        "method": "HIPAA Safe Harbor, 45 CFR 164.514(b)(2)",
        "resources": out,
        "withheld": {resource_type: marker() for resource_type in RESOURCE_TYPES if resource_type in withheld},
    }


def _local_ids(patient_id: str, pseudonym: str, withheld: tuple[str, ...]) -> Callable[[str], str | None]:
    """A reference's replacement inside the de-identified record, None for one that points outside it.

    The patient is their pseudonym; another resource of the record is a digest of the pseudonym and
    its reference, the same on every page (a reference may point to a resource on another page)."""

    def local(reference: str) -> str | None:
        if reference == f"Patient/{patient_id}":
            return f"Patient/{pseudonym}"
        resource_type, _, resource_id = reference.partition("/")
        if resource_type == "Patient" or resource_type not in RESOURCE_TYPES or resource_type in withheld:
            return None  # another patient, a practitioner or organisation, or what the export does not hold
        if not resource_id or "/" in resource_id:
            return None
        digest = hashlib.sha256(f"{pseudonym}\0{reference}".encode()).hexdigest()[:24]
        return f"{resource_type}/{digest}"

    return local


def _age_of(patient: Resource, today: datetime.date) -> Any:
    """The age in years, "90+" for 90 and over, withheld when the host dropped the birth date, else None."""
    extensions = (patient.get("_birthDate") or {}).get("extension") or []
    for extension in extensions:
        if isinstance(extension, dict) and extension.get("url") == AGE_EXTENSION:
            age = extension.get("valueAge") or {}
            if age.get("comparator") in (">=", ">") or not isinstance(age.get("value"), int) or age["value"] > 89:
                return OLDEST
            return age["value"]
    years = _age(patient.get("birthDate"), today)
    if years is not None:
        return OLDEST if years > 89 else years
    return marker() if field_absent(patient, "birthDate") else None


def _age(birth_date: Any, today: datetime.date) -> int | None:
    if not isinstance(birth_date, str) or not DATE.match(birth_date) or len(birth_date) < 10:
        return None
    born = datetime.date.fromisoformat(birth_date[:10])
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _address(address: Resource) -> Resource:
    kept: Resource = {}
    for key in ("state", "country"):
        if address.get(key):
            kept[key] = address[key]
    postal = re.sub(r"\D", "", str(address.get("postalCode") or ""))
    if len(postal) >= 3:
        kept["postalCode"] = "000" if postal[:3] in RESTRICTED_ZIP3 else postal[:3]
    return kept


def _clean(node: Any, local_ids: Callable[[str], str | None], key: str = "") -> Any:
    if isinstance(node, dict):
        if "div" in node and key == "text":
            return None  # narrative
        if "family" in node or "given" in node:
            return None  # a HumanName
        if "reference" in node:
            return _reference(node, local_ids)
        cleaned: Resource = {}
        for child_key, value in node.items():
            if child_key in DROPPED_KEYS or child_key == "address":
                continue
            if child_key == "display" and "code" not in node:
                continue  # a Reference's display names a person or place; a Coding's names a concept
            if child_key == "extension":
                value = [e for e in value if isinstance(e, dict) and e.get("url") in KEPT_EXTENSIONS]
                if not value:
                    continue
            result = _clean(value, local_ids, child_key)
            if result is not None and result != [] and result != {}:
                cleaned[child_key] = result
        return cleaned
    if isinstance(node, list):
        items = [_clean(item, local_ids, key) for item in node]
        return [item for item in items if item is not None and item != {}]
    if isinstance(node, str):
        return _string(node, key)
    return node


def _reference(node: Resource, local_ids: Callable[[str], str | None]) -> Resource | None:
    target = local_ids(str(node.get("reference")))
    if target is None:
        return None  # points outside the de-identified record (a practitioner, an organisation)
    kept: Resource = {"reference": target}
    if node.get("type"):
        kept["type"] = node["type"]
    return kept


def _string(value: str, key: str) -> str | None:
    match = DATE.match(value)
    if match and key not in URI_KEYS:
        return match.group(1)
    if key in URI_KEYS:
        return value
    if LOOKS_IDENTIFYING.search(value):
        return None
    return value
