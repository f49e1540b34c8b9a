"""The `wardfn` command line."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
import httpx
from pydantic import ValidationError
from rich.console import Console

from host.config import Settings, load_settings
from host.errors import WardfnError

err = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        raise click.ClickException(f"invalid settings: {problems}") from None


class _Group(click.Group):
    """Turns host errors into one readable line and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WardfnError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
def main() -> None:
    """wardfn: patient-data functions in WebAssembly sandboxes, behind a policy decision, with an audit trail."""


@main.command()
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even when the cache has the artifact.")
def build(names: tuple[str, ...], force: bool) -> None:
    """Componentize and precompile functions (all of them when no NAME is given)."""
    from host.buildcmd import build_functions

    build_functions(_settings(), list(names), force=force, console=err)


@main.command()
@click.option("--host", "bind_host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8000).")
def serve(bind_host: str | None, port: int | None) -> None:
    """Build missing functions, seed an empty development database, and serve HTTP."""
    import uvicorn

    from host.app import configure_logging, create_app
    from host.buildcmd import build_functions
    from host.seed import seed_store
    from host.store import ResourceStore

    settings = _settings(host=bind_host, port=port)
    build_functions(settings, [], force=False, console=err)
    if not settings.production:
        store = ResourceStore(settings.database_path)
        try:
            if store.count_patients() == 0 and settings.seed_patients > 0:
                with err.status(f"seeding {settings.seed_patients} synthetic patients"):
                    added = seed_store(store, settings.seed_patients, settings.seed)
                err.print(f"seeded {added} synthetic patients into {settings.database_path}")
        finally:
            store.close()
    configure_logging()
    _print_how_to_call(settings)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, access_log=False, log_level="warning")


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


@main.command()
@click.option("--sub", required=True, help="The subject (user id) the token names.")
@click.option("--role", required=True, help="The subject's role, e.g. authorized_medical_staff.")
@click.option("--ttl", type=int, default=3600, show_default=True, help="Lifetime in seconds.")
def token(sub: str, role: str, ttl: int) -> None:
    """Print a development token (the bare JWT) signed with this home's development key."""
    from host.auth import issue_dev_token

    click.echo(issue_dev_token(_settings(), sub, role, ttl))


@main.command()
@click.argument("name")
@click.option("--patient", "patient_id", default=None, help="The patient id.")
@click.option("--purpose", default="TREAT", show_default=True, help="HL7 PurposeOfUse code.")
@click.option("--args", "args_json", default="{}", help="Function arguments as a JSON object.")
@click.option("--token", "bearer", default=None, envvar="WARDFN_TOKEN", help="Bearer token (or WARDFN_TOKEN).")
@click.option("--url", default=None, help="The host's base URL (default http://127.0.0.1:8000).")
def invoke(
    name: str, patient_id: str | None, purpose: str, args_json: str, bearer: str | None, url: str | None
) -> None:
    """Call a function on a running host over HTTP and print the JSON answer."""
    settings = _settings()
    base = url or f"http://{settings.host}:{settings.port}"
    if bearer is None:
        raise click.UsageError(
            "no token: pass --token or set WARDFN_TOKEN (development: `wardfn token --sub ID --role ROLE`)"
        )
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"--args is not JSON: {exc}") from None
    try:
        response = httpx.post(
            f"{base}/v1/functions/{name}/invoke",
            json={"patient_id": patient_id, "purpose": purpose, "args": args},
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {base}: {type(exc).__name__}; is `wardfn serve` running?") from None
    click.echo(json.dumps(response.json(), indent=2))
    if response.status_code >= 400:
        sys.exit(1)


@main.group()
def data() -> None:
    """The embedded database's patients."""


@data.command("seed")
@click.option("--patients", type=int, default=1000, show_default=True)
@click.option("--seed", "seed_value", type=int, default=20261125, show_default=True)
def data_seed(patients: int, seed_value: int) -> None:
    """Add deterministic synthetic patients to the database."""
    from host.seed import seed_store
    from host.store import ResourceStore

    settings = _settings()
    store = ResourceStore(settings.database_path)
    try:
        with err.status(f"seeding {patients} synthetic patients"):
            added = seed_store(store, patients, seed_value)
    finally:
        store.close()
    err.print(f"added {added} patients to {settings.database_path}")


@data.command("patients")
@click.option("--limit", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def data_patients(limit: int, as_json: bool) -> None:
    """List patients, for development only (refused when WARDFN_ENV=production)."""
    from host.store import ResourceStore

    settings = _settings()
    if settings.production or os.environ.get("WARDFN_ENV") == "production":
        raise click.ClickException("`wardfn data patients` prints patient names: it is refused in production")
    store = ResourceStore(settings.database_path)
    try:
        patients = store.list_patients(limit)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(patients))
    else:
        for patient in patients:
            click.echo(f"{patient['id']}  {patient['name']}")


@main.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the audit chain; exit non-zero naming the first bad record."""
    from host.audit import AuditLog

    settings = _settings()
    log = AuditLog(settings.database_path)
    try:
        report = log.verify()
    finally:
        log.close()
    if report.ok:
        click.echo(f"audit chain intact: {report.checked} records verified")
        return
    click.echo(f"audit chain broken at record {report.first_bad_seq}: {report.problem}", err=True)
    sys.exit(1)
