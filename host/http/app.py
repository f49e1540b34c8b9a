"""The app factory: routers, middleware and error handlers on one FastAPI app, the host built in its lifespan."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import signal
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from types import FrameType

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from host.assembly import Host, open_host
from host.config import Settings, load_settings
from host.http import console, routes_audit, routes_functions, routes_operations, routes_privacy
from host.http.errors import install_error_handlers
from host.http.logs import configure_logging
from host.http.middleware import RequestContext
from host.http.openapi import install_openapi

log = logging.getLogger("wardfn.http")

# How long before the end of the shutdown grace period the calls still running are abandoned (at
# most half the period): time to audit and send each one's 503 before the server cuts connections.
DRAIN_ANSWER_S = 2.0


def create_app(settings: Settings, host: Host | None = None) -> FastAPI:
    """The ASGI app. Everything expensive is built in the lifespan, unless a built host is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = host is None
        app.state.host = open_host(settings) if owned else host
        if owned:
            # What a served host has built by now (modules, the app, the catalogue, the policy) lives as
            # long as the process. A full collection walking it costs about 65 ms of CPU holding the GIL,
            # and it lands inside whichever requests are running: frozen, collections skip it.
            gc.freeze()
        _reload_on_sighup(app.state.host)
        # Only a host of its own: one handed in belongs to its owner, who decides when it stops.
        undo_drain = _drain_on_sigterm(app.state.host, settings.shutdown_grace_s) if owned else None
        app.state.invokers = ThreadPoolExecutor(settings.invoke_threads, thread_name_prefix="wardfn-invoke")
        try:
            yield
        finally:
            if undo_drain is not None:
                undo_drain()
                # Whatever the server did not wait for (its grace period passed and it cancelled the
                # requests) is abandoned now, so the invocation threads end and audit without delay;
                # the pool first, or its warm-ups would be refused and logged as failing.
                await run_in_threadpool(app.state.host.pool.stop)
                app.state.host.sandbox.runner.abandon_all()
            app.state.invokers.shutdown(wait=True, cancel_futures=True)
            if owned:
                app.state.host.close()

    app = FastAPI(
        title="wardfn",
        version="0.1.0",
        summary="Patient-data functions in WebAssembly sandboxes, behind a policy decision, with an audit trail.",
        lifespan=lifespan,
    )
    app.add_middleware(console.ConsoleHeaders)
    app.add_middleware(RequestContext, max_body=settings.max_request_bytes)
    install_error_handlers(app)
    for routes in (routes_functions, routes_audit, routes_privacy, routes_operations):
        app.include_router(routes.router)
    app.include_router(console.router)
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


def _drain_on_sigterm(host: Host, grace_s: float) -> Callable[[], None]:
    """On SIGTERM, bound the drain: stop preparing instances, and shortly before `grace_s` ends, stop
    waiting for the guest calls still running, so each is answered (503) and audited before the server
    gives up on its connection. Returns what undoes it.

    The server's own SIGTERM handler (uvicorn's, installed with signal.signal before the lifespan
    starts, in each worker process) still runs: it stops accepting and waits up to the grace period.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return lambda: None  # nothing drains on SIGTERM here (the default ends the process at once)
    loop = asyncio.get_running_loop()
    timers: list[asyncio.TimerHandle] = []

    def abandon() -> None:
        calls = host.sandbox.runner.abandon_all()
        (log.warning if calls else log.info)(json.dumps({"event": "drain_abandoned_calls", "calls": calls}))

    def start() -> None:
        if timers:
            return  # a second SIGTERM changes nothing
        after_s = max(0.0, grace_s - min(DRAIN_ANSWER_S, grace_s / 2))
        timers.append(loop.call_later(after_s, abandon))
        loop.run_in_executor(None, host.pool.stop)  # no more instances for calls that will not come
        log.info(json.dumps({"event": "drain_started", "grace_s": grace_s, "abandon_after_s": after_s}))

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # A signal handler runs between any two bytecodes of the loop's thread, maybe inside the
        # loop's own bookkeeping: it only hands over to the loop (call_soon_threadsafe is made for it).
        loop.call_soon_threadsafe(start)
        previous(signum, frame)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: the server has not got SIGTERM's handler either
        return lambda: None

    def undo() -> None:
        for timer in timers:
            timer.cancel()
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return undo


def app_from_environment() -> FastAPI:
    """The app for each worker process of a multi-process server: settings from WARDFN_* alone."""
    configure_logging()
    return create_app(load_settings())
