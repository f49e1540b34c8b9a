"""What routes depend on: the host, and the subject its verifier vouches for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from host.assembly import Host
from host.errors import AuthenticationError
from host.http.errors import request_id_of
from host.types import Subject

# Describes the scheme in the OpenAPI; the verifier reads the header itself (auto_error off), so that
# every failure is one of ours: audited, and answered 401 with the one error body.
_BEARER = HTTPBearer(
    bearerFormat="JWT", description="A bearer JWT; in development `wardfn token` prints one.", auto_error=False
)


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


HostDep = Annotated[Host, Depends(_host)]


async def _subject(request: Request, host: HostDep, _scheme: Annotated[object, Depends(_BEARER)]) -> Subject:
    try:
        return host.verifier.verify(request.headers.get("authorization"))
    except AuthenticationError as exc:
        params = request.path_params
        await run_in_threadpool(
            host.service.record_rejected, request_id_of(request), exc.code, params.get("name"), params.get("patient_id")
        )
        raise


SubjectDep = Annotated[Subject, Depends(_subject)]
