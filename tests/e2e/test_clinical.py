"""The clinical access policy end to end, over HTTP against `wardfn serve`: care teams, break-the-glass,
role-limited reads, masked identifiers, budgets, and a hostile function that reaches for more."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from host.policy.document import build_input, input_hash
from host.policy.engine import RegoPolicyEngine
from host.service import AUDIT_REASON_PURPOSE
from host.store.resources import ResourceStore, open_store
from host.types import AuditRecord, Subject
from tests.e2e.conftest import Patients
from tests.e2e.server import WARDFN, ServerProcess

pytestmark = pytest.mark.components

SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"


@dataclass(frozen=True)
class Chart:
    """A seeded patient with active allergies and medications, and who is on their care team."""

    patient_id: str
    care_team: list[str]
    ssn: str
    mrn: str


@pytest.fixture(scope="module")
def store(server: ServerProcess) -> Iterator[ResourceStore]:
    opened = open_store(server.settings)
    yield opened
    opened.close()


def _active(store: ResourceStore, patient_id: str) -> tuple[int, int]:
    allergies = [json.loads(a) for a in store.search(patient_id, "AllergyIntolerance")]
    meds = [json.loads(m) for m in store.search(patient_id, "MedicationRequest")]
    return (
        sum(a["clinicalStatus"]["coding"][0]["code"] == "active" for a in allergies),
        sum(m["status"] == "active" for m in meds),
    )


@pytest.fixture(scope="module")
def chart(store: ResourceStore, patients: Patients) -> Chart:
    for patient_id in patients.consenting:
        allergies, meds = _active(store, patient_id)
        if allergies and meds:
            patient = json.loads(store.search(patient_id, "Patient")[0])
            ids = {i["system"]: i["value"] for i in patient["identifier"]}
            return Chart(patient_id, store.care_team(patient_id), ids[SSN_SYSTEM], ids["urn:wardfn:mrn"])
    raise AssertionError("the seed should give some patient active allergies and medications")


def _rid(label: str) -> str:
    return f"clin-{label}-{time.monotonic_ns()}"


def _summary(
    server: ServerProcess, patient_id: str, sub: str, role: str, purpose: str = "TREAT", reason: str | None = None
) -> tuple[httpx.Response, str]:
    rid = _rid(role)
    headers = {**server.headers(sub, role), "X-Request-ID": rid}
    if reason is not None:
        headers["X-Break-Glass-Reason"] = reason
    response = httpx.get(
        f"{server.url}/v1/patients/{patient_id}/summary", params={"purpose": purpose}, headers=headers, timeout=30
    )
    return response, rid


def _record(server: ServerProcess, request_id: str) -> AuditRecord:
    log = server.open_audit()
    try:
        [record] = [r for r in log.records(limit=100_000) if r.event.request_id == request_id]
        return record
    finally:
        log.close()


def test_a_nurse_off_the_care_team_gets_403(server: ServerProcess, chart: Chart) -> None:
    assert "rn-off-team" not in chart.care_team
    response, rid = _summary(server, chart.patient_id, "rn-off-team", "nurse")
    assert response.status_code == 403, response.text
    assert response.json()["error"]["reasons"] == ["the clinician is not on the patient's care team"]
    record = _record(server, rid)
    assert record.event.allowed is False and record.event.break_glass is False and record.event.review is False
    assert record.event.policy_revision and record.event.input_hash and record.event.decision_id


def test_the_same_nurse_breaks_the_glass_and_is_flagged_for_review(
    server: ServerProcess, store: ResourceStore, chart: Chart
) -> None:
    reason = "collapsed in the corridor, no care team on site"
    response, rid = _summary(server, chart.patient_id, "rn-off-team", "nurse", "ETREAT", reason)
    assert response.status_code == 200, response.text
    summary = response.json()["result"]
    assert summary["demographics"]["id"] == chart.patient_id
    assert len(summary["allergies"]) == _active(store, chart.patient_id)[0]
    record = _record(server, rid)
    event = record.event
    assert (event.allowed, event.outcome, event.break_glass, event.review) == (True, "ok", True, True)
    # The reason is free text that may name the patient: stored sealed, opened only with the store's key.
    sealed = event.break_glass_reason or ""
    assert reason not in sealed and "corridor" not in sealed
    assert store.open_text(sealed, AUDIT_REASON_PURPOSE) == reason
    assert event.decision_id == response.json()["decision_id"]
    # The decision log replays: the same input, rebuilt from the store, hashes the same and decides the same.
    facts = {
        "id": chart.patient_id,
        "care_team": store.care_team(chart.patient_id),
        "consent_directives": store.consent_directives(chart.patient_id),
    }
    replayed = build_input(Subject("rn-off-team", "nurse"), "read-summary", "ETREAT", facts, reason)
    assert input_hash(replayed) == event.input_hash
    engine = RegoPolicyEngine.from_directory(server.settings.policy_dir, timeout_s=5.0)
    try:
        decision = engine.decide(replayed)
        assert decision.allow and decision.break_glass and decision.revision == event.policy_revision
    finally:
        engine.close()
    log = server.open_audit()
    try:
        assert log.verify().ok
    finally:
        log.close()
    listed = subprocess.run(
        [str(WARDFN), "audit", "review", "--json"], env=server.env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    flagged = [r for r in json.loads(listed.stdout) if r["seq"] == record.seq]
    assert flagged and flagged[0]["reason"] == reason and flagged[0]["patient_id"] == chart.patient_id


def test_break_the_glass_overrides_a_consent_refusing_treatment(server: ServerProcess, patients: Patients) -> None:
    refusing = patients.refusing_treatment
    denied, _ = _summary(server, refusing, "dr-glass", "physician")
    assert denied.status_code == 403
    response, rid = _summary(server, refusing, "dr-glass", "physician", "ETREAT", "anaphylaxis, unresponsive")
    assert response.status_code == 200, response.text
    assert _record(server, rid).event.review is True


def test_break_the_glass_needs_a_reason(server: ServerProcess, chart: Chart) -> None:
    for reason in (None, "   "):
        response = httpx.post(
            f"{server.url}/v1/functions/patient_lookup/invoke",
            json={"patient_id": chart.patient_id, "purpose": "ETREAT", "break_glass_reason": reason},
            headers=server.headers("rn-off-team", "nurse"),
        )
        assert response.status_code == 403
        assert "emergency access (ETREAT) needs a break-the-glass reason" in response.json()["error"]["reasons"]


WITHHELD = {"withheld": True, "reason": "not granted for this purpose of use"}


def test_registration_staff_get_no_allergies_or_medications(server: ServerProcess, chart: Chart) -> None:
    response, _ = _summary(server, chart.patient_id, "reg-desk-1", "registration")
    assert response.status_code == 200, response.text
    summary = response.json()["result"]
    # Withheld, never an empty list that would read as "no known allergies".
    assert summary["allergies"] == summary["medications"] == summary["vital_signs"] == WITHHELD
    assert summary["demographics"]["id"] == chart.patient_id
    # Registration is the one role that sees the national identifier.
    assert chart.ssn in [i["value"] for i in summary["demographics"]["identifiers"]]


def test_the_national_identifier_is_masked_for_a_physician(server: ServerProcess, chart: Chart) -> None:
    physician = chart.care_team[0]
    response, _ = _summary(server, chart.patient_id, physician, "physician")
    assert response.status_code == 200, response.text
    summary = response.json()["result"]
    values = [i["value"] for i in summary["demographics"]["identifiers"]]
    assert chart.mrn in values and "***" in values
    assert chart.ssn not in response.text
    assert summary["allergies"] and summary["medications"], "a clinician on the care team sees the clinical record"


def test_billing_sees_medications_but_no_allergies(server: ServerProcess, chart: Chart) -> None:
    response, _ = _summary(server, chart.patient_id, "billing-1", "billing", "HPAYMT")
    assert response.status_code == 200, response.text
    summary = response.json()["result"]
    assert summary["allergies"] == WITHHELD and summary["medications"]
    assert chart.ssn not in response.text


def test_a_patient_reads_their_own_record_and_no_one_elses(
    server: ServerProcess, chart: Chart, patients: Patients
) -> None:
    own, _ = _summary(server, chart.patient_id, chart.patient_id, "patient", "PATRQT")
    assert own.status_code == 200, own.text
    other = next(p for p in patients.consenting if p != chart.patient_id)
    theirs, _ = _summary(server, other, chart.patient_id, "patient", "PATRQT")
    assert theirs.status_code == 403
    assert "a patient may read only their own record" in theirs.json()["error"]["reasons"]


def test_break_the_glass_budget_is_per_subject(server: ServerProcess, chart: Chart) -> None:
    budget = server.settings.break_glass_budget
    statuses = [
        _summary(server, chart.patient_id, "rn-budget", "nurse", "ETREAT", f"emergency {n}")[0].status_code
        for n in range(budget)
    ]
    assert statuses == [200] * budget
    refused, rid = _summary(server, chart.patient_id, "rn-budget", "nurse", "ETREAT", "one more")
    assert refused.status_code == 403
    assert any("break-the-glass budget" in r for r in refused.json()["error"]["reasons"])
    record = _record(server, rid)
    assert record.event.allowed is False and record.event.review is True, "a refused break-glass is still reviewed"
    other, _ = _summary(server, chart.patient_id, "rn-other", "nurse", "ETREAT", "someone else's emergency")
    assert other.status_code == 200


def _hostile(server: ServerProcess, patient_id: str, sub: str, role: str, args: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/v1/functions/hostile/invoke",
        json={"patient_id": patient_id, "args": args},
        headers=server.headers(sub, role),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


@pytest.mark.parametrize("role", ["physician", "authorized_medical_staff"])
def test_a_hostile_function_gets_nothing_beyond_its_grant(
    server: ServerProcess, chart: Chart, patients: Patients, role: str
) -> None:
    sub = chart.care_team[0]
    other = next(p for p in patients.consenting if p != chart.patient_id)
    reached = _hostile(server, chart.patient_id, sub, role, {"mode": "other_patient", "target": other})
    assert reached["other"]["succeeded"] is False and reached["other"]["error"] == "AccessError_Denied"
    forbidden = _hostile(server, chart.patient_id, sub, role, {"mode": "forbidden_type"})
    assert forbidden["consent"]["succeeded"] is False and forbidden["consent"]["error"] == "AccessError_Denied"
    assert forbidden["own"] == {"succeeded": True, "value": 1}, "the granted read still works"


def test_an_answer_that_breaks_the_obligations_is_refused(server: ServerProcess, chart: Chart) -> None:
    rid = _rid("forged")
    response = httpx.post(
        f"{server.url}/v1/functions/hostile/invoke",
        json={"patient_id": chart.patient_id, "args": {"mode": "forged_resource"}},
        headers={**server.headers(chart.care_team[0], "physician"), "X-Request-ID": rid},
        timeout=30,
    )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "function_output_rejected" and "smuggled" not in response.text
    assert _record(server, rid).event.outcome == "function_output_rejected"


def test_policy_status_shows_the_revision_and_the_cache(server: ServerProcess, chart: Chart) -> None:
    for _ in range(2):
        _summary(server, chart.patient_id, chart.care_team[0], "physician")
    status = httpx.get(f"{server.url}/v1/policy", headers=server.headers()).json()
    assert status["engine"] == "embedded" and status["healthy"] is True and len(status["revision"]) == 64
    assert status["decision_cache"]["hits"] >= 1 and 0 < status["decision_cache"]["hit_rate"] <= 1


def test_search_reads_no_patient_and_has_a_per_subject_budget(server: ServerProcess, chart: Chart) -> None:
    def search(sub: str) -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/functions/finder/invoke",
            json={"purpose": "TREAT", "args": {"target": chart.patient_id}},
            headers=server.headers(sub, "nurse"),
            timeout=30,
        )

    first = search("rn-searcher")
    assert first.status_code == 200, first.text
    assert first.json()["result"]["read"] == {"succeeded": False, "error": "AccessError_Denied"}
    responses = [search("rn-searcher") for _ in range(server.settings.search_budget)]
    statuses = [r.status_code for r in responses]
    unexpected = [r.text for r in responses[:-1] if r.status_code != 200]
    assert statuses[:-1] == [200] * (server.settings.search_budget - 1) and statuses[-1] == 403, unexpected
    assert search("rn-other-searcher").status_code == 200
    refused = search("rn-searcher")
    assert any("search budget" in r for r in refused.json()["error"]["reasons"])
    billing = httpx.post(
        f"{server.url}/v1/functions/finder/invoke", json={"purpose": "HPAYMT"}, headers=server.headers("b", "billing")
    )
    assert billing.status_code == 403
