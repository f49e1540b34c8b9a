"""Invoking functions: by name, and the patient summary; and the catalogue of functions served."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from host.assembly import Host
from host.attempts import Invocation
from host.http.deps import HostDep, SubjectDep
from host.http.errors import request_id_of
from host.http.schemas import PATIENT_ID_PATTERN, FunctionInfo, InvokeBody, InvokeResponse, Purpose
from host.types import Subject

SUMMARY_FUNCTION = "patient_lookup"
BREAK_GLASS_HEADER = "X-Break-Glass-Reason"

router = APIRouter()


async def _run(
    request: Request,
    host: Host,
    subject: Subject,
    name: str,
    patient_id: str | None,
    purpose: Purpose,
    args: dict[str, Any],
    break_glass_reason: str | None = None,
) -> InvokeResponse:
    if name in host.registry.names():
        request.state.function = name
    # Wasm runs in a worker thread: the event loop keeps serving, and each store stays on
    # the one thread that runs its invocation. A few threads, not anyio's forty: the work
    # is CPU-bound under one GIL, and wasmtime-py releases the GIL around every one of its
    # many ctypes calls, so forty threads mostly queue for the GIL (the profile showed it).
    reason = break_glass_reason if break_glass_reason is not None else request.headers.get(BREAK_GLASS_HEADER)
    call = Invocation(request_id_of(request), subject, name, patient_id, purpose.value, args, reason)
    result = await asyncio.get_running_loop().run_in_executor(request.app.state.invokers, host.service.invoke, call)
    request.state.outcome = "ok"
    return InvokeResponse(
        request_id=result.request_id,
        function=result.function,
        version=result.version,
        decision_id=result.decision_id,
        audit_seq=result.audit_seq,
        result=result.body,
    )


@router.post("/v1/functions/{name}/invoke", response_model=InvokeResponse, tags=["functions"])
async def invoke(request: Request, name: str, body: InvokeBody, host: HostDep, subject: SubjectDep) -> InvokeResponse:
    """Invoke a function for one patient (or none), for a purpose of use."""
    return await _run(request, host, subject, name, body.patient_id, body.purpose, body.args, body.break_glass_reason)


@router.get("/v1/patients/{patient_id}/summary", response_model=InvokeResponse, tags=["patients"])
async def summary(
    request: Request,
    host: HostDep,
    subject: SubjectDep,
    patient_id: Annotated[str, Path(pattern=PATIENT_ID_PATTERN)],
    purpose: Annotated[Purpose, Query()] = Purpose.TREAT,
) -> InvokeResponse:
    """The patient's clinical summary (runs patient_lookup). Break-the-glass: purpose=ETREAT and an
    `X-Break-Glass-Reason` header."""
    return await _run(request, host, subject, SUMMARY_FUNCTION, patient_id, purpose, {})


@router.get("/v1/functions", response_model=list[FunctionInfo], tags=["functions"])
async def functions(host: HostDep, _subject: SubjectDep) -> list[FunctionInfo]:
    """The functions this host serves."""
    return [
        FunctionInfo(
            name=f.name,
            version=f.manifest.version,
            description=f.manifest.description,
            action=f.manifest.action,
            patient=f.manifest.patient,
            reads=list(f.manifest.reads),
            digest=f"sha256:{f.artifact.cwasm_sha256}",
        )
        for f in host.registry.all()
    ]
