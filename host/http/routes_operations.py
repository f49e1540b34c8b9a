"""Operations: liveness, readiness, metrics and the policy engine's state. No patient data."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from host.http.deps import HostDep, SubjectDep
from host.http.openapi import error_responses
from host.http.schemas import Health, PolicyStatus, Readiness
from host.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, responses=error_responses(413, 500))
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition.", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **error_responses(413, 500),
    },
)
async def metrics(host: HostDep) -> Response:
    """Prometheus metrics (no patient data: labels are function names, outcome codes and results)."""
    return Response(host.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "Not ready: `checks` says what does not answer."},
        **error_responses(413, 500),
    },
)
async def readyz(host: HostDep) -> JSONResponse:
    """Ready to serve: the policy engine answers and the store and the audit trail are reachable."""
    # Side by side: with the database away each waits out its (short) checkout timeout.
    store, audit = await asyncio.gather(run_in_threadpool(host.store.healthy), run_in_threadpool(host.audit.healthy))
    checks = {"policy": host.policy.healthy(), "store": store, "audit": audit}
    ready = all(checks.values())
    body = Readiness(ready=ready, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/v1/policy", response_model=PolicyStatus, responses=error_responses(401, 413, 500, 503))
async def policy_status(host: HostDep, _subject: SubjectDep) -> PolicyStatus:
    """The policy engine: its revision, health and decision-cache counters; and how much clock skew a
    token's expiry is allowed (no patient data)."""
    cache = getattr(host.policy, "stats", None)
    return PolicyStatus(
        engine=host.settings.policy,
        revision=host.policy.revision,
        healthy=host.policy.healthy(),
        decision_cache=cache.as_json() if cache is not None else None,
        token_leeway_s=host.settings.jwt_leeway_s,
    )
