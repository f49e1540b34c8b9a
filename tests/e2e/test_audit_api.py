"""GET /v1/audit/records: the trail for compliance officers, a page at a time, every read itself on
the trail before anything is read; refused (and recorded) for anyone else."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from host.types import AuditRecord
from tests.e2e.conftest import Patients
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.components

OFFICER = ("co-ramos", "compliance_officer")


def _rid(label: str) -> str:
    return f"audit-api-{label}-{time.monotonic_ns()}"


def _read(server: ServerProcess, sub: str, role: str, rid: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{server.url}/v1/audit/records",
        params=params,
        headers={**server.headers(sub, role), "X-Request-ID": rid},
        timeout=30,
    )


def _stored(server: ServerProcess, request_id: str) -> list[AuditRecord]:
    log = server.open_audit()
    try:
        return [r for r in log.records(limit=100_000) if r.event.request_id == request_id]
    finally:
        log.close()


def test_a_compliance_officer_pages_through_the_trail_and_the_read_is_recorded_first(
    server: ServerProcess, patients: Patients
) -> None:
    summary = httpx.get(f"{server.url}/v1/patients/{patients.consenting[0]}/summary", headers=server.headers())
    assert summary.status_code == 200, summary.text

    rid = _rid("page")
    first = _read(server, *OFFICER, rid, limit=2)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [r["seq"] for r in page["records"]] == [1, 2] and page["next_after_seq"] == 2
    # The read's own record was durable before the page was read: it is on the trail, allowed.
    [own] = _stored(server, rid)
    assert own.seq == page["audit_seq"] and own.event.function == "audit:records"
    assert own.event.outcome == "ok" and own.event.allowed is True and own.event.patient_id is None
    assert own.event.purpose == "HCOMPL" and own.event.subject_id == OFFICER[0]

    rest = _read(server, *OFFICER, _rid("rest"), after_seq=page["next_after_seq"], limit=1000).json()["records"]
    seqs = [r["seq"] for r in rest]
    assert seqs == list(range(3, 3 + len(seqs)))  # the next page follows on, nothing skipped or repeated
    assert page["audit_seq"] in [1, 2, *seqs]
    # The stored hashes, as `wardfn audit verify` checks them: the API shows the chain as it is.
    log = server.open_audit()
    try:
        stored = {r.seq: r.hash for r in log.records(limit=100_000)}
    finally:
        log.close()
    assert all(r["hash"] == stored[r["seq"]] for r in [*page["records"], *rest])
    summary_record = next(r for r in [*page["records"], *rest] if r["request_id"] == summary.headers["x-request-id"])
    assert summary_record["patient_id"] == patients.consenting[0] and summary_record["function"] == "patient_lookup"


def test_a_break_the_glass_reason_stays_sealed(server: ServerProcess, patients: Patients) -> None:
    reason = "found unresponsive in the car park"
    glass = httpx.get(
        f"{server.url}/v1/patients/{patients.consenting[0]}/summary",
        params={"purpose": "ETREAT"},
        headers={**server.headers("rn-glass", "nurse"), "X-Break-Glass-Reason": reason},
    )
    assert glass.status_code == 200, glass.text
    response = _read(server, *OFFICER, _rid("sealed"), limit=1000)
    assert response.status_code == 200, response.text
    [record] = [r for r in response.json()["records"] if r["request_id"] == glass.headers["x-request-id"]]
    assert record["break_glass"] is True and record["review"] is True
    assert record["sealed"] == ["break_glass_reason"]
    assert "car park" not in response.text


@pytest.mark.parametrize(
    ("who", "purpose"),
    [(("dr-grey", "physician"), "HCOMPL"), (("dr-grey", "authorized_medical_staff"), "HCOMPL"), (OFFICER, "TREAT")],
)
def test_anyone_else_or_another_purpose_is_refused_and_the_refusal_recorded(
    server: ServerProcess, who: tuple[str, str], purpose: str
) -> None:
    rid = _rid("refused")
    response = _read(server, *who, rid, purpose=purpose)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["reasons"] == ["no role of the subject permits this action for this purpose of use"]
    assert "records" not in response.json()
    [record] = _stored(server, rid)
    assert record.event.function == "audit:records" and record.event.allowed is False
    assert record.event.outcome == "policy_denied"


def test_no_token_is_401_and_a_page_too_large_is_422(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v1/audit/records").status_code == 401
    assert _read(server, *OFFICER, _rid("large"), limit=1001).status_code == 422
