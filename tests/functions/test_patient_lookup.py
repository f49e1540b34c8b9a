"""patient_lookup's logic under plain CPython: the summary it builds from FHIR resources."""

from __future__ import annotations

from typing import Any

import pytest

from host.data.synthetic import generate
from tests.functions.fake_query import querier
from tests.functions.loader import load

summary = load("patient_lookup", "summary")


def _reader(resources: list[dict[str, Any]]) -> Any:
    def read(resource_type: str) -> list[dict[str, Any]]:
        return [r for r in resources if r["resourceType"] == resource_type]

    return read


def _vital(code: str, when: str, value: float, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "category": [{"coding": [{"code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": code}]},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "x"},
    }


def test_latest_vital_sign_of_each_code_wins() -> None:
    observations = [
        _vital("8867-4", "2024-01-01T00:00:00Z", 70),
        _vital("8867-4", "2025-01-01T00:00:00Z", 88),
        _vital("8867-4", "2026-01-01T00:00:00Z", 999, status="entered-in-error"),
        _vital("8310-5", "2023-05-01T00:00:00Z", 37.2),
        {**_vital("2339-0", "2026-01-01T00:00:00Z", 5), "category": [{"coding": [{"code": "laboratory"}]}]},
    ]
    latest = {v["code"]: v["value"] for v in summary.latest_vital_signs(observations)}
    assert latest == {"8867-4": 88, "8310-5": 37.2}


def test_only_active_allergies_and_medications() -> None:
    allergies = [
        {"clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Peanut"}},
        {"clinicalStatus": {"coding": [{"code": "resolved"}]}, "code": {"text": "Latex"}},
    ]
    medications = [
        {"status": "active", "medicationCodeableConcept": {"coding": [{"code": "1", "display": "Metformin"}]}},
        {"status": "stopped", "medicationCodeableConcept": {"text": "Warfarin"}},
    ]
    assert [a["substance"] for a in summary.active_allergies(allergies)] == ["Peanut"]
    assert [m["medication"] for m in summary.active_medications(medications)] == ["Metformin"]


def test_no_patient_resource_is_not_found() -> None:
    with pytest.raises(summary.PatientNotFound):
        summary.build_summary(_reader([]), querier([]))


@pytest.mark.parametrize("index", range(5))
def test_summary_of_generated_patients_counts_what_the_records_hold(index: int) -> None:
    resources = list(generate(5, 99))
    patient = [r for r in resources if r["resourceType"] == "Patient"][index]
    own = [r for r in resources if r["id"] == patient["id"] or _subject(r) == patient["id"]]
    built = summary.build_summary(_reader(own), querier(own))
    assert built["demographics"]["id"] == patient["id"]
    assert built["demographics"]["birth_date"] == patient["birthDate"]
    expected_allergies = [
        r
        for r in own
        if r["resourceType"] == "AllergyIntolerance" and r["clinicalStatus"]["coding"][0]["code"] == "active"
    ]
    expected_medications = [r for r in own if r["resourceType"] == "MedicationRequest" and r["status"] == "active"]
    assert len(built["allergies"]) == len(expected_allergies)
    assert len(built["medications"]) == len(expected_medications)
    vital_codes = {
        r["code"]["coding"][0]["code"]
        for r in own
        if r["resourceType"] == "Observation" and r["category"][0]["coding"][0]["code"] == "vital-signs"
    }
    assert {v["code"] for v in built["vital_signs"]} == vital_codes


def _subject(resource: dict[str, Any]) -> str | None:
    reference = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return reference.removeprefix("Patient/") or None
