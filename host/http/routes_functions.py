"""Invoking functions: by name, and the patient summary; and the catalogue of functions served."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response

from host.assembly import Host
from host.attempts import Invocation
from host.http.deps import HostDep, SubjectDep
from host.http.errors import request_id_of
from host.http.openapi import BREAK_GLASS_REASON_MAX, error_responses
from host.http.schemas import PATIENT_ID_PATTERN, FunctionInfo, InvokeBody, InvokeResponse, Purpose
from host.types import Subject

SUMMARY_FUNCTION = "patient_lookup"
BREAK_GLASS_HEADER = "X-Break-Glass-Reason"
# On every answer a function gave: "true" when the caller broke the glass to get it.
BREAK_GLASS_ANSWER_HEADER = "X-Break-Glass"

_ANSWERED: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            BREAK_GLASS_ANSWER_HEADER: {
                "description": "`true` if this answer was released by break-the-glass (as `break_glass` says), "
                "else `false`.",
                "required": True,
                "schema": {"type": "string", "enum": ["true", "false"]},
            }
        }
    }
}
BreakGlassReason = Annotated[
    str | None,
    Header(
        alias=BREAK_GLASS_HEADER,
        max_length=BREAK_GLASS_REASON_MAX,
        description="Break-the-glass, with purpose ETREAT: why the usual rules are overridden (sealed in the audit).",
    ),
]

router = APIRouter()


async def _run(
    request: Request,
    response: Response,
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
    call = Invocation(request_id_of(request), subject, name, patient_id, purpose.value, args, break_glass_reason)
    result = await asyncio.get_running_loop().run_in_executor(request.app.state.invokers, host.service.invoke, call)
    request.state.outcome = "ok"
    response.headers[BREAK_GLASS_ANSWER_HEADER] = "true" if result.break_glass else "false"
    return InvokeResponse(
        request_id=result.request_id,
        function=result.function,
        version=result.version,
        decision_id=result.decision_id,
        audit_seq=result.audit_seq,
        break_glass=result.break_glass,
        result=result.body,
    )


@router.post(
    "/v1/functions/{name}/invoke",
    response_model=InvokeResponse,
    tags=["functions"],
    responses={**_ANSWERED, **error_responses(400, 401, 403, 404, 413, 422, 500, 503, 504)},
)
async def invoke(
    request: Request,
    response: Response,
    name: str,
    body: InvokeBody,
    host: HostDep,
    subject: SubjectDep,
    break_glass_header: BreakGlassReason = None,
) -> InvokeResponse:
    """Invoke a function for one patient (or none), for a purpose of use."""
    reason = body.break_glass_reason if body.break_glass_reason is not None else break_glass_header
    return await _run(request, response, host, subject, name, body.patient_id, body.purpose, body.args, reason)


@router.get(
    "/v1/patients/{patient_id}/summary",
    response_model=InvokeResponse,
    tags=["patients"],
    responses={**_ANSWERED, **error_responses(401, 403, 404, 413, 422, 500, 503, 504)},
)
async def summary(
    request: Request,
    response: Response,
    host: HostDep,
    subject: SubjectDep,
    patient_id: Annotated[str, Path(pattern=PATIENT_ID_PATTERN)],
    purpose: Annotated[Purpose, Query()] = Purpose.TREAT,
    break_glass_header: BreakGlassReason = None,
) -> InvokeResponse:
    """The patient's clinical summary (runs patient_lookup). Break-the-glass: purpose=ETREAT and an
    `X-Break-Glass-Reason` header."""
    return await _run(request, response, host, subject, SUMMARY_FUNCTION, patient_id, purpose, {}, break_glass_header)


@router.get(
    "/v1/functions",
    response_model=list[FunctionInfo],
    tags=["functions"],
    responses=error_responses(401, 413, 500, 503),
)
async def functions(host: HostDep, _subject: SubjectDep) -> list[FunctionInfo]:
    """The functions this host serves, each with the JSON Schema its `args` must match (`args_schema`)."""
    return [
        FunctionInfo(
            name=f.name,
            version=f.manifest.version,
            description=f.manifest.description,
            action=f.manifest.action,
            patient=f.manifest.patient,
            reads=list(f.manifest.reads),
            digest=f"sha256:{f.artifact.cwasm_sha256}",
            args_schema=f.arguments.schema,
        )
        for f in host.registry.all()
    ]
