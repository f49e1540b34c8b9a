"""Withheld is never "none": every function, under every role and purpose the decision table allows,
driven by the real policy's real decisions, its obligations applied as the host applies them.

For each function and each subject/purpose of the table (the table's inputs, asked again with the
function's action), the real Rego engine decides; an allow binds the function's `records` import
to the decision's types (the others answer `denied`, as the host's import does) and filters every
record through the decision's masks, drops and generalisations (`host.policy.obligations`). The
function's adapter runs under CPython; its answer must pass the host's output check and must not
read as a clinical negative for anything withheld. Whether it is marked withheld must depend on
the grant alone: the same decision on a patient with no such data marks the same sections.
"""

from __future__ import annotations

import datetime
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from host.config import PROJECT_ROOT
from host.data.synthetic import generate
from host.policy.document import build_input
from host.policy.engine import RegoPolicyEngine
from host.policy.obligations import apply_to_text, check_output
from host.policy.table import DEFAULT_TABLE, load_table
from host.store.rows import patient_of
from host.types import Decision, Subject
from tests.functions.conftest import Guest, Records

WITHHELD = {"withheld": True, "reason": "not granted for this purpose of use"}
PATIENT_FUNCTIONS = ("patient_lookup", "med_safety", "deidentify", "fhir_export")
RESOURCES = list(generate(6, 20260314))
PATIENT_IDS = [r["id"] for r in RESOURCES if r["resourceType"] == "Patient"]


def _manifest(function: str) -> dict[str, Any]:
    manifest: dict[str, Any] = tomllib.loads((PROJECT_ROOT / "functions" / function / "function.toml").read_text())
    return manifest


@dataclass(frozen=True)
class Caller:
    """A subject and purpose of use from the decision table, with what it said about the patient."""

    name: str
    subject: Subject
    purpose: str
    break_glass_reason: str | None


def _callers() -> list[Caller]:
    found: dict[tuple[Any, ...], Caller] = {}
    for case in load_table(DEFAULT_TABLE):
        given = case["input"]
        subject, patient = given.get("subject"), given.get("patient")
        if not isinstance(subject, dict) or not isinstance(patient, dict) or given.get("audit") != {"enabled": True}:
            continue
        roles = tuple(r for r in subject.get("roles", []) if isinstance(r, str))
        if not roles:
            continue
        reason = (given.get("break_glass") or {}).get("reason")
        key = (roles, given.get("purpose"), bool(reason))
        found.setdefault(
            key, Caller(case["name"], Subject(subject["id"], roles[0], roles[1:]), given["purpose"], reason)
        )
    return list(found.values())


CALLERS = _callers()


@pytest.fixture(scope="module")
def engine() -> Iterator[RegoPolicyEngine]:
    built = RegoPolicyEngine.from_directory(PROJECT_ROOT / "policies", timeout_s=5.0)
    yield built
    built.close()


def _decide(engine: RegoPolicyEngine, caller: Caller, function: str, patient_id: str) -> Decision:
    # On the care team, consenting to everything, and the caller's own record when the caller is a
    # patient: the table's allows for this subject and purpose, asked with this function's action.
    subject = (
        Subject(patient_id, caller.subject.role, caller.subject.roles)
        if "patient" in caller.subject.all_roles
        else caller.subject
    )
    facts = {"id": patient_id, "care_team": [subject.id], "consent_directives": []}
    document = build_input(subject, _manifest(function)["action"], caller.purpose, facts, caller.break_glass_reason)
    return engine.decide(document)


def _allowed(engine: RegoPolicyEngine) -> list[tuple[str, Caller]]:
    return [
        (function, caller)
        for function in PATIENT_FUNCTIONS
        for caller in CALLERS
        if _decide(engine, caller, function, PATIENT_IDS[0]).allow
    ]


@dataclass
class Served:
    """What the host would have let the function read, and what it kept back."""

    records: Records
    granted: frozenset[str]
    withheld_types: frozenset[str]
    withheld_values: set[str]


def _serve(decision: Decision, function: str, resources: list[dict[str, Any]]) -> Served:
    obligations = decision.obligations
    reads = frozenset(_manifest(function)["reads"])
    granted = obligations.resource_types & reads  # as the host scopes the records import
    values: set[str] = set()
    by_type: dict[str, list[str]] = {}
    for resource in resources:
        if resource["resourceType"] in granted:
            body = apply_to_text(
                json.dumps(resource), obligations.mask, obligations.drop, values, obligations.generalise
            )
            by_type.setdefault(resource["resourceType"], []).append(body)
    return Served(Records(resources=by_type, denied=set(reads - granted)), granted, reads - granted, values)


def _answer(guest: Guest, monkeypatch: pytest.MonkeyPatch, function: str, patient_id: str, served: Served) -> Any:
    guest.serve(served.records, monkeypatch)
    outcome = guest.call(function, patient_id)
    assert outcome.error is None, outcome
    return outcome.body


def _withheld_markers(function: str, body: Any) -> dict[str, bool]:
    """Which of the function's resource types its answer marks withheld, and the negatives it must not give."""
    if function == "patient_lookup":
        sections = {
            "Patient": "demographics",
            "AllergyIntolerance": "allergies",
            "MedicationRequest": "medications",
            "Observation": "vital_signs",
        }
        return {t: body[s] == WITHHELD for t, s in sections.items()}
    if function == "med_safety":
        return {t: t in body["withheld"] for t in ("AllergyIntolerance", "MedicationRequest")}
    if function == "deidentify":
        return {t: body["withheld"].get(t) == WITHHELD for t in _manifest(function)["reads"]}
    suppressed = [
        issue["expression"][0]
        for entry in body["entry"]
        if entry["resource"]["resourceType"] == "OperationOutcome"
        for issue in entry["resource"]["issue"]
        if issue["code"] == "suppressed"
    ]
    return {t: t in suppressed for t in _manifest(function)["reads"]}


def _no_clinical_negative(function: str, body: Any, withheld: frozenset[str]) -> None:
    """What each function must never say about data it was not shown."""
    if function == "med_safety":
        needed = withheld & {"AllergyIntolerance", "MedicationRequest"}
        if needed:
            assert body["safe"] is None and body["flags"] == WITHHELD, body
            assert body["withheld"] == sorted(needed, key=("AllergyIntolerance", "MedicationRequest").index)
            if "AllergyIntolerance" in needed:
                assert body["checked"]["active_allergies"] == WITHHELD
            if "MedicationRequest" in needed:
                assert body["checked"]["active_medications"] == WITHHELD
        else:
            assert body["safe"] in (True, False) and body["withheld"] == []
    if function in ("deidentify", "fhir_export"):
        resources = body["resources"] if function == "deidentify" else [e["resource"] for e in body["entry"]]
        assert not {r["resourceType"] for r in resources} & withheld
    if function == "patient_lookup" and "Patient" not in withheld:
        for field in ("birth_date", "gender", "name", "identifiers"):
            assert body["demographics"][field] not in ([], None, ""), (field, body["demographics"])


def test_the_table_gives_every_function_several_allowed_callers(engine: RegoPolicyEngine) -> None:
    allowed = _allowed(engine)
    for function in PATIENT_FUNCTIONS:
        assert any(f == function for f, _ in allowed), function
    # Withheld types occur: the test is not vacuous.
    assert any(_serve(_decide(engine, c, f, PATIENT_IDS[0]), f, RESOURCES).withheld_types for f, c in allowed)
    roles = {c.subject.role for f, c in allowed}
    assert {"physician", "nurse", "billing", "registration", "patient", "researcher"} <= roles


@pytest.mark.parametrize("patient_index", range(len(PATIENT_IDS)))
def test_no_function_reads_withheld_as_none(
    guest: Guest, monkeypatch: pytest.MonkeyPatch, engine: RegoPolicyEngine, patient_index: int
) -> None:
    patient_id = PATIENT_IDS[patient_index]
    record = [r for r in RESOURCES if patient_of(r) == patient_id]
    bare = [r for r in record if r["resourceType"] == "Patient"]  # the same patient with no clinical data
    for function, caller in _allowed(engine):
        decision = _decide(engine, caller, function, patient_id)
        assert decision.allow, (function, caller.name)
        served = _serve(decision, function, record)
        body = _answer(guest, monkeypatch, function, patient_id, served)
        where = (function, caller.name, sorted(served.withheld_types))
        # The host's own check on the way out passes: nothing withheld, masked or dropped is in it.
        obligations = decision.obligations
        check_output(
            body, served.granted, obligations.mask, obligations.drop, served.withheld_values, obligations.generalise
        )
        markers = _withheld_markers(function, body)
        for resource_type, marked in markers.items():
            assert marked is (resource_type in served.withheld_types), (*where, resource_type, body)
        _no_clinical_negative(function, body, served.withheld_types)
        # The grant alone decides: with no such data at all, the same sections are marked.
        empty = _answer(guest, monkeypatch, function, patient_id, _serve(decision, function, bare))
        assert _withheld_markers(function, empty) == markers, where


def _born_1962() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    patient_id = PATIENT_IDS[1]
    record = [json.loads(json.dumps(r)) for r in RESOURCES if patient_of(r) == patient_id]
    patient = next(r for r in record if r["resourceType"] == "Patient")
    patient["birthDate"] = "1962-08-23"
    patient.setdefault("telecom", [{"system": "phone", "value": "555-201-7788", "use": "home"}])
    patient.setdefault(
        "address", [{"line": ["41 Orchard Lane"], "city": "Boston", "state": "MA", "postalCode": "02118"}]
    )
    return record, patient


def test_a_researchers_export_of_a_patient_born_in_1962_carries_the_age_and_nothing_identifying(
    guest: Guest, monkeypatch: pytest.MonkeyPatch, engine: RegoPolicyEngine
) -> None:
    record, patient = _born_1962()
    researcher = Subject("res-1", "researcher")
    facts = {"id": patient["id"], "care_team": [], "consent_directives": []}
    decision = engine.decide(build_input(researcher, "export-deidentified", "HRESCH", facts))
    assert decision.allow and "pseudonym" in decision.obligations.imports
    served = _serve(decision, "deidentify", record)
    body = _answer(guest, monkeypatch, "deidentify", patient["id"], served)
    check_output(
        body,
        served.granted,
        decision.obligations.mask,
        decision.obligations.drop,
        served.withheld_values,
        decision.obligations.generalise,
    )
    today = datetime.date.today()
    assert body["age"] == today.year - 1962 - ((today.month, today.day) < (8, 23))
    text = json.dumps(body)
    assert not re.search(r"\d{4}-\d{2}", text), "no full (or month) date survives"
    identifying = [
        *(n for name in patient.get("name", []) for n in [*name.get("given", []), name.get("family", "")] if n),
        *(i["value"] for i in patient.get("identifier", [])),
        *(t["value"] for t in patient.get("telecom", [])),
        *(line for a in patient.get("address", []) for line in a.get("line", [])),
        *(a["city"] for a in patient.get("address", []) if a.get("city")),
        patient["id"],
    ]
    for value in identifying:
        assert value not in text, value
    [exported] = [r for r in body["resources"] if r["resourceType"] == "Patient"]
    assert exported["birthDate"] == "1962"
    assert all(set(a) <= {"state", "country", "postalCode"} and len(a.get("postalCode", "")) <= 3
               for a in exported.get("address", []))  # fmt: skip


def test_ninety_or_older_has_no_birth_year_in_the_export(
    guest: Guest, monkeypatch: pytest.MonkeyPatch, engine: RegoPolicyEngine
) -> None:
    record, patient = _born_1962()
    patient["birthDate"] = "1931-01-01"
    facts = {"id": patient["id"], "care_team": [], "consent_directives": []}
    decision = engine.decide(build_input(Subject("res-1", "researcher"), "export-deidentified", "HRESCH", facts))
    body = _answer(guest, monkeypatch, "deidentify", patient["id"], _serve(decision, "deidentify", record))
    [exported] = [r for r in body["resources"] if r["resourceType"] == "Patient"]
    assert body["age"] == "90+" and "birthDate" not in exported and "1931" not in json.dumps(body)
