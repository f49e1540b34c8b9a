"""Operations: liveness, readiness, metrics and the policy engine's state. No patient data."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from host.http.deps import HostDep, SubjectDep
from host.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
async def metrics(host: HostDep) -> Response:
    """Prometheus metrics (no patient data: labels are function names, outcome codes and results)."""
    return Response(host.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


@router.get("/readyz")
async def readyz(host: HostDep) -> JSONResponse:
    """Ready to serve: the policy engine answers and the store and the audit trail are reachable."""
    # Side by side: with the database away each waits out its (short) checkout timeout.
    store, audit = await asyncio.gather(run_in_threadpool(host.store.healthy), run_in_threadpool(host.audit.healthy))
    checks = {"policy": host.policy.healthy(), "store": store, "audit": audit}
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/v1/policy")
async def policy_status(host: HostDep, _subject: SubjectDep) -> dict[str, Any]:
    """The policy engine: its revision, health and decision-cache counters (no patient data)."""
    cache = getattr(host.policy, "stats", None)
    return {
        "engine": host.settings.policy,
        "revision": host.policy.revision,
        "healthy": host.policy.healthy(),
        "decision_cache": cache.as_json() if cache is not None else None,
    }
