"""Host errors to HTTP status codes and error bodies, registered on the app in one place."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from host.errors import (
    INVALID_INPUT_REASONS,
    AuthenticationError,
    FunctionNotFound,
    FunctionReturnedError,
    FunctionTimedOut,
    InvalidArguments,
    InvalidRequest,
    PatientNotFound,
    PolicyDenied,
    ReviewNotFound,
    Unavailable,
    WardfnError,
)
from host.http.schemas import ErrorResponse

log = logging.getLogger("wardfn.http")

# What a function's own error case becomes. The function's message is not passed
# on: it could carry patient data, and errors never do. Only a reason code from the
# fixed list (host.errors.INVALID_INPUT_REASONS) is, when the function gave one.
_FUNCTION_ERRORS = {
    "invalid-input": (422, "the function rejected its input"),
    "not-found": (404, "the function found nothing for this request"),
    "internal": (500, "the function failed"),
}

_STATUS: list[tuple[type[WardfnError], int]] = [
    (AuthenticationError, 401),
    (InvalidRequest, 422),
    (FunctionNotFound, 404),
    (PatientNotFound, 404),
    (ReviewNotFound, 404),
    (PolicyDenied, 403),
    (Unavailable, 503),
    (FunctionTimedOut, 504),
]


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "unknown")


def error_response(
    request: Request, status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = ErrorResponse.model_validate(
        {"error": {"code": code, "message": message, "request_id": request_id_of(request), **extra}}
    )
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers)


async def _wardfn_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WardfnError)
    request.state.outcome = exc.code
    if isinstance(exc, FunctionReturnedError):
        status, message = _FUNCTION_ERRORS.get(exc.kind, _FUNCTION_ERRORS["internal"])
        if exc.reason is not None:
            message = f"{message}: {INVALID_INPUT_REASONS[exc.reason]}"
        return error_response(request, status, exc.code, message, reason=exc.reason)
    if isinstance(exc, InvalidArguments):
        fields = [{"field": field, "rule": rule} for field, rule in exc.problems]
        return error_response(request, 422, exc.code, str(exc), fields=fields)
    if isinstance(exc, PolicyDenied):
        return error_response(request, 403, exc.code, "denied by policy", reasons=exc.reasons)
    if isinstance(exc, Unavailable):
        # The detail names the host's infrastructure (a database's address, a sidecar's URL): it is
        # for the operators' log, keyed by request id; the caller learns what failed and what to do.
        log.error(json.dumps({"event": exc.code, "request_id": request_id_of(request), "detail": str(exc)}))
        what = exc.code.removesuffix("_unavailable").replace("_", " ")
        return error_response(
            request,
            503,
            exc.code,
            f"the {what} is unavailable, so no data was released; retry shortly, "
            "or quote the request id to the operators",
        )
    status = next((s for kind, s in _STATUS if isinstance(exc, kind)), 500)
    return error_response(request, status, exc.code, str(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return error_response(request, 400, "malformed_json", "the request body is not valid JSON")
    # Name the fields and the rules, never echo the values: they may be patient data.
    named = [(_location(p.get("loc", ())), str(p.get("type", "invalid"))) for p in problems]
    fields = sorted({field for field, _ in named})
    return error_response(
        request,
        422,
        "invalid_request",
        f"invalid or missing: {', '.join(fields)}",
        fields=[{"field": field, "rule": rule} for field, rule in dict.fromkeys(named)],
    )


def _location(loc: Any) -> str:
    return ".".join(str(part) for part in loc if part != "body")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # Starlette's own headers pass on: a 405 says which methods the path allows (`Allow`, RFC 9110).
    return error_response(request, exc.status_code, "http_error", str(exc.detail), headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    event = {"event": "unexpected_error", "request_id": request_id_of(request), "type": type(exc).__name__}
    log.error(json.dumps(event))
    return error_response(request, 500, "internal_error", "internal error; quote the request id to the operators")


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app can raise answers with the one error body."""
    app.add_exception_handler(WardfnError, _wardfn_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
