"""`wardfn db`: the database's schema version, and migrating it."""

from __future__ import annotations

import sys

import click

from host.cli.common import cli_settings


@click.group()
def db() -> None:
    """The database's schema: its version, and the migrations it needs."""


@db.command("status")
def db_status() -> None:
    """Print the schema version and the pending migrations; exit 1 if any is pending."""
    from host.store import migrations
    from host.store.database import open_database

    database = open_database(cli_settings())
    try:
        version, pending = migrations.status(database)
    finally:
        database.close()
    click.echo(f"{database.display}: schema version {version} of {migrations.LATEST}")
    for migration in pending:
        click.echo(f"pending: {migration.version} {migration.name}")
    if version > migrations.LATEST:
        click.echo("the database is newer than this host: run a wardfn release that knows it", err=True)
        sys.exit(1)
    if pending:
        click.echo(f"{len(pending)} migrations pending: run `wardfn db migrate`", err=True)
        sys.exit(1)


@db.command("migrate")
def db_migrate() -> None:
    """Apply every pending migration, each in its own transaction (safe to run while hosts serve; migration 9
    copies the whole audit trail, see docs/audit.md), and make the audit table's next months' partitions."""
    from host.store import migrations, partitions
    from host.store.database import open_database

    database = open_database(cli_settings())
    try:
        applied = migrations.migrate(database)
        made = partitions.keep_ahead(database)
    finally:
        database.close()
    for migration in applied:
        click.echo(f"applied: {migration.version} {migration.name}")
    if made:
        click.echo(f"audit partitions made for: {', '.join(made)}")
    click.echo(f"{database.display}: schema version {migrations.LATEST}, up to date")
