"""The HTTP API. The only module that imports FastAPI and turns host errors into status codes."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from host.assembly import Host, open_host
from host.config import Settings, load_settings
from host.errors import (
    AuthenticationError,
    FunctionNotFound,
    FunctionReturnedError,
    FunctionTimedOut,
    InvalidRequest,
    PatientNotFound,
    PolicyDenied,
    Unavailable,
    WardfnError,
)
from host.http_schemas import (
    PATIENT_ID_PATTERN,
    AuditPage,
    AuditRecordOut,
    ErrorResponse,
    FunctionInfo,
    InvokeBody,
    InvokeResponse,
    Purpose,
)
from host.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from host.service import AUDIT_READ_FUNCTION
from host.types import AuditRecord, Subject

SUMMARY_FUNCTION = "patient_lookup"
AUDIT_PAGE_MAX = 1000
REQUEST_ID_HEADER = "X-Request-ID"
BREAK_GLASS_HEADER = "X-Break-Glass-Reason"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

log = logging.getLogger("wardfn.http")

# What a function's own error case becomes. The function's message is not passed
# on: it could carry patient data, and errors never do.
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
    (PolicyDenied, 403),
    (Unavailable, 503),
    (FunctionTimedOut, 504),
]


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "unknown")


def _error(request: Request, status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = ErrorResponse.model_validate(
        {"error": {"code": code, "message": message, "request_id": _request_id(request), **extra}}
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


async def _wardfn_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WardfnError)
    request.state.outcome = exc.code
    if isinstance(exc, FunctionReturnedError):
        status, message = _FUNCTION_ERRORS.get(exc.kind, _FUNCTION_ERRORS["internal"])
        return _error(request, status, exc.code, message)
    if isinstance(exc, PolicyDenied):
        return _error(request, 403, exc.code, "denied by policy", reasons=exc.reasons)
    if isinstance(exc, Unavailable):
        # The detail names the host's infrastructure (a database's address, a sidecar's URL): it is
        # for the operators' log, keyed by request id; the caller learns what failed and what to do.
        log.error(json.dumps({"event": exc.code, "request_id": _request_id(request), "detail": str(exc)}))
        what = exc.code.removesuffix("_unavailable").replace("_", " ")
        return _error(
            request,
            503,
            exc.code,
            f"the {what} is unavailable, so no data was released; retry shortly, "
            "or quote the request id to the operators",
        )
    status = next((s for kind, s in _STATUS if isinstance(exc, kind)), 500)
    return _error(request, status, exc.code, str(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return _error(request, 400, "malformed_json", "the request body is not valid JSON")
    # Name the fields, never echo the values: they may be patient data.
    fields = sorted({".".join(str(part) for part in p.get("loc", ()) if part != "body") for p in problems})
    return _error(request, 422, "invalid_request", f"invalid or missing: {', '.join(fields)}")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error(request, exc.status_code, "http_error", str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(json.dumps({"event": "unexpected_error", "request_id": _request_id(request), "type": type(exc).__name__}))
    return _error(request, 500, "internal_error", "internal error; quote the request id to the operators")


class RequestContext:
    """ASGI middleware: a request id on every request and response, a body size cap, and one log line
    per request that names the route template, never the path (paths carry patient ids)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        offered = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = offered if _SAFE_REQUEST_ID.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await self._too_large(request_id, send_with_id)
        else:
            received, refused = 0, False

            async def capped_receive() -> Message:
                # Past the cap, answer 413 ourselves and tell the app the client left:
                # the app's own body parsing would turn an exception into a 400.
                nonlocal received, refused
                if refused:
                    return {"type": "http.disconnect"}
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        refused = True
                        await self._too_large(request_id, send_with_id)
                        return {"type": "http.disconnect"}
                return message

            async def guarded_send(message: Message) -> None:
                if not refused:
                    await send_with_id(message)

            await self.app(scope, capped_receive, guarded_send)
        route = scope.get("route")
        state = scope["state"]
        line = {
            "request_id": request_id,
            "method": scope.get("method"),
            "route": getattr(route, "path", "unmatched"),
            "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        # Set by the invocation routes: a registered function's name (never the requested
        # name, which is caller input) and the outcome code. Nothing else about the call.
        if "function" in state:
            line["function"] = state["function"]
        if "outcome" in state:
            line["outcome"] = state["outcome"]
        log.info(json.dumps(line))

    async def _too_large(self, request_id: str, send: Callable[[Message], Awaitable[None]]) -> None:
        body = {
            "error": {
                "code": "payload_too_large",
                "message": f"request bodies are limited to {self.max_body} bytes",
                "request_id": request_id,
            }
        }
        await JSONResponse(body, status_code=413)({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


HostDep = Annotated[Host, Depends(_host)]


async def _subject(request: Request, host: HostDep) -> Subject:
    try:
        return host.verifier.verify(request.headers.get("authorization"))
    except AuthenticationError as exc:
        params = request.path_params
        await run_in_threadpool(
            host.service.record_rejected, _request_id(request), exc.code, params.get("name"), params.get("patient_id")
        )
        raise


SubjectDep = Annotated[Subject, Depends(_subject)]


def create_app(settings: Settings, host: Host | None = None) -> FastAPI:
    """The ASGI app. Everything expensive is built in the lifespan, unless a built host is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = host is None
        app.state.host = open_host(settings) if owned else host
        _reload_on_sighup(app.state.host)
        app.state.invokers = ThreadPoolExecutor(settings.invoke_threads, thread_name_prefix="wardfn-invoke")
        try:
            yield
        finally:
            app.state.invokers.shutdown(wait=True, cancel_futures=True)
            if owned:
                app.state.host.close()

    app = FastAPI(
        title="wardfn",
        version="0.1.0",
        summary="Patient-data functions in WebAssembly sandboxes, behind a policy decision, with an audit trail.",
        lifespan=lifespan,
        responses={code: {"model": ErrorResponse} for code in (401, 403, 404, 413, 422, 500, 503, 504)},
    )
    app.add_middleware(RequestContext, max_body=settings.max_request_bytes)
    app.add_exception_handler(WardfnError, _wardfn_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

    async def run(
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
        result = await asyncio.get_running_loop().run_in_executor(
            app.state.invokers,
            functools.partial(
                host.service.invoke, _request_id(request), subject, name, patient_id, purpose.value, args, reason
            ),
        )
        request.state.outcome = "ok"
        return InvokeResponse(
            request_id=result.request_id,
            function=result.function,
            version=result.version,
            decision_id=result.decision_id,
            audit_seq=result.audit_seq,
            result=result.body,
        )

    @app.post("/v1/functions/{name}/invoke", response_model=InvokeResponse, tags=["functions"])
    async def invoke(
        request: Request, name: str, body: InvokeBody, host: HostDep, subject: SubjectDep
    ) -> InvokeResponse:
        """Invoke a function for one patient (or none), for a purpose of use."""
        return await run(
            request, host, subject, name, body.patient_id, body.purpose, body.args, body.break_glass_reason
        )

    @app.get("/v1/patients/{patient_id}/summary", response_model=InvokeResponse, tags=["patients"])
    async def summary(
        request: Request,
        host: HostDep,
        subject: SubjectDep,
        patient_id: Annotated[str, Path(pattern=PATIENT_ID_PATTERN)],
        purpose: Annotated[Purpose, Query()] = Purpose.TREAT,
    ) -> InvokeResponse:
        """The patient's clinical summary (runs patient_lookup). Break-the-glass: purpose=ETREAT and an
        `X-Break-Glass-Reason` header."""
        return await run(request, host, subject, SUMMARY_FUNCTION, patient_id, purpose, {})

    @app.get("/v1/audit/records", response_model=AuditPage, tags=["audit"])
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
        own_seq, records = await asyncio.get_running_loop().run_in_executor(
            app.state.invokers,
            functools.partial(host.service.read_audit, _request_id(request), subject, purpose.value, after_seq, limit),
        )
        request.state.outcome = "ok"
        return AuditPage(
            audit_seq=own_seq,
            records=[_audit_record_out(r) for r in records],
            next_after_seq=records[-1].seq if records else after_seq,
        )

    @app.get("/v1/functions", response_model=list[FunctionInfo], tags=["functions"])
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

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(host: HostDep) -> Response:
        """Prometheus metrics (no patient data: labels are function names, outcome codes and results)."""
        return Response(host.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/readyz", tags=["operations"])
    async def readyz(host: HostDep) -> JSONResponse:
        """Ready to serve: the policy engine answers and the store and the audit trail are reachable."""
        # Side by side: with the database away each waits out its (short) checkout timeout.
        store, audit = await asyncio.gather(
            run_in_threadpool(host.store.healthy), run_in_threadpool(host.audit.healthy)
        )
        checks = {"policy": host.policy.healthy(), "store": store, "audit": audit}
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/v1/policy", tags=["operations"])
    async def policy_status(host: HostDep, _subject: SubjectDep) -> dict[str, Any]:
        """The policy engine: its revision, health and decision-cache counters (no patient data)."""
        cache = getattr(host.policy, "stats", None)
        return {
            "engine": host.settings.policy,
            "revision": host.policy.revision,
            "healthy": host.policy.healthy(),
            "decision_cache": cache.as_json() if cache is not None else None,
        }

    return app


# Fields that may name a patient (a search's query, a break-the-glass reason): never sent, only named.
_SEALED_AUDIT_FIELDS = ("query", "break_glass_reason")


def _audit_record_out(record: AuditRecord) -> AuditRecordOut:
    fields = dataclasses.asdict(record.event)
    sealed = [name for name in _SEALED_AUDIT_FIELDS if fields.pop(name) is not None]
    return AuditRecordOut(
        **fields, seq=record.seq, ts=record.timestamp, sealed=sealed, prev_hash=record.prev_hash, hash=record.hash
    )


def _reload_on_sighup(host: Host) -> None:
    """SIGHUP swaps in rebuilt functions, off the event loop; in-flight calls finish on their version."""
    loop = asyncio.get_running_loop()

    async def reload() -> None:
        report = await run_in_threadpool(host.reload_functions)
        log.info(json.dumps({"event": "functions_reloaded", **dataclasses.asdict(report)}))

    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        log.info(json.dumps({"event": "sighup_reload_unavailable"}))


def app_from_environment() -> FastAPI:
    """The app for each worker process of a multi-process server: settings from WARDFN_* alone."""
    configure_logging()
    return create_app(load_settings())


def configure_logging() -> None:
    """One JSON object a line on stdout; messages are built without patient data."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("wardfn")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    # The connection pool's warnings (a connection lost, a reconnection refused) are how a database
    # outage shows in the log: as JSON lines too, not multi-line text. They hold libpq's messages,
    # which name the server, never a password or a value.
    pool_handler = logging.StreamHandler(sys.stdout)
    pool_handler.setFormatter(_PoolLogFormatter())
    pool = logging.getLogger("psycopg.pool")
    pool.handlers[:] = [pool_handler]
    pool.setLevel(logging.WARNING)
    pool.propagate = False


class _PoolLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = " ".join(record.getMessage().split())
        return json.dumps({"event": "database_pool", "level": record.levelname.lower(), "message": message})
