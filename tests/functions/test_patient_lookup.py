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


def _whole_history_summary(own: list[dict[str, Any]]) -> dict[str, Any]:
    """The sections as the summary built them when it read every resource of each type."""
    of = _reader(own)
    return {
        "allergies": summary.active_allergies(of("AllergyIntolerance")),
        "medications": summary.active_medications(of("MedicationRequest")),
        "vital_signs": summary.latest_vital_signs(of("Observation")),
    }


def _history() -> list[dict[str, Any]]:
    """Years of vital signs with ties, a later entered-in-error and cancelled value, a second coding,
    dates of several precisions, labs beside them; allergies and medications of every status."""
    resources: list[dict[str, Any]] = [{"resourceType": "Patient", "id": "p1"}]
    for n in range(300):
        code = summary.VITAL_SIGN_CODES[n % 7]
        when = f"20{10 + n % 15:02d}-{1 + n % 12:02d}-{1 + n % 27:02d}T{n % 24:02d}:00:00-05:00"
        resources.append({**_vital(code, when, n), "id": f"o{n:04d}"})
    resources += [
        {**_vital("8867-4", "2030-01-01", 999, status="entered-in-error"), "id": "oerr"},
        {**_vital("8867-4", "2030-02-01", 998, status="cancelled"), "id": "ocan"},
        {**_vital("8310-5", "2031", 36.6), "id": "oyear"},
        {**_vital("8310-5", "2031", 36.9), "id": "oyeartie"},
        {**_vital("2708-6", "2032-01-01T00:00:00Z", 97), "id": "osat"},
        {**_vital("2339-0", "2040-01-01", 5), "id": "olab", "category": [{"coding": [{"code": "laboratory"}]}]},
    ]
    resources[-2]["code"]["coding"].append({"system": "http://loinc.org", "code": "59408-5"})
    for n, status in enumerate(["active", "inactive", "resolved", "active"]):
        resources.append(
            {
                "resourceType": "AllergyIntolerance",
                "id": f"a{n}",
                "clinicalStatus": {"coding": [{"code": status}]},
                "code": {"text": f"allergen {n}"},
                "recordedDate": f"202{4 - n}-01-01",
            }
        )
    for n, status in enumerate(["active", "stopped", "completed", "active", "on-hold"]):
        resources.append(
            {
                "resourceType": "MedicationRequest",
                "id": f"m{n}",
                "status": status,
                "medicationCodeableConcept": {"text": f"drug {n}"},
                "authoredOn": f"202{5 - n}-01-01",
            }
        )
    return resources


@pytest.mark.parametrize("index", range(5))
def test_asking_for_what_it_shows_answers_as_reading_everything(index: int) -> None:
    resources = list(generate(5, 7)) if index < 4 else _history()
    patient = [r for r in resources if r["resourceType"] == "Patient"][index if index < 4 else 0]
    own = [r for r in resources if r["id"] == patient["id"] or _subject(r) == patient["id"]]
    own = own if index < 4 else resources
    built = summary.build_summary(_reader(own), querier(own))
    assert {key: built[key] for key in ("allergies", "medications", "vital_signs")} == _whole_history_summary(own)


def test_the_summary_reads_no_whole_history() -> None:
    asked: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    query = querier(_history())

    def recording(resource_type: str, params: Any) -> list[dict[str, Any]]:
        asked.append((resource_type, tuple(params)))
        return query(resource_type, params)

    summary.build_summary(_reader(_history()), recording)
    assert {t for t, _ in asked} == {"AllergyIntolerance", "MedicationRequest", "Observation"}
    assert all(params for _, params in asked)
    # One latest Observation a code; widened once for the code another Observation carries second.
    counts = [int(dict(params)["_count"]) for t, params in asked if t == "Observation"]
    assert len(counts) == len(summary.VITAL_SIGN_CODES) + 1 and sorted(counts)[-2:] == [1, 4]


def test_latest_is_by_instant_across_zones() -> None:
    # The host orders by the instant; 10:00+02:00 is before 09:00Z though it sorts after it as text.
    own = [
        {**_vital("8867-4", "2024-01-01T10:00:00+02:00", 70), "id": "o1"},
        {**_vital("8867-4", "2024-01-01T09:00:00Z", 80), "id": "o2"},
    ]
    built = summary.build_summary(_reader([{"resourceType": "Patient", "id": "p1"}]), querier(own))
    assert [v["value"] for v in built["vital_signs"]] == [80]


def _subject(resource: dict[str, Any]) -> str | None:
    reference = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return reference.removeprefix("Patient/") or None
