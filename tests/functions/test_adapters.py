"""Every function's WIT adapter (`app.py`) under plain CPython: what each answers, and which WIT error
case each failure becomes, with the host's imports played by the test."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.functions.conftest import Guest, Outcome, Records

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "name": [{"family": "Doe", "given": ["Jo"]}],
    "birthDate": "1970-05-01",
}
ALLERGY = {
    "resourceType": "AllergyIntolerance",
    "id": "a1",
    "clinicalStatus": {"coding": [{"code": "active"}]},
    "code": {"text": "Penicillin"},
}
MEDICATION = {
    "resourceType": "MedicationRequest",
    "id": "m1",
    "status": "active",
    "subject": {"reference": "Patient/p1"},
}


def store(denied: set[str] | None = None, **changes: Any) -> Records:
    """A patient with one active allergy and one active medication; `changes` replace fields of Records."""
    resources = {r["resourceType"]: [json.dumps(r)] for r in (PATIENT, ALLERGY, MEDICATION)}
    return Records(resources=resources, denied=denied or set(), **changes)


def error(case: str, message: str) -> Callable[[Outcome], bool]:
    return lambda outcome: (outcome.error, outcome.message) == (case, message)


def body(check: Callable[[Any], bool]) -> Callable[[Outcome], bool]:
    return lambda outcome: outcome.error is None and check(outcome.body)


WITHHELD = {"withheld": True, "reason": "not granted for this purpose of use"}
CORRUPT_PATIENT = Records(resources={"Patient": ["{not json"]})

CASES = [
    # patient_lookup
    ("patient_lookup", None, {}, store(), error("InvalidInput", "patient_lookup needs a patient")),
    ("patient_lookup", "p1", {}, store(), body(lambda b: b["demographics"]["id"] == "p1" and len(b["allergies"]) == 1)),
    ("patient_lookup", "p1", {}, store({"AllergyIntolerance"}), body(lambda b: b["allergies"] == WITHHELD and len(b["medications"]) == 1)),
    ("patient_lookup", "p1", {}, store({"Patient"}), body(lambda b: b["demographics"] == WITHHELD and len(b["allergies"]) == 1)),
    ("patient_lookup", "p1", {}, Records(resources={}), error("NotFound", "patient not found")),
    ("patient_lookup", "p1", {}, store(unavailable=True), error("Internal", "records unavailable")),
    ("patient_lookup", "p1", {}, CORRUPT_PATIENT, error("Internal", "JSONDecodeError")),
    ("patient_lookup", "p1", {}, store(query_invalid=True), error("Internal", "records query refused")),
    # deidentify
    ("deidentify", None, {}, store(), error("InvalidInput", "deidentify needs a patient")),
    ("deidentify", "p1", {}, store(), body(lambda b: b["pseudonym"] == "pseudo-p1" and len(b["resources"]) == 3)),
    ("deidentify", "p1", {}, store({"MedicationRequest"}), body(lambda b: len(b["resources"]) == 2 and b["withheld"] == {"MedicationRequest": WITHHELD})),
    ("deidentify", "p1", {}, store({"Patient"}), body(lambda b: b["age"] == WITHHELD and b["withheld"] == {"Patient": WITHHELD})),
    ("deidentify", "p1", {}, Records(resources={}), error("NotFound", "patient not found")),
    ("deidentify", "p1", {}, store(pseudonym_denied=True), error("Internal", "records unavailable")),
    ("deidentify", "p1", {}, store(unavailable=True), error("Internal", "records unavailable")),
    ("deidentify", "p1", {}, CORRUPT_PATIENT, error("Internal", "JSONDecodeError")),
    # fhir_export
    ("fhir_export", None, {}, store(), error("InvalidInput", "fhir_export needs a patient")),
    ("fhir_export", "p1", "[1]", store(), error("InvalidInput", "args must be a JSON object")),
    ("fhir_export", "p1", {"type": "document"}, store(), error("InvalidInput", "unsupported bundle type")),
    ("fhir_export", "p1", {"type": "collection"}, store(), body(lambda b: b["type"] == "collection" and len(b["entry"]) == 3)),
    ("fhir_export", "p1", {}, store({"AllergyIntolerance"}), body(lambda b: b["total"] == 2 and b["entry"][-1]["resource"]["issue"][0]["expression"] == ["AllergyIntolerance"])),
    ("fhir_export", "p1", {}, Records(resources={}), error("NotFound", "patient not found")),
    ("fhir_export", "p1", {}, store(unavailable=True), error("Internal", "records unavailable")),
    # med_safety
    ("med_safety", None, {}, store(), error("InvalidInput", "med_safety needs a patient")),
    ("med_safety", "p1", {}, store(), body(lambda b: b["checked"] == {"active_medications": 1, "active_allergies": 1})),
    ("med_safety", "p1", {}, store({"AllergyIntolerance"}), body(lambda b: b["safe"] is None and b["withheld"] == ["AllergyIntolerance"] and b["checked"]["active_allergies"] == WITHHELD)),
    ("med_safety", "p1", {}, store({"Patient"}), body(lambda b: b["safe"] is True and b["withheld"] == [])),
    ("med_safety", "p1", {}, Records(resources={}), error("NotFound", "patient not found")),
    ("med_safety", "p1", {}, store(unavailable=True), error("Internal", "records unavailable")),
    ("med_safety", "p1", {}, CORRUPT_PATIENT, error("Internal", "JSONDecodeError")),
    ("med_safety", "p1", {}, store(query_invalid=True), error("Internal", "records query refused")),
    # clinical_calc
    ("clinical_calc", "p1", {}, store(), error("InvalidInput", "clinical_calc works on no patient")),
    ("clinical_calc", None, "[]", store(), error("InvalidInput", "args must be a JSON object")),
    ("clinical_calc", None, "{", store(), error("InvalidInput", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")),
    ("clinical_calc", None, {"calculator": "bmi", "weight_kg": 70}, store(), error("InvalidInput", "height_cm must be a number")),
    ("clinical_calc", None, {"calculator": "bmi", "weight_kg": 70, "height_cm": 175}, store(), body(lambda b: b["value"] == 22.9)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("function", "patient_id", "args", "records", "expected"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_adapter_answers(
    guest: Guest,
    monkeypatch: pytest.MonkeyPatch,
    function: str,
    patient_id: str | None,
    args: Any,
    records: Records,
    expected: Callable[[Outcome], bool],
) -> None:
    guest.serve(records, monkeypatch)

    outcome = guest.call(function, patient_id, args=args if isinstance(args, str) else json.dumps(args))

    assert expected(outcome), outcome


@pytest.mark.parametrize(
    ("args", "directory_error", "expected"),
    [
        ({"name": "Doe"}, None, body(lambda b: b == {"count": 1, "matches": [
            {"id": "p1", "name": "Jo Doe", "birth_date": "1970-05-01", "gender": None}]})),
        ("[]", None, error("InvalidInput", "args must name a name, a birth_date or an identifier")),
        ({"name": "Doe"}, "denied", error("InvalidInput", "the directory refused this search")),
        ({"name": "Doe"}, "unavailable", error("Internal", "directory unavailable")),
        ({"name": "Doe"}, "crash", error("Internal", "RuntimeError")),
    ],
)  # fmt: skip
def test_patient_search_adapter(
    guest: Guest,
    monkeypatch: pytest.MonkeyPatch,
    args: Any,
    directory_error: str | None,
    expected: Callable[[Outcome], bool],
) -> None:
    asked: list[tuple[Any, int]] = []

    def search(query: Any, limit: int) -> list[Any]:
        asked.append((query, limit))
        if directory_error == "denied":
            raise guest.Err(guest.records.AccessError_Denied("no"))
        if directory_error == "unavailable":
            raise guest.Err(guest.records.AccessError_Unavailable("down"))
        if directory_error == "crash":
            raise RuntimeError("boom")
        return [guest.directory.Match(id="p1", name="Jo Doe", birth_date="1970-05-01", gender=None)]

    monkeypatch.setattr(guest.directory, "search", search)

    outcome = guest.call("patient_search", args=args if isinstance(args, str) else json.dumps(args))

    assert expected(outcome), outcome
    if isinstance(args, dict):
        assert asked == [(guest.directory.Query(name="Doe", birth_date=None, identifier=None), 20)]
