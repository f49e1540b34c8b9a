"""med_safety's logic under plain CPython: which medication-allergy pairs it flags, and why."""

from __future__ import annotations

from typing import Any

import pytest

from tests.functions.fake_query import querier
from tests.functions.loader import load

safety = load("med_safety", "safety")
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"


def allergy(system: str, code: str, display: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {"coding": [{"code": status}]},
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
    }


def medication(code: str, display: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": f"mr-{code}",
        "status": status,
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}]},
    }


def run(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return safety.check(querier(resources))


@pytest.mark.parametrize(
    ("allergen", "drug", "severity"),
    [
        (allergy(RXNORM, "7984", "Penicillin V"), medication("834061", "Penicillin V Potassium 250 MG Oral Tablet"), "high"),
        (allergy(RXNORM, "7980", "Penicillin G"), medication("308182", "amoxicillin 250 MG Oral Capsule"), "high"),
        (allergy(SNOMED, "91936005", "Allergy to penicillin"), medication("562251", "Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet"), "high"),
        (allergy(RXNORM, "723", "Amoxicillin"), medication("309097", "Cefuroxime 250 MG Oral Tablet"), "moderate"),
        (allergy(RXNORM, "5640", "Ibuprofen"), medication("849574", "Naproxen sodium 220 MG Oral Tablet"), "high"),
        (allergy(RXNORM, "1191", "Aspirin"), medication("243670", "aspirin 81 MG Oral Tablet"), "high"),
        (allergy(RXNORM, "2670", "Codeine"), medication("1049221", "Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG Oral Tablet"), "high"),
    ],
)  # fmt: skip
def test_conflicts_are_flagged_with_codes_and_reasons(
    allergen: dict[str, Any], drug: dict[str, Any], severity: str
) -> None:
    result = run([allergen, drug])
    [flag] = result["flags"]
    assert flag["severity"] == severity and result["safe"] is False
    assert flag["medication_request"] == drug["id"]
    assert flag["allergen_code"]["code"] == allergen["code"]["coding"][0]["code"]
    assert flag["medication_code"]["system"] == RXNORM
    assert flag["reason"]


@pytest.mark.parametrize(
    ("allergen", "drug"),
    [
        (allergy(RXNORM, "7984", "Penicillin V", status="resolved"), medication("834061", "Penicillin V Potassium 250 MG")),
        (allergy(RXNORM, "7984", "Penicillin V"), medication("834061", "Penicillin V Potassium 250 MG", status="stopped")),
        (allergy(SNOMED, "762952008", "Peanut (substance)"), medication("313782", "Acetaminophen 325 MG Oral Tablet")),
        (allergy(RXNORM, "5640", "Ibuprofen"), medication("313782", "Acetaminophen 325 MG Oral Tablet")),
        (allergy(RXNORM, "1191", "Aspirin"), medication("314076", "lisinopril 10 MG Oral Tablet")),
    ],
)  # fmt: skip
def test_no_flag_without_an_active_conflict(allergen: dict[str, Any], drug: dict[str, Any]) -> None:
    result = run([allergen, drug])
    assert result["flags"] == [] and result["safe"] is True


def test_counts_what_it_checked() -> None:
    result = run([
        allergy(RXNORM, "7984", "Penicillin V"), allergy(SNOMED, "111088007", "Latex", status="inactive"),
        medication("834061", "Penicillin V Potassium"), medication("313782", "Acetaminophen"),
        medication("308182", "amoxicillin", status="stopped"),
    ])  # fmt: skip
    assert result["checked"] == {"active_medications": 2, "active_allergies": 1}
    assert len(result["flags"]) == 1
