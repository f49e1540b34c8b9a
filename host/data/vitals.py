"""Vital-sign Observations as FHIR R4 (and US Core) shape them: LOINC codes, UCUM quantities, the category."""

from __future__ import annotations

from typing import Any

from host.data.vocabulary import LOINC, OBSERVATION_CATEGORY, UCUM

Resource = dict[str, Any]


def observation(code: str, display: str, value: float, unit: str, ucum: str) -> Resource:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": vital_signs_category(),
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "valueQuantity": quantity(value, unit, ucum),
    }


def blood_pressure(systolic: int, diastolic: int) -> Resource:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": vital_signs_category(),
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
                "valueQuantity": quantity(systolic, "mm[Hg]", "mm[Hg]"),
            },
            {
                "code": {
                    "coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}],
                    "text": "Diastolic blood pressure",
                },
                "valueQuantity": quantity(diastolic, "mm[Hg]", "mm[Hg]"),
            },
        ],
    }


def vital_signs_category() -> list[Resource]:
    return [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}]


def quantity(value: float, unit: str, ucum: str) -> Resource:
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}
