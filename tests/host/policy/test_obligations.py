"""Masking and dropping fields of real seeded resources, and the check on a function's answer."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from host.data.synthetic import generate
from host.errors import FunctionOutputRejected
from host.policy.obligations import MASK, MAX_ANSWER_DEPTH, apply, apply_to_text, check_output, parse_selector
from host.store.rows import patient_of

RESOURCES = list(generate(3, 11))
PATIENT = next(r for r in RESOURCES if r["resourceType"] == "Patient")
SSN = next(i["value"] for i in PATIENT["identifier"] if i["system"] == "http://hl7.org/fhir/sid/us-ssn")
MRN = next(i["value"] for i in PATIENT["identifier"] if i["system"] == "urn:wardfn:mrn")
NATIONAL = frozenset({"Patient.identifier(SS)"})
ABSENT = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "masked"}]}


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
    dropped = apply(
        PATIENT, frozenset(), frozenset({"Patient.telecom", "Patient.identifier(SS)", "Patient.gender"}), withheld
    )
    # Dropped is marked, never silently missing: FHIR's data-absent-reason where the value was.
    assert dropped["telecom"] == [ABSENT]
    assert [i.get("value") for i in dropped["identifier"]] == [MRN, None]
    assert dropped["identifier"][1] == ABSENT
    assert "gender" not in dropped and dropped["_gender"] == ABSENT  # a primitive's marker stands beside it
    assert SSN in withheld and PATIENT["telecom"][0]["value"] in withheld and PATIENT["gender"] in withheld
    assert "masked" not in withheld
    assert apply(dropped, frozenset(), frozenset({"Patient.telecom", "Patient.gender"}), set()) == dropped


def test_wildcard_selectors_apply_to_every_type_and_others_only_to_theirs() -> None:
    note = {"resourceType": "Condition", "id": "c1", "note": [{"text": "confided a family secret"}], "text": "x"}
    dropped = apply(note, frozenset(), frozenset({"*.note", "Patient.text"}), set())
    assert dropped["note"] == [ABSENT] and dropped["text"] == "x"


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

    assert json.loads(apply_to_text(note, frozenset(), frozenset({"*.note"}), withheld))["note"] == [ABSENT]
    assert "confided a family secret" in withheld


def test_a_stored_body_orjson_cannot_read_is_judged_by_the_exact_decoder() -> None:
    # 1e400 is beyond a double: orjson refuses it, the standard decoder reads it (as infinity).
    body = json.dumps({"resourceType": "Patient", "identifier": PATIENT["identifier"]})[:-1] + ', "x": 1e400}'
    withheld: set[str] = set()

    assert SSN not in apply_to_text(body, NATIONAL, frozenset(), withheld) and SSN in withheld


# Reshaping: a withheld identifier is refused however its digits are laid out.

FICTIONAL_SSN = "999-12-3456"


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"ssn": f"on file: {FICTIONAL_SSN} (verified)"}, id="inside-a-longer-string"),
        pytest.param({"ssn": ["999", "12", "3456"]}, id="list-split"),
        pytest.param({"ssn": "999 12 3456"}, id="spaced"),
        pytest.param({"ssn": "999.12.3456"}, id="dotted"),
        pytest.param({"ssn": "99-912-34-56"}, id="dashed-elsewhere"),
        pytest.param({"ssn": "9 9 9 1 2 3 4 5 6"}, id="digit-by-digit"),
        pytest.param({"ssn": "999123456"}, id="digits-only"),
        pytest.param({"ssn": {"area": "999", "group": "12", "serial": "3456"}}, id="dict-values"),
        pytest.param({"999": 1, "12": 2, "3456": 3}, id="dict-keys"),
        pytest.param({"parts": ["999", {"filler": True}, "12", ["x"], "3456"]}, id="adjacent-around-containers"),
        pytest.param({"a": [{"b": "999"}, {"c": ["12", {"d": "3456"}]}]}, id="nested-containers"),
        pytest.param(["999", ["12"], "3456"], id="in-document-order-around-a-nested-list"),
        pytest.param({"ssn": [999, 12, 3456]}, id="numbers"),
        pytest.param({"ssn": 999123456}, id="one-number"),
        pytest.param({"ssn": "9a9b9c1d2e3f4g5h6"}, id="letters-interleaved"),
        pytest.param({"ssn": "6543-21-999"}, id="reversed"),
        pytest.param({"ssn": "\uff19\uff19\uff19-\uff11\uff12-\uff13\uff14\uff15\uff16"}, id="fullwidth-digits"),
        pytest.param({"ssn": "999\u200b12\u200b3456"}, id="zero-width-spaces"),
        pytest.param("999 12 3456", id="the-answer-itself"),
    ],
)
def test_a_withheld_identifier_is_refused_however_it_is_reshaped(answer: Any) -> None:
    with pytest.raises(FunctionOutputRejected, match="withheld"):
        _check(answer, {"Patient"}, {FICTIONAL_SSN})


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"mrn": "mrn 0000 0042"}, id="case-and-spacing"),
        pytest.param({"mrn": ["MRN", "0000", "0042"]}, id="list-split"),
        pytest.param({"id": "patient-MRN00000042-summary"}, id="inside-a-longer-string"),
    ],
)
def test_a_withheld_identifier_with_letters_is_compared_casefolded(answer: Any) -> None:
    with pytest.raises(FunctionOutputRejected, match="withheld"):
        _check(answer, set(), {"MRN00000042"})


def test_short_withheld_values_do_not_refuse_every_answer() -> None:
    # Each normalises to fewer than four characters: found by chance in almost any answer.
    withheld = {"M", "12", "9-9", "ab", "x1y", MASK}
    _check({"sex": "M", "counts": [12, 99, 9, 9], "code": "ab", "ids": ["x1y", "x", "1", "y"]}, set(), withheld)


def test_numbers_near_a_withheld_identifier_pass() -> None:
    answer = {
        "neighbour": "999-12-3457",
        "prefix": "999",
        "vitals": [{"bp": [120, 80], "hr": 72, "t": 36.8, "spo2": 99}] * 20,
        "dates": ["2021-09-12", "1999-12-31", "2034-05-06"],
        "mrn": MRN,
        "loinc": ["8867-4", "85354-9", "59408-5"],
        "tail": "3456",
    }
    _check(answer, set(), {FICTIONAL_SSN})


def test_a_short_number_inside_a_longer_one_passes() -> None:
    # A postal code and a birth date withheld; a SNOMED code and a resource id that hold their digits.
    withheld = {"06194", "05406", "1935-01-29"}
    _check({"code": "414916001", "id": "d160c926-dc05-406c-ba1a-e9b3c434a77a", "c": "1193501291"}, set(), withheld)
    with pytest.raises(FunctionOutputRejected, match="withheld"):
        _check({"zip": ["061", "94"]}, set(), {"06194"})


def test_withheld_words_are_refused_only_as_whole_values() -> None:
    # Names and other words carry no digit: looked for as whole values, never inside other words.
    _check({"text": "the Johnsons' report", "page": "Homepage"}, set(), {"Johnson", "home"})
    with pytest.raises(FunctionOutputRejected, match="withheld"):
        _check({"family": " JOHNSON "}, set(), {"Johnson"})


def test_the_vocabulary_around_a_dropped_identifier_is_not_withheld() -> None:
    withheld: set[str] = set()
    apply(PATIENT, frozenset(), frozenset({"Patient.identifier"}), withheld)
    assert SSN in withheld and MRN in withheld
    assert not any(w.startswith(("http://", "urn:")) for w in withheld), withheld
    assert "official" not in withheld and "usual" not in withheld
    # An answer may name the code system every other identifier is typed with.
    _check({"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "VN"}, set(), withheld)


GRANTS = {
    "clinician": (frozenset({"Patient.identifier(SS)"}), frozenset(), frozenset()),
    "billing": (frozenset({"Patient.identifier(SS)"}), frozenset({"*.note", "*.text"}), frozenset()),
    # Research's generalisations cut every date to its year, so a record dated the day the patient
    # was born no longer gives the birth date away.
    "research": (
        frozenset({"Patient.identifier(SS)"}),
        frozenset(
            {"Patient.name", "Patient.identifier", "Patient.telecom", "Patient.photo", "Patient.contact"}
            | {"*.note", "*.text"}
        ),
        frozenset({"Patient.birthDate:year", "Patient.address:zip3", "*.*:year"}),
    ),
}


@pytest.mark.parametrize("grant", sorted(GRANTS))
def test_records_the_obligations_were_applied_to_pass_the_check(grant: str) -> None:
    # No false positive on real shapes: every generated patient's whole record, filtered, goes back out.
    mask, drop, generalised = GRANTS[grant]
    resources = list(generate(200, 20261125))
    patients = [r["id"] for r in resources if r["resourceType"] == "Patient"]
    types = frozenset(r["resourceType"] for r in resources)
    for patient_id in patients:
        withheld: set[str] = set()
        record = [apply(r, mask, drop, withheld, generalised) for r in resources if patient_of(r) == patient_id]
        assert withheld
        check_output({"patient": patient_id, "record": record}, types, mask, drop, withheld, generalised)


# Depth: an answer nested past the limit is a refusal (audited), never a RecursionError.


def _nested_lists(depth: int) -> Any:
    answer: Any = "leaf"
    for _ in range(depth):
        answer = [answer]
    return answer


def _nested_dicts(depth: int) -> Any:
    answer: Any = "leaf"
    for _ in range(depth):
        answer = {"a": answer}
    return answer


@pytest.mark.parametrize("nested", [_nested_lists, _nested_dicts])
def test_an_answer_nested_five_thousand_deep_is_refused(nested: Any) -> None:
    with pytest.raises(FunctionOutputRejected, match="nested deeper"):
        _check({"answer": nested(5000)}, {"Patient"}, {FICTIONAL_SSN})


def test_an_answer_nested_five_thousand_deep_is_refused_without_withheld_values() -> None:
    with pytest.raises(FunctionOutputRejected, match="nested deeper"):
        check_output(_nested_lists(5000), frozenset(), frozenset(), frozenset(), set())


def test_an_answer_as_deep_as_orjson_reads_is_refused() -> None:
    # The route a function's answer takes: orjson reads about a thousand levels, recursion fails first.
    answer = orjson.loads("[" * 1000 + "]" * 1000)
    with pytest.raises(FunctionOutputRejected, match="nested deeper"):
        _check({"answer": answer}, set(), {FICTIONAL_SSN})


def test_a_resource_holding_a_deep_answer_is_refused_before_it_is_compared() -> None:
    bundle = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "x": _nested_dicts(5000)}}]}
    with pytest.raises(FunctionOutputRejected, match="nested deeper"):
        _check(bundle, {"Patient"}, set())


def test_the_depth_limit_is_on_containers() -> None:
    _check(_nested_lists(MAX_ANSWER_DEPTH), set(), {FICTIONAL_SSN})
    with pytest.raises(FunctionOutputRejected, match="nested deeper"):
        _check(_nested_lists(MAX_ANSWER_DEPTH + 1), set(), {FICTIONAL_SSN})


def test_a_stored_record_too_deep_to_filter_is_a_value_error() -> None:
    # The records import answers `unavailable` for a ValueError: never a RecursionError in the host.
    body = '{"resourceType": "Patient", "name": ' + "[" * 5000 + '"x"' + "]" * 5000 + "}"
    with pytest.raises(ValueError, match="nested"):
        apply_to_text(body, frozenset({"Patient.name"}), frozenset(), set())
