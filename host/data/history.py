"""Synthetic patient histories the size real charts reach: the `history` profile of `wardfn data seed`.

The default generator (host.data.synthetic) gives each patient 10 to 40 resources; a hospital's
charts hold hundreds to a few thousand, and a patient followed for decades tens of thousands. Here
each patient gets a size drawn from a log-normal (median 1,000 resources, about one patient in 40
over 10,000, none over 60,000), or the size asked for (`history_patient(seed, index, 50_000)`), and
a chart of exactly that many resources spread over years of follow-up: encounters, vital signs
and laboratory results at those encounters, conditions with their onset (and abatement when
resolved), medications as courses of requests with their validity periods (renewals completed,
the last one active or stopped), allergies, the care team, and for one patient in twenty a
Consent that denies treatment.

Deterministic: patient N comes from its own random stream, derived from (seed, N), so it is the
same whatever the number of patients generated and whatever came before it.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from host.data.draws import at, day_between, new_id
from host.data.labs import lab_observation, lab_panel
from host.data.medications import medication_requests
from host.data.synthetic import (
    CONSENT_DENIAL_RATE,
    REFERENCE_DAY,
    care_team,
    consent_denying_treatment,
    patient_resource,
    vitals_at,
)
from host.data.vocabulary import (
    ALLERGENS,
    CONDITIONS,
    ENCOUNTER_KINDS,
    MRN_SYSTEM,
    PRACTITIONER_IDS,
    REACTIONS,
    SNOMED,
)
from host.store.resources import ResourceStore

Resource = dict[str, Any]

SIZE_MEDIAN = 1_000
SIZE_SIGMA = 1.2
SIZE_MIN = 80
SIZE_MAX = 60_000
# Stored in transactions of about this many resources: bounded memory, and a chart is never split.
BATCH_RESOURCES = 20_000
# History MRNs start here, so that they never meet the default generator's (which count from 1).
MRN_OFFSET = 90_000_000
SSN_SPACE = 99 * 9999
ACUTE_CONDITIONS = {"233604007", "195662009", "10509002", "40055000", "271737000"}
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
# Check-up, visit for a symptom, emergency, admission: how often each kind of encounter comes.
ENCOUNTER_WEIGHTS = (45, 35, 12, 8)
# How much more often a stay's kind of encounter carries observations than a clinic visit.
OBSERVATION_WEIGHT = {"AMB": 1, "EMER": 3, "IMP": 12}


def history_size(seed: int, index: int) -> int:
    """How many resources patient `index` of the history profile holds, unless asked for another size."""
    return _drawn_size(_patient_rng(seed, index))


def history_patient(seed: int, index: int, target_resources: int | None = None) -> list[Resource]:
    """Patient `index`'s chart: `target_resources` resources (exactly, from 20 up), else the drawn size."""
    rng = _patient_rng(seed, index)
    drawn = _drawn_size(rng)  # drawn always, so the rest of the stream is the same whatever the size
    target = drawn if target_resources is None else max(1, target_resources)
    denies_treatment = rng.random() < CONSENT_DENIAL_RATE
    patient = patient_resource(rng, index, _national_identifier(seed, index))
    for identifier in patient["identifier"]:
        if identifier["system"] == MRN_SYSTEM:
            identifier["value"] = f"MRN{MRN_OFFSET + index + 1:08d}"
    return _Chart(rng, patient, target, denies_treatment).resources()


def generate_histories(patients: int, seed: int, target_resources: int | None = None) -> Iterator[list[Resource]]:
    """The charts of patients 0 to `patients` - 1, one list each."""
    for index in range(patients):
        yield history_patient(seed, index, target_resources)


def seed_histories(
    store: ResourceStore,
    patients: int,
    seed: int,
    target_resources: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Add `patients` histories to the store, whole charts per transaction; returns how many resources."""
    batch: list[Resource] = []
    added = 0
    for chart in generate_histories(patients, seed, target_resources):
        batch.extend(chart)
        if len(batch) >= BATCH_RESOURCES:
            added += store.add_resources(batch)
            batch = []
        if progress is not None:
            progress(len(chart))
    if batch:
        added += store.add_resources(batch)
    return added


def _patient_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"wardfn history {seed} {index}")


def _drawn_size(rng: random.Random) -> int:
    return min(SIZE_MAX, max(SIZE_MIN, round(rng.lognormvariate(math.log(SIZE_MEDIAN), SIZE_SIGMA))))


def _national_identifier(seed: int, index: int) -> str:
    """A fictional SSN (999-GG-SSSS), different for every index under 989,901: a keyed permutation of it."""
    number = index % SSN_SPACE
    while True:  # cycle-walking: a permutation of 2**20 values, applied until it lands in the space
        number = _feistel(seed, number)
        if number < SSN_SPACE:
            group, serial = divmod(number, 9999)
            return f"999-{group + 1:02d}-{serial + 1:04d}"


def _feistel(seed: int, value: int) -> int:
    left, right = value >> 10, value & 0x3FF
    for round_ in range(4):
        digest = hashlib.blake2b(f"wardfn ssn {seed} {round_} {right}".encode(), digest_size=2).digest()
        left, right = right, left ^ (int.from_bytes(digest, "big") & 0x3FF)
    return (left << 10) | right


@dataclass(frozen=True)
class Budget:
    """How a chart's resources are shared out between its types."""

    allergies: int
    conditions: int
    medications: int
    encounters: int
    observations: int

    @classmethod
    def of(cls, rng: random.Random, target: int, fixed: int) -> Budget:
        allergies = rng.choices(range(5), weights=(45, 30, 15, 7, 3))[0]
        conditions = min(60, 2 + round(math.sqrt(target) / 4))
        medications = round(target * 0.07)
        encounters = max(1, round(target * 0.08))
        # Small targets: give up medications, then conditions, then allergies, until the rest fits.
        counts = [medications, conditions, allergies]
        excess = fixed + encounters + sum(counts) - target
        for slot in range(len(counts)):
            cut = min(counts[slot], max(0, excess))
            counts[slot] -= cut
            excess -= cut
        medications, conditions, allergies = counts
        observations = max(0, target - fixed - encounters - medications - conditions - allergies)
        return cls(allergies, conditions, medications, encounters, observations)


class _Chart:
    """One patient's chart, drawn in a fixed order from the patient's stream."""

    def __init__(self, rng: random.Random, patient: Resource, target: int, denies_treatment: bool) -> None:
        self.rng = rng
        self.patient = patient
        self.ref = f"Patient/{patient['id']}"
        self.born = date.fromisoformat(patient["birthDate"])
        # Larger charts span more years: from a few for a hundred resources to about fifteen for 50,000.
        years = rng.uniform(2, 5) + 4 * math.log10(max(target, 100) / 100)
        self.first = max(self.born, REFERENCE_DAY - timedelta(days=round(years * 365.25)))
        self.team = rng.sample(PRACTITIONER_IDS, rng.randint(2, 4))
        self.denies_treatment = denies_treatment
        self.budget = Budget.of(rng, target, 2 + int(denies_treatment))

    def resources(self) -> list[Resource]:
        encounters = self._encounters()
        chart = [self.patient, *encounters]
        chart += self._conditions()
        chart += self._allergies()
        chart += medication_requests(self.rng, self.ref, self.first, encounters, self.team, self.budget.medications)
        chart += self._observations(encounters)
        chart.append(care_team(self.rng, self.ref, self.team))
        if self.denies_treatment:
            chart.append(consent_denying_treatment(self.rng, self.ref, encounters[0]))
        return chart

    def _encounters(self) -> list[Resource]:
        rng = self.rng
        days = sorted(day_between(rng, self.first, REFERENCE_DAY) for _ in range(self.budget.encounters))
        encounters = []
        for day in days:
            kind = rng.choices(ENCOUNTER_KINDS, weights=ENCOUNTER_WEIGHTS)[0]
            class_code, class_display, code, display, max_hours = kind
            start = at(day, rng.randrange(7 * 60, 19 * 60, 5))
            end = start + timedelta(minutes=rng.randint(15, 60 * max_hours))
            encounters.append(
                {
                    "resourceType": "Encounter",
                    "id": new_id(rng),
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": class_code,
                        "display": class_display,
                    },
                    "type": [{"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display}],
                    "subject": {"reference": self.ref},
                    "participant": [{"individual": {"reference": f"Practitioner/{rng.choice(self.team)}"}}],
                    "period": {"start": start.isoformat(), "end": end.isoformat()},
                }
            )
        return encounters

    def _conditions(self) -> list[Resource]:
        rng = self.rng
        chronic = [c for c in CONDITIONS if c[0] not in ACUTE_CONDITIONS]
        acute = [c for c in CONDITIONS if c[0] in ACUTE_CONDITIONS]
        count = self.budget.conditions
        chosen = rng.sample(chronic, min(len(chronic), count, 1 + count // 3))
        conditions = []
        for code, display in chosen:
            onset = day_between(rng, max(self.born, self.first - timedelta(days=3650)), REFERENCE_DAY)
            status = rng.choices(("active", "remission", "inactive"), weights=(8, 1, 1))[0]
            abated = day_between(rng, onset, REFERENCE_DAY) if status == "inactive" else None
            conditions.append(self._condition(code, display, "problem-list-item", status, onset, abated))
        for _ in range(count - len(chosen)):
            code, display = rng.choice(acute)
            onset = day_between(rng, self.first, REFERENCE_DAY)
            abated = onset + timedelta(days=rng.randint(7, 30))
            status, abated_on = ("active", None) if abated > REFERENCE_DAY else ("resolved", abated)
            conditions.append(self._condition(code, display, "encounter-diagnosis", status, onset, abated_on))
        return conditions

    def _condition(
        self, code: str, display: str, category: str, status: str, onset: date, abated: date | None
    ) -> Resource:
        condition: Resource = {
            "resourceType": "Condition",
            "id": new_id(self.rng),
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
            "verificationStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
                ]
            },
            "category": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": category}]}
            ],
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
            "subject": {"reference": self.ref},
            "onsetDateTime": onset.isoformat(),
            "recordedDate": day_between(self.rng, onset, min(REFERENCE_DAY, onset + timedelta(days=90))).isoformat(),
        }
        if abated is not None:
            condition["abatementDateTime"] = abated.isoformat()
        return condition

    def _allergies(self) -> list[Resource]:
        rng = self.rng
        allergies = []
        for system, code, display, category in rng.sample(ALLERGENS, self.budget.allergies):
            status = rng.choices(("active", "inactive", "resolved"), weights=(15, 3, 2))[0]
            reaction_code, reaction_display = rng.choice(REACTIONS)
            severe = reaction_code == "39579001"
            onset = day_between(rng, self.born, REFERENCE_DAY)
            allergies.append(
                {
                    "resourceType": "AllergyIntolerance",
                    "id": new_id(rng),
                    "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL, "code": status}]},
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
                    "patient": {"reference": self.ref},
                    "onsetDateTime": onset.isoformat(),
                    "recordedDate": day_between(rng, max(onset, self.first), REFERENCE_DAY).isoformat(),
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
            )
        return allergies

    def _observations(self, encounters: list[Resource]) -> list[Resource]:
        """Vital signs and laboratory panels at distinct times during encounters, until the budget is spent."""
        rng = self.rng
        # Cumulative, computed once: rng.choices would otherwise sum every weight on every draw.
        cumulative = list(itertools.accumulate(OBSERVATION_WEIGHT.get(e["class"]["code"], 1) for e in encounters))
        groups: list[tuple[datetime, Resource, list[Resource]]] = []
        taken: set[datetime] = set()
        left = self.budget.observations
        while left > 0:
            encounter = rng.choices(encounters, cum_weights=cumulative)[0]
            start = datetime.fromisoformat(encounter["period"]["start"])
            end = datetime.fromisoformat(encounter["period"]["end"])
            when = start + timedelta(minutes=rng.randint(0, max(0, int((end - start).total_seconds() // 60))))
            while when in taken:
                when += timedelta(minutes=1)
            taken.add(when)
            if rng.random() < 0.55:
                group = vitals_at(rng, (when.date() - self.born).days / 365.25)
            else:
                group = [lab_observation(rng, test) for test in lab_panel(rng)]
            group = group[:left]
            left -= len(group)
            groups.append((when, encounter, group))
        observations = []
        for when, encounter, group in sorted(groups, key=lambda g: g[0]):
            laboratory = group[0]["category"][0]["coding"][0]["code"] == "laboratory"
            issued = when + (timedelta(hours=rng.randint(1, 6)) if laboratory else timedelta(minutes=5))
            for resource in group:
                resource.update(
                    {
                        "id": new_id(rng),
                        "subject": {"reference": self.ref},
                        "encounter": {"reference": f"Encounter/{encounter['id']}"},
                        "effectiveDateTime": when.isoformat(),
                        "issued": issued.isoformat(),
                    }
                )
                observations.append(resource)
        return observations
