"""Synthetic patients as FHIR R4 resources, for development, tests and benchmarks.

Deterministic: everything comes from the seed, never the clock or the OS, so the same (patients,
seed) always yields the same resources, byte for byte, and a bug seen on one machine can be replayed
on another. No real person is described: national identifiers start with 999 (never issued) and are
random draws (a masked one cannot be worked out from the MRN, which counts patients), phone numbers
are in the 555-01xx fiction range and e-mail addresses are at example.org.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from host.data.vitals import blood_pressure, observation
from host.data.vocabulary import (
    ACT_REASON,
    ALLERGENS,
    AREA_CODES,
    CARE_TEAM_ROLES,
    CITIES,
    CONDITIONS,
    ENCOUNTER_KINDS,
    LOINC,
    MEDICATIONS,
    MRN_SYSTEM,
    NAME_ORIGINS,
    PRACTITIONER_IDS,
    REACTIONS,
    RXNORM,
    SNOMED,
    SSN_SYSTEM,
    STREETS,
    V2_0203,
)
from host.store.resources import ResourceStore

Resource = dict[str, Any]

# The generator's "today": fixed so that output never depends on when it runs.
REFERENCE_DAY = date(2025, 11, 1)
FIRST_BIRTH_DAY = date(1930, 1, 1)
LAST_BIRTH_DAY = date(2020, 12, 31)
FIRST_VISIT_DAY = date(2016, 1, 1)
CONSENT_DENIAL_RATE = 1 / 20


def generate(patients: int, seed: int) -> Iterator[Resource]:
    """Yield the FHIR R4 resources of `patients` synthetic patients, the same for the same seed."""
    rng = random.Random(seed)
    national = _national_identifiers(seed)
    for index in range(patients):
        yield from _patient_record(rng, index, next(national))


def seed_store(store: ResourceStore, patients: int, seed: int) -> int:
    """Add `patients` synthetic patients to the store in one transaction; returns how many."""
    store.add_resources(generate(patients, seed))
    return patients


def _national_identifiers(seed: int) -> Iterator[str]:
    """Fictional SSNs, 999-GG-SSSS (no group 00, no serial 0000), drawn without repeats until all 989,901
    are used; from a stream of their own, so that every other field stays what the seed made it before."""
    rng = random.Random(f"wardfn national identifiers {seed}")
    drawn: set[int] = set()
    while True:
        if len(drawn) == 99 * 9999:
            drawn.clear()
        number = rng.randrange(99 * 9999)
        if number not in drawn:
            drawn.add(number)
            group, serial = divmod(number, 9999)
            yield f"999-{group + 1:02d}-{serial + 1:04d}"


def _patient_record(rng: random.Random, index: int, national_identifier: str) -> Iterator[Resource]:
    patient = patient_resource(rng, index, national_identifier)
    patient_id = patient["id"]
    ref = f"Patient/{patient_id}"
    born = date.fromisoformat(patient["birthDate"])
    yield patient

    encounters = [_encounter(rng, ref, born) for _ in range(rng.randint(1, 3))]
    encounters.sort(key=lambda e: e["period"]["start"])
    yield from encounters

    team = rng.sample(PRACTITIONER_IDS, rng.randint(2, 4))
    for _ in range(rng.randint(0, 4)):
        yield _condition(rng, ref, born)
    for _ in range(rng.randint(0, 3)):
        yield _allergy(rng, ref, born)
    for _ in range(rng.randint(0, 5)):
        yield _medication_request(rng, ref, rng.choice(encounters), rng.choice(team))
    yield from _vital_signs(rng, ref, born, encounters)
    yield care_team(rng, ref, team)
    if rng.random() < CONSENT_DENIAL_RATE:
        yield consent_denying_treatment(rng, ref, encounters[0])


def _new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _day_between(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randint(0, max(0, (last - first).days)))


def _instant(rng: random.Random, day: date, earliest_hour: int = 7, latest_hour: int = 18) -> datetime:
    return datetime(
        day.year,
        day.month,
        day.day,
        rng.randint(earliest_hour, latest_hour),
        rng.randrange(0, 60, 5),
        tzinfo=UTC,
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def patient_resource(rng: random.Random, index: int, national_identifier: str) -> Resource:
    """A Patient. The MRN follows `index`, so that it is unique within one generation."""
    patient_id = _new_id(rng)
    gender = rng.choices(("female", "male", "other", "unknown"), weights=(49, 49, 1, 1))[0]
    female, male, families = rng.choice(NAME_ORIGINS)
    names = {"female": female, "male": male}.get(gender, female + male)
    given = [rng.choice(names)]
    if rng.random() < 0.3:
        given.append(rng.choice([n for n in names if n != given[0]]))
    family = rng.choice(families if rng.random() < 0.85 else rng.choice(NAME_ORIGINS)[2])
    born = _day_between(rng, FIRST_BIRTH_DAY, LAST_BIRTH_DAY)
    city, state, zip_prefix = rng.choice(CITIES)
    handle = f"{given[0]}.{family}{rng.randint(1, 99)}".lower()
    mailbox = "".join(c for c in handle if c.isalnum() or c == ".")
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [{"system": V2_0203, "code": "MR", "display": "Medical Record Number"}],
                    "text": "Medical Record Number",
                },
                "system": MRN_SYSTEM,
                "value": f"MRN{index + 1:08d}",
            },
            {
                "use": "official",
                "type": {
                    "coding": [{"system": V2_0203, "code": "SS", "display": "Social Security number"}],
                    "text": "Social Security number",
                },
                "system": SSN_SYSTEM,
                "value": national_identifier,
            },
        ],
        "name": [{"use": "official", "family": family, "given": given}],
        "telecom": [
            {
                "system": "phone",
                "value": f"({rng.choice(AREA_CODES)}) 555-01{rng.randint(0, 99):02d}",
                "use": rng.choice(("home", "mobile")),
            },
            {"system": "email", "value": f"{mailbox}@example.org", "use": "home"},
        ],
        "gender": gender,
        "birthDate": born.isoformat(),
        "address": [
            {
                "use": "home",
                "line": [f"{rng.randint(1, 999)} {rng.choice(STREETS)}"],
                "city": city,
                "state": state,
                "postalCode": f"{zip_prefix}{rng.randint(0, 99):02d}",
                "country": "US",
            }
        ],
    }


def _encounter(rng: random.Random, ref: str, born: date) -> Resource:
    class_code, class_display, code, display, max_hours = rng.choice(ENCOUNTER_KINDS)
    start = _instant(rng, _day_between(rng, max(born, FIRST_VISIT_DAY), REFERENCE_DAY))
    end = start + timedelta(minutes=rng.randint(15, 60 * max_hours))
    return {
        "resourceType": "Encounter",
        "id": _new_id(rng),
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": class_code,
            "display": class_display,
        },
        "type": [{"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display}],
        "subject": {"reference": ref},
        "period": {"start": _iso(start), "end": _iso(end)},
    }


def _condition(rng: random.Random, ref: str, born: date) -> Resource:
    code, display = rng.choice(CONDITIONS)
    onset = _day_between(rng, born, REFERENCE_DAY)
    status = rng.choices(("active", "resolved"), weights=(3, 1))[0]
    return {
        "resourceType": "Condition",
        "id": _new_id(rng),
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]
        },
        "verificationStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
        "subject": {"reference": ref},
        "onsetDateTime": onset.isoformat(),
        "recordedDate": _day_between(rng, onset, REFERENCE_DAY).isoformat(),
    }


def _allergy(rng: random.Random, ref: str, born: date) -> Resource:
    system, code, display, category = rng.choice(ALLERGENS)
    status = rng.choices(("active", "resolved"), weights=(4, 1))[0]
    reaction_code, reaction_display = rng.choice(REACTIONS)
    severe = reaction_code == "39579001"
    return {
        "resourceType": "AllergyIntolerance",
        "id": _new_id(rng),
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": status,
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": "confirmed",
                }
            ]
        },
        "type": "allergy",
        "category": [category],
        "criticality": "high" if severe else rng.choice(("low", "high", "unable-to-assess")),
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "patient": {"reference": ref},
        "recordedDate": _day_between(rng, born, REFERENCE_DAY).isoformat(),
        "reaction": [
            {
                "manifestation": [
                    {
                        "coding": [{"system": SNOMED, "code": reaction_code, "display": reaction_display}],
                        "text": reaction_display,
                    }
                ],
                "severity": "severe" if severe else rng.choice(("mild", "moderate")),
            }
        ],
    }


def _medication_request(rng: random.Random, ref: str, encounter: Resource, practitioner_id: str) -> Resource:
    code, display, dosage = rng.choice(MEDICATIONS)
    authored = datetime.fromisoformat(encounter["period"]["start"]) + timedelta(minutes=rng.randint(5, 60))
    return {
        "resourceType": "MedicationRequest",
        "id": _new_id(rng),
        "status": rng.choices(("active", "stopped", "completed"), weights=(3, 1, 1))[0],
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": display}],
            "text": display,
        },
        "subject": {"reference": ref},
        "encounter": {"reference": f"Encounter/{encounter['id']}"},
        "authoredOn": _iso(authored),
        "requester": {"reference": f"Practitioner/{practitioner_id}"},
        "dosageInstruction": [{"sequence": 1, "text": dosage}],
    }


def _vital_signs(rng: random.Random, ref: str, born: date, encounters: list[Resource]) -> Iterator[Resource]:
    """All vital signs at 1 to 4 distinct times, each during one of the patient's encounters."""
    times: set[datetime] = set()
    for _ in range(rng.randint(1, 4)):
        encounter = rng.choice(encounters)
        start = datetime.fromisoformat(encounter["period"]["start"])
        taken = start + timedelta(minutes=rng.randint(0, 30))
        while taken in times:
            taken += timedelta(minutes=1)
        times.add(taken)
    for taken in sorted(times):
        encounter_ref = f"Encounter/{_encounter_at(encounters, taken)['id']}"
        age = (taken.date() - born).days / 365.25
        for resource in vitals_at(rng, age):
            resource.update(
                {
                    "id": _new_id(rng),
                    "subject": {"reference": ref},
                    "encounter": {"reference": encounter_ref},
                    "effectiveDateTime": _iso(taken),
                    "issued": _iso(taken + timedelta(minutes=5)),
                }
            )
            yield resource


def _encounter_at(encounters: list[Resource], moment: datetime) -> Resource:
    started = [e for e in encounters if datetime.fromisoformat(e["period"]["start"]) <= moment]
    return started[-1] if started else encounters[0]


def vitals_at(rng: random.Random, age: float) -> list[Resource]:
    """The seven vital-sign Observations taken at once, plausible for `age` (no id, subject or time)."""
    child = age < 16
    height = (50 + 6.5 * age if child else rng.uniform(150, 195)) + rng.uniform(-4, 4)
    weight = (3.5 + 2.6 * age if child else rng.uniform(48, 120)) * rng.uniform(0.9, 1.1)
    heart_rate = rng.randint(90, 140) if age < 2 else rng.randint(55, 105)
    systolic = rng.randint(95, 165)
    return [
        observation("8867-4", "Heart rate", heart_rate, "/min", "/min"),
        blood_pressure(systolic, max(50, systolic - rng.randint(30, 60))),
        observation("8310-5", "Body temperature", round(rng.uniform(36.1, 38.4), 1), "Cel", "Cel"),
        observation("9279-1", "Respiratory rate", rng.randint(12, 24), "/min", "/min"),
        observation("29463-7", "Body weight", round(weight, 1), "kg", "kg"),
        observation("8302-2", "Body height", round(height, 1), "cm", "cm"),
        observation(
            "59408-5",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            rng.randint(91, 100),
            "%",
            "%",
        ),
    ]


def care_team(rng: random.Random, ref: str, team: list[str]) -> Resource:
    """An active CareTeam of these practitioners, the first one the primary care physician."""
    participants = []
    for index, practitioner_id in enumerate(team):
        role_code, role_display = CARE_TEAM_ROLES[0] if index == 0 else rng.choice(CARE_TEAM_ROLES[1:])
        participants.append(
            {
                "role": [
                    {
                        "coding": [{"system": SNOMED, "code": role_code, "display": role_display}],
                        "text": role_display,
                    }
                ],
                "member": {"reference": f"Practitioner/{practitioner_id}"},
            }
        )
    return {
        "resourceType": "CareTeam",
        "id": _new_id(rng),
        "status": "active",
        "name": "Care team",
        "subject": {"reference": ref},
        "participant": participants,
    }


def consent_denying_treatment(rng: random.Random, ref: str, encounter: Resource) -> Resource:
    """An active Consent that denies treatment (TREAT), dated at the encounter's start."""
    return {
        "resourceType": "Consent",
        "id": _new_id(rng),
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"reference": ref},
        "dateTime": encounter["period"]["start"],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {
            "type": "deny",
            "purpose": [{"system": ACT_REASON, "code": "TREAT", "display": "treatment"}],
        },
    }
