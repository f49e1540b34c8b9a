"""Generalising as Safe Harbor allows: birth year and age (90 or older for the oldest), three ZIP digits,
years of dates; idempotent, so that the check on the answer can apply it again."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from host.errors import FunctionOutputRejected, PolicyUnavailable
from host.policy.document import read_document
from host.policy.generalise import AGE_EXTENSION, parse_generalisation
from host.policy.obligations import apply, apply_to_text, check_output

TODAY = datetime.date(2025, 6, 1)
RESEARCH = frozenset({"Patient.birthDate:year", "Patient.address:zip3", "*.*:year"})
PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "birthDate": "1962-09-14",
    "address": [
        {"use": "home", "line": ["12 Elm Street"], "city": "Springfield", "state": "MA", "postalCode": "02139"},
        {"line": ["1 Pine Road"], "city": "Smalltown", "state": "WY", "postalCode": "82301-1234"},
    ],
}
ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "e1",
    "period": {"start": "2019-03-04T10:15:00+01:00", "end": "2019-03-05"},
    "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "2019-03-04"}]}],
}


def _age(patient: dict[str, Any]) -> dict[str, Any]:
    [extension] = [e for e in patient["_birthDate"]["extension"] if e["url"] == AGE_EXTENSION]
    age: dict[str, Any] = extension["valueAge"]
    return age


def test_a_birth_date_becomes_its_year_with_the_age() -> None:
    withheld: set[str] = set()
    out = apply(PATIENT, frozenset(), frozenset(), withheld, RESEARCH, TODAY)
    assert out["birthDate"] == "1962"
    assert _age(out) == {"value": 62, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}
    assert "1962-09-14" in withheld and "1962" not in withheld


@pytest.mark.parametrize(
    ("born", "today", "expected"),
    [("1935-06-01", TODAY, 90), ("1935-06-02", TODAY, 89), ("1900-01-01", TODAY, 90), ("2025-05-31", TODAY, 0)],
)
def test_ninety_or_older_keeps_no_year(born: str, today: datetime.date, expected: int) -> None:
    withheld: set[str] = set()
    out = apply({**PATIENT, "birthDate": born}, frozenset(), frozenset(), withheld, RESEARCH, today)
    if expected >= 90:
        assert "birthDate" not in out and _age(out)["comparator"] == ">=" and _age(out)["value"] == 90
        assert born[:4] in withheld
        assert any(e.get("valueCode") == "masked" for e in out["_birthDate"]["extension"])
    else:
        assert out["birthDate"] == born[:4] and _age(out)["value"] == expected and "comparator" not in _age(out)


def test_an_address_keeps_state_and_three_zip_digits_or_000_where_the_population_is_small() -> None:
    withheld: set[str] = set()
    out = apply(PATIENT, frozenset(), frozenset(), withheld, RESEARCH, TODAY)
    assert out["address"] == [
        {"use": "home", "state": "MA", "postalCode": "021"},
        {"state": "WY", "postalCode": "000"},  # 823 is one of the 17 restricted prefixes
    ]
    assert {"12 Elm Street", "Springfield", "02139", "82301-1234", "Smalltown"} <= withheld


def test_every_date_becomes_its_year_but_codes_stay() -> None:
    withheld: set[str] = set()
    out = apply(ENCOUNTER, frozenset(), frozenset(), withheld, RESEARCH, TODAY)
    assert out["period"] == {"start": "2019", "end": "2019"}
    assert out["type"][0]["coding"][0]["code"] == "2019-03-04"
    assert "2019-03-04T10:15:00+01:00" in withheld


@pytest.mark.parametrize("resource", [PATIENT, ENCOUNTER])
def test_generalising_twice_changes_nothing_and_the_answer_passes(resource: dict[str, Any]) -> None:
    withheld: set[str] = set()
    once = apply(resource, frozenset(), frozenset(), withheld, RESEARCH, TODAY)
    assert apply(once, frozenset(), frozenset(), set(), RESEARCH, TODAY) == once
    check_output({"record": [once]}, frozenset({"Patient", "Encounter"}), frozenset(), frozenset(), withheld, RESEARCH)


def test_an_answer_with_a_full_date_or_street_is_refused() -> None:
    withheld: set[str] = set()
    apply(PATIENT, frozenset(), frozenset(), withheld, RESEARCH, TODAY)
    for answer in ({"born": "1962-09-14"}, {"lived": "12 Elm Street"}, {"resources": [PATIENT]}):
        with pytest.raises(FunctionOutputRejected):
            check_output(answer, frozenset({"Patient"}), frozenset(), frozenset(), withheld, RESEARCH)


def test_stored_text_is_generalised_only_where_a_rule_names_its_type() -> None:
    import json

    observation = json.dumps({"resourceType": "Observation", "effectiveDateTime": "2020-01-02"})
    assert apply_to_text(observation, frozenset(), frozenset(), set(), frozenset({"Patient.birthDate:year"})) == (
        observation
    )
    assert json.loads(apply_to_text(observation, frozenset(), frozenset(), set(), RESEARCH))["effectiveDateTime"] == (
        "2020"
    )


@pytest.mark.parametrize("text", ["Patient.birthDate", "Patient.birthDate:month", "patient.birthDate:year", "*:year"])
def test_generalisations_that_are_not_understood_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_generalisation(text)


ALLOW = {"allow": True, "deny": False, "reasons": []}
RESEARCH_DROPS = ["Patient.name", "Patient.identifier", "Patient.telecom", "Patient.photo", "Patient.contact"]


def _read(obligations: dict[str, Any]) -> Any:
    return read_document({**ALLOW, "obligations": obligations}, engine="test", revision="r", input={}).obligations


def test_the_decision_reads_generalise_and_counts_zip3_as_removing_the_address_beside_a_pseudonym() -> None:
    obligations = _read(
        {
            "resource_types": ["Patient"],
            "drop": RESEARCH_DROPS,
            "generalise": sorted(RESEARCH),
            "imports": ["pseudonym"],
        }
    )
    assert obligations.generalise == RESEARCH and "pseudonym" in obligations.imports


@pytest.mark.parametrize(
    "obligations",
    [
        {"generalise": ["Patient.birthDate:month"]},  # a method the host does not know
        {"generalise": "Patient.birthDate:year"},  # not a set
        {"redact": ["Patient.name"]},  # an obligation the host does not know: never ignored
        # the address kept whole (only its dates cut) beside a pseudonym
        {"drop": RESEARCH_DROPS, "generalise": ["*.*:year"], "imports": ["pseudonym"]},
    ],
)
def test_the_decision_fails_closed_on_what_it_cannot_apply(obligations: dict[str, Any]) -> None:
    with pytest.raises(PolicyUnavailable):
        _read(obligations)
