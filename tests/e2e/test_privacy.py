"""The privacy office against the real server: a patient's access report lists exactly the accesses the
trail holds for them, and the break-the-glass review queue goes from open to disposed, on the chain."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from host.types import AuditRecord
from tests.e2e.conftest import Patients
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.components

OFFICER = ("co-ramos", "compliance_officer")
REASON = "found unresponsive in the car park"


def _rid(label: str) -> str:
    return f"privacy-{label}-{time.monotonic_ns()}"


def _trail(server: ServerProcess) -> list[AuditRecord]:
    log = server.open_audit()
    try:
        return log.records(limit=1_000_000)
    finally:
        log.close()


def _seq(server: ServerProcess, request_id: str) -> int:
    [record] = [r for r in _trail(server) if r.event.request_id == request_id]
    return record.seq


def _get(server: ServerProcess, path: str, who: tuple[str, str], rid: str, **params: Any) -> httpx.Response:
    headers = {**server.headers(*who), "X-Request-ID": rid}
    return httpx.get(f"{server.url}{path}", params=params, headers=headers, timeout=30)


def _summary(server: ServerProcess, pid: str, who: tuple[str, ...], purpose: str, **headers: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/v1/patients/{pid}/summary",
        params={"purpose": purpose},
        headers={**server.headers(*who), "X-Request-ID": _rid("summary"), **headers},
        timeout=30,
    )


def _search(server: ServerProcess, args: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/functions/patient_search/invoke",
        json={"purpose": "TREAT", "args": args},
        headers={**server.headers(), "X-Request-ID": _rid("search")},
        timeout=30,
    )


def _patient(server: ServerProcess, pid: str) -> dict[str, Any]:
    store = server.open_store()
    try:
        [body] = store.search(pid, "Patient")
    finally:
        store.close()
    patient: dict[str, Any] = json.loads(body)
    return patient


def test_a_patients_report_lists_exactly_their_accesses(server: ServerProcess, patients: Patients) -> None:
    pid, other = patients.consenting[1], patients.consenting[2]
    since = datetime.now(UTC).isoformat()
    made = [
        _summary(server, pid, ("dr-grey", "authorized_medical_staff"), "TREAT"),  # allowed
        _summary(server, pid, ("clerk-1", "billing"), "TREAT"),  # refused
        _summary(server, pid, ("rn-glass", "nurse", "emergency-dept"), "ETREAT", **{"X-Break-Glass-Reason": REASON}),
        _summary(server, pid, (pid, "patient"), "PATRQT"),  # the patient's own read
    ]
    assert [r.status_code for r in made] == [200, 403, 200, 200], [r.text for r in made]
    patient = _patient(server, pid)
    found = _search(server, {"name": patient["name"][0]["family"], "birth_date": patient["birthDate"]})
    assert found.status_code == 200 and pid in [m["id"] for m in found.json()["result"]["matches"]]
    # Not theirs: another patient's record, and a search that did not match them.
    assert _summary(server, other, ("dr-grey", "authorized_medical_staff"), "TREAT").status_code == 200
    missed = _search(server, {"identifier": "no-such-identifier-anywhere"})
    assert missed.status_code == 200 and missed.json()["result"]["matches"] == []

    rid = _rid("report")
    response = _get(
        server, f"/v1/patients/{pid}/access-report", (pid, "patient"), rid, purpose="PATRQT", **{"from": since}
    )
    assert response.status_code == 200, response.text
    report = response.json()
    expected = [_seq(server, r.headers["x-request-id"]) for r in [*made, found]]
    assert [e["seq"] for e in report["entries"]] == expected
    assert [e["kind"] for e in report["entries"]] == ["access", "access", "access", "access", "search"]
    assert [e["allowed"] for e in report["entries"]] == [True, False, True, True, True]
    assert [e["break_glass"] for e in report["entries"]] == [False, False, True, False, False]
    assert [e["role"] for e in report["entries"]] == [
        "authorized_medical_staff",
        "billing",
        "nurse",
        "patient",
        "authorized_medical_staff",
    ]
    # The organisation unit the nurse's token named, recorded in the trail; none where a token named none.
    assert [e["org_unit"] for e in report["entries"]] == [None, None, "emergency-dept", None, None]
    # The patient sees roles, not names; never the reason, never the search's query.
    assert all(e["subject_id"] is None for e in report["entries"])
    assert "car park" not in response.text and patient["name"][0]["family"] not in response.text
    # The read itself is on the trail, first, and not in the report.
    own = _seq(server, rid)
    assert report["audit_seq"] == own and own not in [e["seq"] for e in report["entries"]]
    assert "not a 164.528 accounting" in report["kind_of_report"]

    # A compliance officer's report: the same accesses, with who, and the patient's own report read.
    officer = _get(server, f"/v1/patients/{pid}/access-report", OFFICER, _rid("officer"), **{"from": since})
    assert officer.status_code == 200, officer.text
    entries = officer.json()["entries"]
    assert [e["seq"] for e in entries] == [*expected, own]
    assert entries[-1]["kind"] == "report" and entries[0]["subject_id"] == "dr-grey"
    assert "car park" not in officer.text

    # As FHIR: a Bundle of AuditEvents that fhir.resources' R4B models accept, break-the-glass labelled.
    fhir = _get(
        server,
        f"/v1/patients/{pid}/access-report",
        (pid, "patient"),
        _rid("fhir"),
        purpose="PATRQT",
        format="fhir",
        **{"from": since},
    )
    assert fhir.status_code == 200 and fhir.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(fhir.json())
    events = [entry.resource for entry in bundle.entry or []]
    seen = _seq(server, officer.request.headers["x-request-id"])  # the officer's read is listed now
    assert [e.id for e in events] == [f"audit-{s}" for s in [*expected, own, seen]]
    assert [bool(e.meta and e.meta.security) for e in events].count(True) == 1
    assert [e.agent[0].location.display for e in events if e.agent[0].location] == ["emergency-dept"]
    assert all(e.entity[0].what.reference == f"Patient/{pid}" for e in events)

    # The period: `to` is exclusive, `from` inclusive.
    first = report["entries"][0]["ts"]
    before = _get(server, f"/v1/patients/{pid}/access-report", OFFICER, _rid("to"), **{"from": since, "to": first})
    assert before.json()["entries"] == []
    bad = _get(server, f"/v1/patients/{pid}/access-report", OFFICER, _rid("bad"), **{"from": "yesterday"})
    assert bad.status_code == 422


@pytest.mark.parametrize(
    ("who", "purpose"),
    [
        (("PATIENT", "patient"), "PATRQT"),  # another patient: PATIENT is replaced by a real id below
        (("dr-grey", "physician"), "TREAT"),
        (("dr-grey", "authorized_medical_staff"), "HCOMPL"),
        (OFFICER, "TREAT"),
    ],
)
def test_no_one_else_gets_a_patients_report_and_the_refusal_is_on_it(
    server: ServerProcess, patients: Patients, who: tuple[str, str], purpose: str
) -> None:
    pid = patients.consenting[3]
    who = (patients.consenting[4], who[1]) if who[0] == "PATIENT" else who
    rid = _rid("refused")
    response = _get(server, f"/v1/patients/{pid}/access-report", who, rid, purpose=purpose)
    assert response.status_code == 403, response.text
    assert "entries" not in response.json()
    [record] = [r for r in _trail(server) if r.event.request_id == rid]
    assert record.event.function == "privacy:access-report" and record.event.allowed is False
    assert record.event.patient_id == pid
    # The refused attempt is itself an access the patient's report shows.
    report = _get(server, f"/v1/patients/{pid}/access-report", OFFICER, _rid("after"))
    assert record.seq in [e["seq"] for e in report.json()["entries"] if e["kind"] == "report" and e["allowed"] is False]


def test_a_break_the_glass_access_is_reviewed_and_disposed_of_on_the_chain(
    server: ServerProcess, patients: Patients
) -> None:
    pid = patients.consenting[5]
    glass = _summary(server, pid, ("rn-flag", "nurse"), "ETREAT", **{"X-Break-Glass-Reason": REASON})
    assert glass.status_code == 200, glass.text
    seq = _seq(server, glass.headers["x-request-id"])

    queue = _get(server, "/v1/reviews", OFFICER, _rid("queue"), state="open")
    assert queue.status_code == 200, queue.text
    [waiting] = [r for r in queue.json()["reviews"] if r["seq"] == seq]
    assert waiting["state"] == "open" and waiting["reason"] is None and waiting["subject_id"] == "rn-flag"
    assert "car park" not in queue.text and pid not in queue.text  # sealed, pseudonymous until opened/revealed
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "wardfn_review_max_age_seconds 259200.0" in metrics
    [size] = re.findall(r"^wardfn_review_open (\S+)$", metrics, re.M)
    [age] = re.findall(r"^wardfn_review_oldest_open_seconds (\S+)$", metrics, re.M)
    assert float(size) == len(queue.json()["reviews"]) >= 1 and float(age) > 0

    opened = _get(server, f"/v1/reviews/{seq}", OFFICER, _rid("open"))
    assert opened.status_code == 200 and opened.json()["reason"] == REASON
    assert _seq(server, opened.request.headers["x-request-id"]) == opened.json()["audit_seq"]

    # The nurse, holding a compliance role too, may not dispose of their own access: refused, recorded.
    own = httpx.post(
        f"{server.url}/v1/reviews/{seq}/dispositions",
        json={"disposition": "justified"},
        headers={**server.headers("rn-flag", "compliance_officer"), "X-Request-ID": _rid("own")},
    )
    assert own.status_code == 403 and own.json()["error"]["reasons"] == [
        "no one disposes of a review of their own access"
    ]
    refused = [r for r in _trail(server) if r.event.request_id == own.request.headers["x-request-id"]]
    assert [(r.event.function, r.event.outcome) for r in refused] == [("review:disposition", "policy_denied")]
    # A clinician's token disposes of nothing; "not justified" needs a note.
    assert (
        httpx.post(
            f"{server.url}/v1/reviews/{seq}/dispositions",
            json={"disposition": "justified"},
            headers=server.headers("dr-grey", "physician"),
        ).status_code
        == 403
    )
    assert (
        httpx.post(
            f"{server.url}/v1/reviews/{seq}/dispositions",
            json={"disposition": "not_justified"},
            headers=server.headers(*OFFICER),
        ).status_code
        == 422
    )

    note = f"no emergency for {pid}: see the ward's rota"
    first = httpx.post(
        f"{server.url}/v1/reviews/{seq}/dispositions",
        json={"disposition": "not_justified", "note": note},
        headers=server.headers(*OFFICER),
    )
    assert first.status_code == 201, first.text
    later = httpx.post(
        f"{server.url}/v1/reviews/{seq}/dispositions",
        json={"disposition": "referred"},
        headers=server.headers("co-li", "compliance_officer"),
    )
    assert later.status_code == 201, later.text
    closed = _get(server, "/v1/reviews", OFFICER, _rid("all"), state="all").json()["reviews"]
    [review] = [r for r in closed if r["seq"] == seq]
    assert review["state"] == "referred"
    assert [(d["disposition"], d["by"], d["note"]) for d in review["dispositions"]] == [
        ("not_justified", "co-ramos", note),
        ("referred", "co-li", None),
    ]  # superseded, not erased
    assert seq not in [r["seq"] for r in _get(server, "/v1/reviews", OFFICER, _rid("open2")).json()["reviews"]]

    # The dispositions are audit records, the note sealed, and the chain still verifies.
    trail = _trail(server)
    stored = {r.seq: r for r in trail}
    disposition = stored[first.json()["audit_seq"]]
    assert disposition.event.function == "review:disposition" and disposition.event.outcome == "not_justified"
    assert note not in (disposition.event.query or "") and pid not in (disposition.event.query or "")
    log = server.open_audit()
    try:
        assert log.verify().ok
    finally:
        log.close()

    # Revealing whom the review is about is audited and shows on that patient's report.
    reveal = httpx.post(f"{server.url}/v1/reviews/{seq}/reveal", headers=server.headers(*OFFICER))
    assert reveal.status_code == 200 and reveal.json()["patient_id"] == pid
    report = _get(server, f"/v1/patients/{pid}/access-report", (pid, "patient"), _rid("revealed"), purpose="PATRQT")
    kinds = [(e["kind"], e["role"]) for e in report.json()["entries"]]
    assert ("reveal", "compliance_officer") in kinds and ("access", "nurse") in kinds
    assert all("car park" not in json.dumps(e) for e in report.json()["entries"])


def test_a_refused_break_the_glass_attempt_waits_for_review_too(server: ServerProcess, patients: Patients) -> None:
    refused = _summary(
        server, patients.consenting[7], ("clerk-2", "billing"), "ETREAT", **{"X-Break-Glass-Reason": "needed it"}
    )
    assert refused.status_code == 403, refused.text
    seq = _seq(server, refused.headers["x-request-id"])
    queue = _get(server, "/v1/reviews", OFFICER, _rid("refused-queue")).json()["reviews"]
    [waiting] = [r for r in queue if r["seq"] == seq]
    assert waiting["allowed"] is False and waiting["subject_id"] == "clerk-2" and waiting["state"] == "open"
    assert _get(server, f"/v1/reviews/{seq}", OFFICER, _rid("refused-open")).json()["reason"] == "needed it"


def test_a_record_not_flagged_is_no_review(server: ServerProcess, patients: Patients) -> None:
    plain = _summary(server, patients.consenting[6], ("dr-grey", "authorized_medical_staff"), "TREAT")
    seq = _seq(server, plain.headers["x-request-id"])
    assert _get(server, f"/v1/reviews/{seq}", OFFICER, _rid("none")).status_code == 404
    assert _get(server, "/v1/reviews", ("dr-grey", "physician"), _rid("clin")).status_code == 403
