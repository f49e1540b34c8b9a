"""Masking and dropping fields of real seeded resources, and the check on a function's answer."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from host.data.synthetic import generate
from host.errors import FunctionOutputRejected
from host.policy.obligations import MASK, apply, apply_to_text, check_output, parse_selector

RESOURCES = list(generate(3, 11))
PATIENT = next(r for r in RESOURCES if r["resourceType"] == "Patient")
SSN = next(i["value"] for i in PATIENT["identifier"] if i["system"] == "http://hl7.org/fhir/sid/us-ssn")
MRN = next(i["value"] for i in PATIENT["identifier"] if i["system"] == "urn:wardfn:mrn")
NATIONAL = frozenset({"Patient.identifier(SS)"})


def test_masking_the_national_identifier_keeps_the_others() -> None:
    original = copy.deepcopy(PATIENT)
    withheld: set[str] = set()
    masked = apply(PATIENT, NATIONAL, frozenset(), withheld)
    values = {i["system"]: i["value"] for i in masked["identifier"]}
    assert values["http://hl7.org/fhir/sid/us-ssn"] == MASK and values["urn:wardfn:mrn"] == MRN
    ssn_entry = next(i for i in masked["identifier"] if i["value"] == MASK)
    assert ssn_entry["_value"]["extension"][0]["valueCode"] == "masked"
    assert SSN in withheld and SSN not in json.dumps(masked)
    assert PATIENT == original, "the stored resource is not changed"


def test_dropping_elements_and_entries() -> None:
    withheld: set[str] = set()
    dropped = apply(PATIENT, frozenset(), frozenset({"Patient.telecom", "Patient.identifier(SS)"}), withheld)
    assert "telecom" not in dropped
    assert [i["value"] for i in dropped["identifier"]] == [MRN]
    assert SSN in withheld and PATIENT["telecom"][0]["value"] in withheld


def test_wildcard_selectors_apply_to_every_type_and_others_only_to_theirs() -> None:
    note = {"resourceType": "Condition", "id": "c1", "note": [{"text": "confided a family secret"}], "text": "x"}
    dropped = apply(note, frozenset(), frozenset({"*.note", "Patient.text"}), set())
    assert "note" not in dropped and dropped["text"] == "x"


def test_masking_a_whole_element_masks_every_string_in_it() -> None:
    masked = apply(PATIENT, frozenset({"Patient.name"}), frozenset(), set())
    assert all(v == MASK for name in masked["name"] for v in [name["family"], *name["given"], name["use"]])


def test_the_same_resource_masks_the_same_way_twice() -> None:
    once = apply(PATIENT, NATIONAL, frozenset({"*.note"}), set())
    assert apply(once, NATIONAL, frozenset({"*.note"}), set()) == once


@pytest.mark.parametrize(
    "text", ["identifier", "Patient.", "patient.name", "Patient.name(SS", "*.*", "Patient.name.family"]
)
def test_selectors_that_are_not_understood_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_selector(text)


def _check(body: Any, types: set[str], withheld: set[str]) -> None:
    check_output(body, frozenset(types), NATIONAL, frozenset({"*.note"}), withheld)


def test_an_answer_with_a_withheld_value_is_refused_wherever_it_hides() -> None:
    with pytest.raises(FunctionOutputRejected, match="withheld"):
        _check({"deep": [{"ids": [SSN]}]}, {"Patient"}, {SSN})


def test_an_answer_with_a_resource_type_not_allowed_is_refused() -> None:
    consent = next(r for r in RESOURCES if r["resourceType"] == "CareTeam")
    with pytest.raises(FunctionOutputRejected, match="resource type"):
        _check({"team": consent}, {"Patient"}, set())


def test_an_answer_with_an_unmasked_resource_is_refused() -> None:
    with pytest.raises(FunctionOutputRejected, match="masks or drops"):
        _check({"patient": PATIENT}, {"Patient"}, set())


def test_an_answer_that_keeps_the_obligations_passes() -> None:
    masked = apply(PATIENT, NATIONAL, frozenset({"*.note"}), set())
    _check({"patient": masked, "mrn": MRN, "flag": MASK, "short": "M"}, {"Patient"}, {SSN, "M", MASK})


# The text form, on the record-reading path: a resource no selector names passes as stored.


def test_a_stored_resource_of_a_type_no_selector_names_passes_as_stored() -> None:
    observation = next(r for r in RESOURCES if r["resourceType"] == "Observation")
    body = json.dumps(observation, indent=1)  # a layout no encoder here would reproduce
    withheld: set[str] = set()

    assert apply_to_text(body, NATIONAL, frozenset({"Patient.telecom"}), withheld) is body
    assert withheld == set()


def test_a_stored_resource_a_selector_names_is_masked_as_apply_masks_it() -> None:
    withheld: set[str] = set()

    text = apply_to_text(json.dumps(PATIENT), NATIONAL, frozenset(), withheld)

    assert json.loads(text) == apply(PATIENT, NATIONAL, frozenset(), set())
    assert SSN not in text and MRN in text and SSN in withheld


def test_a_wildcard_selector_names_every_stored_type() -> None:
    note = json.dumps({"resourceType": "Condition", "id": "c1", "note": [{"text": "confided a family secret"}]})
    withheld: set[str] = set()

    assert "note" not in json.loads(apply_to_text(note, frozenset(), frozenset({"*.note"}), withheld))
    assert "confided a family secret" in withheld


def test_a_stored_body_orjson_cannot_read_is_judged_by_the_exact_decoder() -> None:
    # 1e400 is beyond a double: orjson refuses it, the standard decoder reads it (as infinity).
    body = json.dumps({"resourceType": "Patient", "identifier": PATIENT["identifier"]})[:-1] + ', "x": 1e400}'
    withheld: set[str] = set()

    assert SSN not in apply_to_text(body, NATIONAL, frozenset(), withheld) and SSN in withheld
