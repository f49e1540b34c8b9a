"""Build a clinical summary from FHIR R4 resources: plain Python, testable under CPython.

A section whose resource type the decision withheld is `{"withheld": true, "reason": ...}`, never
an empty list: "no allergies" and "allergies not shown to you" must never read the same.

Each section asks the host for what it shows and nothing more (FHIR search parameters, evaluated by
the host on its index): the active allergies, the active medications, and for each vital sign the
one latest live Observation. The filters below still run on what comes back, so the answer is the
same whether the host narrowed the read or not; the cost no longer grows with the chart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from wardfn_withheld import Withheld, field_absent, marker, section

Resource = dict[str, Any]
Reader = Callable[[str], list[Resource]]
Params = Sequence[tuple[str, str]]
# A read narrowed by FHIR search parameters: (resource type, parameters) -> the matching resources.
Query = Callable[[str, Params], list[Resource]]

VITAL_SIGNS = "vital-signs"
LOINC = "http://loinc.org"
# The vital signs the summary shows, each read as its latest Observation: FHIR R4's vital signs
# profile, US Core's pediatric and pulse-oximetry additions, and what Synthea files under the
# vital-signs category (pain severity). An Observation of another code is not shown.
VITAL_SIGN_CODES = (
    "85353-1",  # vital signs panel
    "9279-1",  # respiratory rate
    "8867-4",  # heart rate
    "2708-6",  # oxygen saturation in arterial blood
    "59408-5",  # oxygen saturation by pulse oximetry
    "3150-0",  # inhaled oxygen concentration
    "3151-8",  # inhaled oxygen flow rate
    "8310-5",  # body temperature
    "8302-2",  # body height
    "8306-3",  # body height, lying
    "9843-4",  # head occipital-frontal circumference
    "8289-1",  # head occipital-frontal circumference percentile
    "29463-7",  # body weight
    "39156-5",  # body mass index
    "59576-9",  # body mass index percentile per age and sex
    "77606-2",  # weight-for-length per age and sex
    "85354-9",  # blood pressure panel
    "8480-6",  # systolic blood pressure
    "8462-4",  # diastolic blood pressure
    "8478-0",  # mean blood pressure
    "72514-3",  # pain severity
)
# Every Observation status but entered-in-error and cancelled (FHIR R4's value set).
LIVE_STATUSES = "registered,preliminary,final,amended,corrected,unknown"
ACTIVE_ALLERGIES: Params = (("clinical-status", "active"),)
ACTIVE_MEDICATIONS: Params = (("status", "active"),)


class PatientNotFound(Exception):
    """The authorised patient has no Patient resource."""


def build_summary(read: Reader, query: Query) -> dict[str, Any]:
    """Demographics, active allergies, active medications and latest vital signs; each withheld section marked.

    `read` reads the Patient; `query` every other section, narrowed to what it shows."""
    try:
        patients: list[Resource] | None = read("Patient")
    except Withheld:
        patients = None  # the host has already found the patient: it exists, but is not shown
    if patients == []:
        raise PatientNotFound("no Patient resource")
    return {
        "demographics": marker() if patients is None else demographics(patients[0]),
        "allergies": section(lambda t: query(t, ACTIVE_ALLERGIES), "AllergyIntolerance", active_allergies),
        "medications": section(lambda t: query(t, ACTIVE_MEDICATIONS), "MedicationRequest", active_medications),
        "vital_signs": section(lambda t: latest_of_each_vital_sign(query), "Observation", latest_vital_signs),
    }


def latest_of_each_vital_sign(query: Query) -> list[Resource]:
    """For each code of VITAL_SIGN_CODES, the latest live vital-sign Observation whose first code it is:
    what `latest_vital_signs` needs, not the whole history.

    The host matches a code in any coding of an Observation, the summary groups by the first one:
    a newer Observation that carries the code second (Synthea files oxygen saturation under both of
    its LOINC codes) would hide the one wanted, so the read widens, four times as many each time,
    until the latest of the code's own comes back or there is no more. Nearly always one query."""
    found: list[Resource] = []
    for code in VITAL_SIGN_CODES:
        count = 1
        while True:
            params = (
                ("code", f"{LOINC}|{code}"),
                ("category", VITAL_SIGNS),
                ("status", LIVE_STATUSES),
                ("_sort", "-date"),
                ("_count", str(count)),
            )
            observations = query("Observation", params)
            own = next((obs for obs in observations if _first_code(obs.get("code")) == code), None)
            if own is not None:
                found.append(own)
                break
            if len(observations) < count:
                break
            count *= 4
    return found


def demographics(patient: Resource) -> dict[str, Any]:
    """Who the patient is; a field the host dropped is marked withheld, never read as missing."""
    names = [n for n in patient.get("name") or [] if isinstance(n, dict) and "extension" not in n] or [{}]
    official = next((n for n in names if n.get("use") == "official"), names[0])
    return {
        "id": patient.get("id"),
        "name": marker()
        if field_absent(patient, "name")
        else {
            "given": official.get("given", []),
            "family": official.get("family"),
            "text": official.get("text") or " ".join([*official.get("given", []), official.get("family", "")]).strip(),
        },
        "gender": marker() if field_absent(patient, "gender") else patient.get("gender"),
        "birth_date": marker() if field_absent(patient, "birthDate") else patient.get("birthDate"),
        "identifiers": marker()
        if field_absent(patient, "identifier")
        else [
            {"system": i.get("system"), "value": i.get("value"), "type": _text(i.get("type"))}
            for i in patient.get("identifier", [])
        ],
    }


def active_allergies(allergies: list[Resource]) -> list[dict[str, Any]]:
    active = [a for a in allergies if _status_code(a.get("clinicalStatus")) == "active"]
    return [
        {
            "id": a.get("id"),
            "substance": _text(a.get("code")),
            "codes": _codes(a.get("code")),
            "criticality": a.get("criticality"),
            "category": a.get("category", []),
            "reactions": [_text(m) for r in a.get("reaction", []) for m in r.get("manifestation", [])],
        }
        for a in sorted(active, key=lambda a: a.get("recordedDate", ""))
    ]


def active_medications(requests: list[Resource]) -> list[dict[str, Any]]:
    active = [m for m in requests if m.get("status") == "active"]
    return [
        {
            "id": m.get("id"),
            "medication": _text(m.get("medicationCodeableConcept")),
            "codes": _codes(m.get("medicationCodeableConcept")),
            "authored_on": m.get("authoredOn"),
            "dosage": [d.get("text") for d in m.get("dosageInstruction", []) if d.get("text")],
        }
        for m in sorted(active, key=lambda m: m.get("authoredOn", ""))
    ]


def latest_vital_signs(observations: list[Resource]) -> list[dict[str, Any]]:
    """The most recent final vital-sign observation of each LOINC code."""
    latest: dict[str, Resource] = {}
    for obs in observations:
        if not _is_vital_sign(obs) or obs.get("status") in ("entered-in-error", "cancelled"):
            continue
        code = _first_code(obs.get("code"))
        if code is None:
            continue
        if code not in latest or _when(obs) > _when(latest[code]):
            latest[code] = obs
    return [_vital(obs) for _, obs in sorted(latest.items())]


def _vital(obs: Resource) -> dict[str, Any]:
    vital: dict[str, Any] = {
        "code": _first_code(obs.get("code")),
        "name": _text(obs.get("code")),
        "effective": _when(obs),
    }
    vital.update(_quantity(obs.get("valueQuantity")))
    components = obs.get("component")
    if components:
        vital["components"] = [
            {"code": _first_code(c.get("code")), "name": _text(c.get("code")), **_quantity(c.get("valueQuantity"))}
            for c in components
        ]
    return vital


def _quantity(quantity: Resource | None) -> dict[str, Any]:
    if not quantity:
        return {}
    return {"value": quantity.get("value"), "unit": quantity.get("unit") or quantity.get("code")}


def _is_vital_sign(obs: Resource) -> bool:
    return any(
        coding.get("code") == VITAL_SIGNS
        for category in obs.get("category", [])
        for coding in category.get("coding", [])
    )


def _when(obs: Resource) -> str:
    return str(
        obs.get("effectiveDateTime") or (obs.get("effectivePeriod") or {}).get("start") or obs.get("issued") or ""
    )


def _status_code(concept: Resource | None) -> str | None:
    return _first_code(concept)


def _first_code(concept: Resource | None) -> str | None:
    for coding in (concept or {}).get("coding", []):
        if coding.get("code"):
            return str(coding["code"])
    return None


def _codes(concept: Resource | None) -> list[dict[str, Any]]:
    return [{"system": c.get("system"), "code": c.get("code")} for c in (concept or {}).get("coding", [])]


def _text(concept: Resource | None) -> str | None:
    if not concept:
        return None
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding", []):
        if coding.get("display"):
            return str(coding["display"])
    return None


def parse(resources: list[str]) -> list[Resource]:
    return [json.loads(r) for r in resources]
