"""The privacy office over HTTP: a patient's access report, and the break-the-glass review queue.

Every route here is an act on the audit trail: the policy decides it and its audit record is
durable before anything is read (`InvocationService.oversee`), as for `/v1/audit/records`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from host.http.deps import HostDep, SubjectDep
from host.http.errors import request_id_of
from host.http.openapi import error_responses
from host.http.schemas import (
    PATIENT_ID_PATTERN,
    AccessEntryOut,
    AccessReportOut,
    DispositionIn,
    DispositionOut,
    DispositionRecordOut,
    NotJustifiedIn,
    Purpose,
    RevealOut,
    ReviewOut,
    ReviewPage,
)
from host.privacy import fhir
from host.privacy.office import AccessReport
from host.privacy.report import END_OF_TIME, timestamp
from host.privacy.reviews import STATES, Review

FHIR_JSON = "application/fhir+json"
T = TypeVar("T")

router = APIRouter()


async def _off_loop(request: Request, call: Callable[..., T], *args: Any) -> T:
    """Run a trail read on the invocation threads, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(request.app.state.invokers, call, *args)


@router.get(
    "/v1/patients/{patient_id}/access-report",
    response_model=AccessReportOut,
    tags=["privacy"],
    responses={
        200: {"content": {FHIR_JSON: {"schema": {"type": "object"}}}},
        **error_responses(401, 403, 413, 422, 500, 503),
    },
)
async def access_report(
    request: Request,
    host: HostDep,
    subject: SubjectDep,
    patient_id: Annotated[str, Path(pattern=PATIENT_ID_PATTERN)],
    purpose: Annotated[Purpose, Query()] = Purpose.HCOMPL,
    since: Annotated[datetime | None, Query(alias="from", description="inclusive; UTC unless a zone is given")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="exclusive; UTC unless a zone is given")] = None,
    format: Annotated[Literal["json", "fhir"] | None, Query()] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Any:
    """Who looked at the patient's record in [from, to): a right-of-access report (GDPR Article 15,
    HIPAA 164.524), not a 164.528 accounting of disclosures. For the patient themselves (purpose
    PATRQT) and compliance officers (HCOMPL, the default). `format=fhir` (or `Accept:
    application/fhir+json`) answers a FHIR R4 Bundle of AuditEvent resources."""
    request.state.function = "privacy:access-report"
    start, end = timestamp(since, ""), timestamp(until, END_OF_TIME)
    report: AccessReport = await _off_loop(
        request, host.privacy.access_report, request_id_of(request), subject, patient_id, purpose.value, start, end
    )
    request.state.outcome = "ok"
    if format == "fhir" or (format is None and accept is not None and FHIR_JSON in accept):
        body = fhir.bundle(report.patient_id, list(report.entries), report.generated)
        return JSONResponse(body, media_type=FHIR_JSON)
    return AccessReportOut(
        patient_id=report.patient_id,
        since=report.since or None,
        until=report.until if report.until != END_OF_TIME else None,
        audit_seq=report.audit_seq,
        generated=report.generated,
        kind_of_report="right of access (GDPR Article 15, HIPAA 164.524); not a 164.528 accounting of disclosures",
        entries=[AccessEntryOut(**vars(e)) for e in report.entries],
    )


@router.get(
    "/v1/reviews", response_model=ReviewPage, tags=["privacy"], responses=error_responses(401, 403, 413, 422, 500, 503)
)
async def reviews(
    request: Request,
    host: HostDep,
    subject: SubjectDep,
    state: Annotated[Literal["open", "referred", "closed", "all"], Query()] = "open",
    purpose: Annotated[Purpose, Query()] = Purpose.HCOMPL,
) -> ReviewPage:
    """The break-the-glass review queue, oldest first: every break-the-glass access and refused attempt,
    with its dispositions. Compliance officers (HCOMPL); reading it is audited."""
    request.state.function = "review:list"
    wanted = None if state == "all" else state
    assert wanted is None or wanted in STATES
    seq, found = await _off_loop(request, host.privacy.reviews, request_id_of(request), subject, purpose.value, wanted)
    request.state.outcome = "ok"
    return ReviewPage(audit_seq=seq, reviews=[review_out(r) for r in found])


@router.get(
    "/v1/reviews/{seq}",
    response_model=ReviewOut,
    tags=["privacy"],
    responses=error_responses(401, 403, 404, 413, 422, 500, 503),
)
async def open_review(
    request: Request,
    host: HostDep,
    subject: SubjectDep,
    seq: Annotated[int, Path(ge=1, le=2**62)],
    purpose: Annotated[Purpose, Query()] = Purpose.HCOMPL,
) -> ReviewOut:
    """One review, with the break-the-glass reason unsealed for the officer (opening it is audited)."""
    request.state.function = "review:open"
    opened = await _off_loop(request, host.privacy.open_review, request_id_of(request), subject, purpose.value, seq)
    request.state.outcome = "ok"
    return review_out(opened.review, opened.reason, opened.audit_seq)


@router.post(
    "/v1/reviews/{seq}/dispositions",
    response_model=DispositionOut,
    status_code=201,
    tags=["privacy"],
    responses=error_responses(400, 401, 403, 404, 413, 422, 500, 503),
)
async def dispose(
    request: Request,
    host: HostDep,
    subject: SubjectDep,
    seq: Annotated[int, Path(ge=1, le=2**62)],
    body: Annotated[DispositionIn | NotJustifiedIn, Body(discriminator="disposition")],
) -> DispositionOut:
    """Dispose of a review: justified, not_justified (with a note) or referred. The disposition is an
    audit record; a later one supersedes it, none erases it; no one disposes of their own access."""
    request.state.function = "review:disposition"
    record = await _off_loop(
        request,
        host.privacy.dispose,
        request_id_of(request),
        subject,
        body.purpose.value,
        seq,
        body.disposition,
        body.note,
    )
    request.state.outcome = "ok"
    return DispositionOut(audit_seq=record.seq, review_of=seq, disposition=body.disposition, ts=record.timestamp)


@router.post(
    "/v1/reviews/{seq}/reveal",
    response_model=RevealOut,
    tags=["privacy"],
    responses=error_responses(401, 403, 404, 413, 422, 500, 503),
)
async def reveal(
    request: Request,
    host: HostDep,
    subject: SubjectDep,
    seq: Annotated[int, Path(ge=1, le=2**62)],
    purpose: Annotated[Purpose, Query()] = Purpose.HCOMPL,
) -> RevealOut:
    """Whom a review is about: the reveal is audited, and listed on that patient's access report."""
    request.state.function = "privacy:reveal"
    patient_id = await _off_loop(request, host.privacy.reveal, request_id_of(request), subject, purpose.value, seq)
    request.state.outcome = "ok"
    return RevealOut(review_of=seq, patient_id=patient_id)


def review_out(review: Review, reason: str | None = None, audit_seq: int | None = None) -> ReviewOut:
    """A review as the API shows it: never the patient (reveal for that), the reason only once opened."""
    event = review.record.event
    return ReviewOut(
        seq=review.seq,
        ts=review.record.timestamp,
        state=review.state,  # type: ignore[arg-type]  # one of STATES
        subject_id=event.subject_id,
        role=event.role,
        function=event.function,
        purpose=event.purpose,
        allowed=event.allowed,
        outcome=event.outcome,
        reason=reason,
        audit_seq=audit_seq,
        dispositions=[
            DispositionRecordOut.model_validate(
                {"seq": d.seq, "ts": d.ts, "disposition": d.code, "by": d.by, "note": d.note}
            )
            for d in review.dispositions
        ],
    )
