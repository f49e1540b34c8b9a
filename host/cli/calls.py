"""`wardfn token` and `wardfn invoke`: getting a development token and calling a running host."""

from __future__ import annotations

import json
import sys

import click
import httpx

from host.cli.common import cli_settings


@click.command()
@click.option("--sub", required=True, help="The subject (user id) the token names.")
@click.option("--role", required=True, help="The subject's role, e.g. authorized_medical_staff.")
@click.option("--ttl", type=int, default=3600, show_default=True, help="Lifetime in seconds.")
@click.option("--org-unit", default=None, help="The organisation unit (ward, department) the subject acts for.")
def token(sub: str, role: str, ttl: int, org_unit: str | None) -> None:
    """Print a development token (the bare JWT) signed with this home's development key."""
    from host.auth import issue_dev_token

    click.echo(issue_dev_token(cli_settings(), sub, role, ttl, org_unit))


@click.command()
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
    settings = cli_settings()
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
