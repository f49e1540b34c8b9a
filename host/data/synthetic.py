"""Synthetic patients as FHIR R4 resources, for development, tests and benchmarks.

Deterministic: everything comes from one `random.Random(seed)`, never the clock or the OS,
so the same (patients, seed) always yields the same resources, byte for byte, and a bug
seen on one machine can be replayed on another. No real person is described: national
identifiers start with 999 (never issued), phone numbers are in the 555-01xx fiction range
and e-mail addresses are at example.org.

Long because it is one generator: the resource builders share one random stream, and moving
them apart would make the order of draws (which the determinism rests on) harder to see.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from host.store.resources import ResourceStore

Resource = dict[str, Any]

# The generator's "today": fixed so that output never depends on when it runs.
REFERENCE_DAY = date(2025, 11, 1)
FIRST_BIRTH_DAY = date(1930, 1, 1)
LAST_BIRTH_DAY = date(2020, 12, 31)
FIRST_VISIT_DAY = date(2016, 1, 1)
CONSENT_DENIAL_RATE = 1 / 20

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MRN_SYSTEM = "urn:wardfn:mrn"
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"


def _practitioner_ids() -> tuple[str, ...]:
    rng = random.Random("wardfn practitioners")
    return tuple(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(50))


# The same pool for every seed, so that development tokens can name a practitioner who is
# on some patients' care teams whatever the store was seeded with.
PRACTITIONER_IDS: tuple[str, ...] = _practitioner_ids()

# (female given names, male given names, family names) by origin. Most patients take
# all their names from one origin; some families mix, as they do.
NAME_ORIGINS: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("Olivia", "Emma", "Charlotte", "Amelia", "Harper", "Grace"),
        ("Liam", "Noah", "Oliver", "James", "William", "Henry"),
        ("Smith", "Johnson", "Williams", "Brown", "Miller", "Davis", "Wilson", "Taylor"),
    ),
    (
        ("Maria", "Sofia", "Valentina", "Camila", "Lucia", "Isabella"),
        ("Jose", "Mateo", "Santiago", "Diego", "Luis", "Carlos"),
        ("Garcia", "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez"),
    ),
    (
        ("Mei", "Xiu", "Li Na", "Yan", "Hui"),
        ("Wei", "Jun", "Hao", "Lei", "Ming"),
        ("Wang", "Li", "Zhang", "Chen", "Liu"),
    ),
    (
        ("Priya", "Ananya", "Anjali", "Divya", "Kavya"),
        ("Arjun", "Rohan", "Vikram", "Rahul", "Aditya"),
        ("Patel", "Sharma", "Singh", "Kumar", "Reddy"),
    ),
    (
        ("Chiamaka", "Ngozi", "Folake", "Abena", "Thandiwe"),
        ("Chinedu", "Emeka", "Kwame", "Sipho", "Tunde"),
        ("Okafor", "Adeyemi", "Mensah", "Nkosi", "Okonkwo"),
    ),
    (
        ("Aisha", "Fatima", "Leila", "Noor", "Yasmin"),
        ("Mohammed", "Omar", "Youssef", "Tariq", "Karim"),
        ("Haddad", "Khalil", "Rahman", "Nasser", "Saleh"),
    ),
    (("Linh", "Mai", "Lan", "Thu"), ("Minh", "Duc", "Huy", "Quang"), ("Nguyen", "Tran", "Le", "Pham")),
    (("Yuki", "Haruka", "Aiko", "Emi"), ("Hiroshi", "Kenji", "Takeshi", "Ren"), ("Tanaka", "Sato", "Suzuki")),
    (("Ji-woo", "Seo-yeon", "Min-seo"), ("Min-jun", "Ji-ho", "Seo-jun"), ("Kim", "Park", "Lee", "Choi")),
    (
        ("Siobhan", "Aoife", "Agnieszka", "Zofia", "Ingrid", "Astrid"),
        ("Cian", "Padraig", "Piotr", "Jakub", "Lars", "Erik"),
        ("Murphy", "O'Brien", "Kelly", "Kowalski", "Nowak", "Hansen", "Johansson"),
    ),
)
STREETS = ("Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Elm St", "Park Rd", "Lake View Dr", "Hill St")
CITIES = (
    ("Boston", "MA", "021"),
    ("Worcester", "MA", "016"),
    ("Springfield", "MA", "011"),
    ("Providence", "RI", "029"),
    ("Hartford", "CT", "061"),
    ("Albany", "NY", "122"),
    ("Burlington", "VT", "054"),
    ("Portland", "ME", "041"),
)
AREA_CODES = ("617", "508", "413", "401", "860", "518", "802", "207")

ENCOUNTER_KINDS = (
    ("AMB", "ambulatory", "185349003", "Encounter for check up (procedure)", 1),
    ("AMB", "ambulatory", "185345009", "Encounter for symptom (procedure)", 1),
    ("EMER", "emergency", "50849002", "Emergency room admission (procedure)", 5),
    ("IMP", "inpatient encounter", "32485007", "Hospital admission (procedure)", 72),
)

CONDITIONS = (
    ("44054006", "Diabetes mellitus type 2 (disorder)"),
    ("59621000", "Essential hypertension (disorder)"),
    ("195967001", "Asthma (disorder)"),
    ("13645005", "Chronic obstructive lung disease (disorder)"),
    ("49436004", "Atrial fibrillation (disorder)"),
    ("35489007", "Depressive disorder (disorder)"),
    ("197480006", "Anxiety disorder (disorder)"),
    ("55822004", "Hyperlipidemia (disorder)"),
    ("84114007", "Heart failure (disorder)"),
    ("69896004", "Rheumatoid arthritis (disorder)"),
    ("396275006", "Osteoarthritis (disorder)"),
    ("40055000", "Chronic sinusitis (disorder)"),
    ("233604007", "Pneumonia (disorder)"),
    ("271737000", "Anemia (disorder)"),
    ("195662009", "Acute viral pharyngitis (disorder)"),
    ("10509002", "Acute bronchitis (disorder)"),
    ("709044004", "Chronic kidney disease (disorder)"),
    ("73430006", "Sleep apnea (disorder)"),
    ("414916001", "Obesity (disorder)"),
)

# (system, code, display, category)
ALLERGENS = (
    (RXNORM, "7980", "Penicillin G", "medication"),
    (RXNORM, "723", "Amoxicillin", "medication"),
    (RXNORM, "10180", "Sulfamethoxazole", "medication"),
    (RXNORM, "1191", "Aspirin", "medication"),
    (RXNORM, "5640", "Ibuprofen", "medication"),
    (RXNORM, "2670", "Codeine", "medication"),
    (RXNORM, "7052", "Morphine", "medication"),
    (SNOMED, "762952008", "Peanut (substance)", "food"),
    (SNOMED, "227493005", "Cashew nut (substance)", "food"),
    (SNOMED, "102263004", "Eggs (edible) (substance)", "food"),
    (SNOMED, "3718001", "Cow's milk (substance)", "food"),
    (SNOMED, "227037002", "Fish - dietary (substance)", "food"),
    (SNOMED, "111088007", "Latex (substance)", "environment"),
    (SNOMED, "288328004", "Bee venom (substance)", "environment"),
    (SNOMED, "260147004", "House dust mite (organism)", "environment"),
    (SNOMED, "264287008", "Animal dander (substance)", "environment"),
    (SNOMED, "256277009", "Grass pollen (substance)", "environment"),
)
REACTIONS = (
    ("247472004", "Wheal (finding)"),
    ("271807003", "Eruption of skin (disorder)"),
    ("39579001", "Anaphylaxis (disorder)"),
    ("49727002", "Cough (finding)"),
    ("267036007", "Dyspnea (finding)"),
    ("422587007", "Nausea (finding)"),
    ("418290006", "Itching (finding)"),
    ("76067001", "Sneezing (finding)"),
    ("21522001", "Abdominal pain (finding)"),
    ("267038008", "Edema (finding)"),
)

MEDICATIONS = (
    ("314076", "lisinopril 10 MG Oral Tablet", "Take 1 tablet by mouth once daily"),
    ("861007", "metformin hydrochloride 500 MG Oral Tablet", "Take 1 tablet by mouth twice daily with meals"),
    ("197361", "amlodipine 5 MG Oral Tablet", "Take 1 tablet by mouth once daily"),
    ("259255", "atorvastatin 80 MG Oral Tablet", "Take 1 tablet by mouth at bedtime"),
    ("312961", "simvastatin 20 MG Oral Tablet", "Take 1 tablet by mouth in the evening"),
    ("310798", "hydrochlorothiazide 25 MG Oral Tablet", "Take 1 tablet by mouth every morning"),
    ("866924", "metoprolol tartrate 25 MG Oral Tablet", "Take 1 tablet by mouth twice daily"),
    ("855332", "warfarin sodium 5 MG Oral Tablet", "Take as directed; dose adjusted to INR"),
    ("308182", "amoxicillin 250 MG Oral Capsule", "Take 1 capsule by mouth three times daily for 7 days"),
    ("310965", "ibuprofen 200 MG Oral Tablet", "Take 1 to 2 tablets by mouth every 6 hours as needed"),
    ("313782", "acetaminophen 325 MG Oral Tablet", "Take 2 tablets by mouth every 6 hours as needed"),
    ("243670", "aspirin 81 MG Oral Tablet", "Take 1 tablet by mouth once daily"),
    ("312938", "sertraline 100 MG Oral Tablet", "Take 1 tablet by mouth once daily"),
    ("849574", "naproxen sodium 220 MG Oral Tablet", "Take 1 tablet by mouth every 12 hours as needed"),
    ("745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "Inhale 2 puffs every 4 hours as needed"),
    ("895994", "fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler", "Inhale 2 puffs twice daily"),
)

CARE_TEAM_ROLES = (
    ("446050000", "Primary care physician"),
    ("309343006", "Physician"),
    ("224535009", "Registered nurse"),
    ("46255001", "Pharmacist"),
)

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def generate(patients: int, seed: int) -> Iterator[Resource]:
    """Yield the FHIR R4 resources of `patients` synthetic patients, the same for the same seed."""
    rng = random.Random(seed)
    for index in range(patients):
        yield from _patient_record(rng, index)


def seed_store(store: ResourceStore, patients: int, seed: int) -> int:
    """Add `patients` synthetic patients to the store in one transaction; returns how many."""
    store.add_resources(generate(patients, seed))
    return patients


def _patient_record(rng: random.Random, index: int) -> Iterator[Resource]:
    patient = _patient(rng, index)
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
    yield _care_team(rng, ref, team)
    if rng.random() < CONSENT_DENIAL_RATE:
        yield _consent_denying_treatment(rng, ref, encounters[0])


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


def _patient(rng: random.Random, index: int) -> Resource:
    """A Patient. Identifiers follow `index`, so that they are unique within one generation."""
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
                "value": f"999-{10 + index // 9000 % 90:02d}-{1000 + index % 9000:04d}",
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
        for resource in _vitals_at(rng, age):
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


def _vitals_at(rng: random.Random, age: float) -> list[Resource]:
    child = age < 16
    height = (50 + 6.5 * age if child else rng.uniform(150, 195)) + rng.uniform(-4, 4)
    weight = (3.5 + 2.6 * age if child else rng.uniform(48, 120)) * rng.uniform(0.9, 1.1)
    heart_rate = rng.randint(90, 140) if age < 2 else rng.randint(55, 105)
    systolic = rng.randint(95, 165)
    return [
        _observation("8867-4", "Heart rate", heart_rate, "/min", "/min"),
        _blood_pressure(systolic, max(50, systolic - rng.randint(30, 60))),
        _observation("8310-5", "Body temperature", round(rng.uniform(36.1, 38.4), 1), "Cel", "Cel"),
        _observation("9279-1", "Respiratory rate", rng.randint(12, 24), "/min", "/min"),
        _observation("29463-7", "Body weight", round(weight, 1), "kg", "kg"),
        _observation("8302-2", "Body height", round(height, 1), "cm", "cm"),
        _observation(
            "59408-5",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            rng.randint(91, 100),
            "%",
            "%",
        ),
    ]


def _observation(code: str, display: str, value: float, unit: str, ucum: str) -> Resource:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": _vital_signs_category(),
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "valueQuantity": _quantity(value, unit, ucum),
    }


def _blood_pressure(systolic: int, diastolic: int) -> Resource:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": _vital_signs_category(),
        "code": {
            "coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}],
            "text": "Blood pressure panel",
        },
        "component": [
            {
                "code": {
                    "coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}],
                    "text": "Systolic blood pressure",
                },
                "valueQuantity": _quantity(systolic, "mm[Hg]", "mm[Hg]"),
            },
            {
                "code": {
                    "coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}],
                    "text": "Diastolic blood pressure",
                },
                "valueQuantity": _quantity(diastolic, "mm[Hg]", "mm[Hg]"),
            },
        ],
    }


def _vital_signs_category() -> list[Resource]:
    return [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}]


def _quantity(value: float, unit: str, ucum: str) -> Resource:
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}


def _care_team(rng: random.Random, ref: str, team: list[str]) -> Resource:
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


def _consent_denying_treatment(rng: random.Random, ref: str, encounter: Resource) -> Resource:
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
