"""Laboratory Observations as FHIR R4 shapes them: LOINC codes, UCUM quantities, category laboratory.

The panels a chart accumulates over years of follow-up (metabolic panel, blood count, lipids, HbA1c,
INR), with reference ranges wide enough to hold the abnormal values real charts carry.
"""

from __future__ import annotations

import random
from typing import Any

from host.data.vitals import quantity
from host.data.vocabulary import LOINC, OBSERVATION_CATEGORY

Resource = dict[str, Any]

# (LOINC code, display, UCUM unit, low, high, decimals)
Test = tuple[str, str, str, float, float, int]

BASIC_METABOLIC: tuple[Test, ...] = (
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 65, 260, 0),
    ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 6, 45, 0),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.5, 3.2, 2),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 128, 148, 0),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.1, 5.8, 1),
    ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 95, 110, 0),
    ("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L", 20, 31, 0),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 8.2, 10.6, 1),
)
BLOOD_COUNT: tuple[Test, ...] = (
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 3.5, 14.0, 1),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 8.5, 17.5, 1),
    ("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 28, 52, 1),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 120, 420, 0),
)
LIPIDS: tuple[Test, ...] = (
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 140, 280, 0),
    ("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "mg/dL", 60, 190, 0),
    ("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 30, 85, 0),
    ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 60, 320, 0),
)
HBA1C: tuple[Test, ...] = (("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.8, 10.5, 1),)
INR: tuple[Test, ...] = (("6301-6", "INR in Platelet poor plasma by Coagulation assay", "{INR}", 0.9, 3.8, 1),)

# (panel, weight): how often each is drawn; a metabolic panel and a blood count are the daily bread.
PANELS: tuple[tuple[tuple[Test, ...], int], ...] = (
    (BASIC_METABOLIC, 5),
    (BLOOD_COUNT, 5),
    (LIPIDS, 1),
    (HBA1C, 1),
    (INR, 1),
)


def lab_panel(rng: random.Random) -> tuple[Test, ...]:
    """A panel drawn as often as real charts hold it."""
    return rng.choices([panel for panel, _ in PANELS], weights=[weight for _, weight in PANELS])[0]


def lab_observation(rng: random.Random, test: Test) -> Resource:
    """A final laboratory result of `test`, its value drawn within the test's range (no id, subject or time)."""
    code, display, unit, low, high, decimals = test
    value = round(rng.uniform(low, high), decimals)
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": laboratory_category(),
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "valueQuantity": quantity(int(value) if decimals == 0 else value, unit, unit),
    }


def laboratory_category() -> list[Resource]:
    return [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"}]}]
