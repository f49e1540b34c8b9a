"""`wardfn audit`: the hash-chained audit trail."""

from __future__ import annotations

import sys

import click

from host.cli.common import cli_settings


@click.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the audit chain; exit non-zero naming the first bad record."""
    from host.audit import AuditLog

    settings = cli_settings()
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
