"""`wardfn build` and `wardfn serve`."""

from __future__ import annotations

import os
import time
from typing import Any

import click

from host.cli.common import cli_settings, err
from host.config import Settings


@click.command()
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even when the cache has the artifact.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Functions built at once (default: one per core, at most 4).",
)
def build(names: tuple[str, ...], force: bool, jobs: int | None) -> None:
    """Componentize and precompile functions (all of them when no NAME is given)."""
    from host.cli.progress import build_functions, default_jobs

    build_functions(cli_settings(), list(names), force=force, console=err, jobs=jobs or default_jobs())


@click.command()
@click.option("--host", "bind_host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8000).")
@click.option(
    "--policy",
    "engine",
    type=click.Choice(["embedded", "opa"]),
    default=None,
    help="The policy engine: embedded (regopy, default) or opa (a sidecar at --opa-url).",
)
@click.option("--opa-url", default=None, help="The OPA sidecar's URL, e.g. http://127.0.0.1:8181.")
def serve(bind_host: str | None, port: int | None, engine: str | None, opa_url: str | None) -> None:
    """Build missing functions, seed an empty development database, and serve HTTP."""
    import uvicorn

    from host.cli.progress import build_functions, default_jobs
    from host.data.synthetic import seed_store
    from host.http.logs import server_log_config
    from host.store.resources import open_store

    settings = cli_settings(host=bind_host, port=port, policy=engine, opa_url=opa_url)
    # Opened first, even in production: an unreachable or unmigrated database, or a wrong
    # key-encryption key, is one line and an exit before anything slow.
    store = open_store(settings)
    try:
        build_functions(settings, [], force=False, console=err, jobs=default_jobs())
        if not settings.production and store.count_patients() == 0 and settings.seed_patients > 0:
            # A plain line first: off a terminal (make's log, CI) the status line below shows nothing.
            err.print(f"seeding {settings.seed_patients} synthetic patients into the empty {store.database.display}")
            started = time.monotonic()
            with err.status(f"seeding {settings.seed_patients} synthetic patients"):
                added = seed_store(store, settings.seed_patients, settings.seed)
            err.print(f"seeded {added} synthetic patients in {time.monotonic() - started:.1f} s")
    finally:
        store.close()
    _print_how_to_call(settings)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,
        "log_level": "warning",
        # One JSON line a record, never a traceback (the app logs its own errors the same way).
        "log_config": server_log_config(),
        # On SIGTERM uvicorn stops accepting and lets in-flight calls finish, for at most this long.
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
    }
    workers = settings.worker_count
    if workers == 1:
        from host.http.app import create_app
        from host.http.logs import configure_logging

        configure_logging()
        uvicorn.run(create_app(settings), **common)
        return
    # The app is not imported here: each worker imports and builds its own (app_from_environment
    # configures its logging), and this process only supervises; importing it first would delay
    # every worker's start by the import (a third of a second).
    # Several processes to use every core (one process runs Python on one core at a time). Each
    # worker builds its own host from the WARDFN_* environment, so the flags go there too; they
    # share the database, whose write lock keeps one audit chain.
    for name, value in (("WARDFN_POLICY", settings.policy), ("WARDFN_OPA_URL", settings.opa_url)):
        if value is not None:
            os.environ[name] = value
    uvicorn.run("host.http.app:app_from_environment", factory=True, workers=workers, **common)


FIRST_PATIENT = "python3 -c 'import json,sys; print(json.load(sys.stdin)[0][\"id\"])'"


def _print_how_to_call(settings: Settings) -> None:
    url = f"http://{settings.host}:{settings.port}"
    err.print(f"[bold]wardfn[/] serving on {url}  (OpenAPI: {url}/docs)")
    if not settings.production:
        err.print(
            "Call it from another shell in this directory, with .venv/bin on PATH:\n"
            "  TOKEN=$(wardfn token --sub dr-house --role authorized_medical_staff)\n"
            f"  PATIENT=$(wardfn data patients --limit 1 --json | {FIRST_PATIENT})\n"
            f'  curl -s -H "Authorization: Bearer $TOKEN" {url}/v1/patients/$PATIENT/summary\n'
            "  wardfn invoke patient_lookup --patient $PATIENT --token $TOKEN",
            highlight=False,
            soft_wrap=True,  # shell commands must stay on one line whatever the terminal width
        )
