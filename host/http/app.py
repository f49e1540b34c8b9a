"""The app factory: routers, middleware and error handlers on one FastAPI app, the host built in its lifespan."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from host.assembly import Host, open_host
from host.config import Settings, load_settings
from host.http import routes_audit, routes_functions, routes_operations
from host.http.errors import install_error_handlers
from host.http.logs import configure_logging
from host.http.middleware import RequestContext
from host.http.openapi import install_openapi

log = logging.getLogger("wardfn.http")


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
    )
    app.add_middleware(RequestContext, max_body=settings.max_request_bytes)
    install_error_handlers(app)
    for routes in (routes_functions, routes_audit, routes_operations):
        app.include_router(routes.router)
    # Each function's own invoke operation, its arguments schema in the request body.
    install_openapi(app, lambda: app.state.host.registry.all() if hasattr(app.state, "host") else [])
    return app


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
