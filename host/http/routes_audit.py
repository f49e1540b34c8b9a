"""Reading the audit trail over HTTP, for compliance officers."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

from fastapi import APIRouter, Query, Request

from host.attempts import AuditRead
from host.http.deps import HostDep, SubjectDep
from host.http.errors import request_id_of
from host.http.openapi import error_responses
from host.http.schemas import AuditPage, AuditRecordOut, Purpose
from host.service import AUDIT_READ_FUNCTION
from host.types import AuditRecord

AUDIT_PAGE_MAX = 1000
# Fields that may name a patient (a search's query, a break-the-glass reason): never sent, only named.
_SEALED_AUDIT_FIELDS = ("query", "break_glass_reason")

router = APIRouter()


@router.get(
    "/v1/audit/records",
    response_model=AuditPage,
    tags=["audit"],
    responses=error_responses(401, 403, 413, 422, 500, 503),
)
async def audit_records(
    request: Request,
    host: HostDep,
    subject: SubjectDep,
    purpose: Annotated[Purpose, Query()] = Purpose.HCOMPL,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_MAX)] = 100,
) -> AuditPage:
    """The audit trail, oldest first, a page at a time: for compliance officers (role
    `compliance_officer`, purpose HCOMPL, as the policy decides). Every read, allowed or refused,
    is itself an audit record, written before anything is read."""
    request.state.function = AUDIT_READ_FUNCTION
    read = AuditRead(request_id_of(request), subject, purpose.value, after_seq, limit)
    page = await asyncio.get_running_loop().run_in_executor(request.app.state.invokers, host.service.read_audit, read)
    request.state.outcome = "ok"
    return AuditPage(
        audit_seq=page.audit_seq,
        records=[_audit_record_out(r) for r in page.records],
        next_after_seq=page.records[-1].seq if page.records else after_seq,
    )


def _audit_record_out(record: AuditRecord) -> AuditRecordOut:
    fields = dataclasses.asdict(record.event)
    sealed = [name for name in _SEALED_AUDIT_FIELDS if fields.pop(name) is not None]
    return AuditRecordOut(
        **fields,
        seq=record.seq,
        ts=record.timestamp,
        sealed=sealed,
        prev_hash=record.prev_hash,
        hash=record.hash,
        chain=record.chain,
        n=record.n,
    )
