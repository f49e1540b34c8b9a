"""`wardfn data`: the embedded database's patients."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from rich.progress import MofNCompleteColumn, Progress

from host.cli.common import cli_settings, err


@click.group()
def data() -> None:
    """The embedded database's patients."""


@data.command("seed")
@click.option("--patients", type=int, default=1000, show_default=True)
@click.option("--seed", "seed_value", type=int, default=20261125, show_default=True)
def data_seed(patients: int, seed_value: int) -> None:
    """Add deterministic synthetic patients to the database."""
    from host.seed import seed_store
    from host.store import open_store

    settings = cli_settings()
    store = open_store(settings)
    try:
        with err.status(f"seeding {patients} synthetic patients"):
            added = seed_store(store, patients, seed_value)
    finally:
        store.close()
    err.print(f"added {added} patients to {settings.database_path}")


@data.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def data_import(paths: tuple[Path, ...]) -> None:
    """Import FHIR R4 Bundles (files, or every *.json in a directory); each bundle is all or nothing."""
    from host.fhir_import import bundle_files, import_bundles
    from host.store import open_store

    settings = cli_settings()
    files = bundle_files(list(paths))
    store = open_store(settings)
    resources = patients = 0
    try:
        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err) as progress:
            task = progress.add_task("importing bundles", total=len(files))
            for done in import_bundles(store, files, settings.import_max_bytes):
                resources += done.resources
                patients += done.patients
                progress.advance(task)
    finally:
        store.close()
    err.print(f"imported {len(files)} bundles: {resources} resources, {patients} patients")


@data.command("patients")
@click.option("--limit", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def data_patients(limit: int, as_json: bool) -> None:
    """List patients, for development only (refused when WARDFN_ENV=production)."""
    from host.store import open_store

    settings = cli_settings()
    if settings.production or os.environ.get("WARDFN_ENV") == "production":
        raise click.ClickException("`wardfn data patients` prints patient names: it is refused in production")
    store = open_store(settings)
    try:
        patients = store.list_patients(limit)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(patients))
    else:
        for patient in patients:
            click.echo(f"{patient['id']}  {patient['name']}")
