"""`wardfn data`: the embedded database's patients."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.progress import MofNCompleteColumn, Progress

from host.cli.common import cli_settings, err

if TYPE_CHECKING:
    from host.store.resources import ResourceStore
    from host.store.upsert import Written


@click.group()
def data() -> None:
    """The embedded database's patients."""


@data.command("seed")
@click.option("--patients", type=int, default=1000, show_default=True)
@click.option("--seed", "seed_value", type=int, default=20261125, show_default=True)
@click.option(
    "--profile",
    type=click.Choice(["default", "history"]),
    default="default",
    show_default=True,
    help="default: 10 to 40 resources a patient; history: charts the size of real ones (median 1,000 resources).",
)
@click.option("--resources", type=click.IntRange(min=1), help="history only: this many resources every patient.")
def data_seed(patients: int, seed_value: int, profile: str, resources: int | None) -> None:
    """Add deterministic synthetic patients to the database."""
    from host.data.synthetic import seed_store
    from host.store.resources import open_store

    if resources is not None and profile != "history":
        raise click.UsageError("--resources sizes the history profile's charts: add --profile history")
    settings = cli_settings()
    store = open_store(settings)
    where = store.database.display
    try:
        if profile == "history":
            added = _seed_histories(store, patients, seed_value, resources)
            err.print(f"added {patients} patients ({added} resources) to {where}")
            return
        with err.status(f"seeding {patients} synthetic patients"):
            added = seed_store(store, patients, seed_value)
    finally:
        store.close()
    err.print(f"added {added} patients to {where}")


def _seed_histories(store: ResourceStore, patients: int, seed_value: int, resources: int | None) -> int:
    from host.data.history import seed_histories

    with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err) as progress:
        task = progress.add_task("seeding patient histories", total=patients)
        return seed_histories(store, patients, seed_value, resources, lambda _: progress.advance(task))


@data.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def data_import(paths: tuple[Path, ...]) -> None:
    """Import FHIR R4 Bundles (files, or every *.json in a directory); each bundle is all or nothing."""
    from host.data.fhir_import import bundle_files, import_bundles
    from host.store.resources import open_store
    from host.store.upsert import Written

    settings = cli_settings()
    files = bundle_files(list(paths))
    store = open_store(settings)
    total = Written()
    try:
        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err) as progress:
            task = progress.add_task("importing bundles", total=len(files))
            for done in import_bundles(store, files, settings.import_max_bytes):
                total.add(done.written)
                progress.advance(task)
    finally:
        store.close()
    for line in import_report(len(files), total):
        err.print(line, soft_wrap=True)


def import_report(bundles: int, written: Written) -> list[str]:
    """What an import did, in words: new, updated and unchanged, of resources and of patients."""
    resources, patients = written.resources, written.patients
    lines = [
        f"read {bundles} bundles: {resources.total} resources, {patients.total} patients",
        f"resources: {resources.new} new, {resources.updated} updated, {resources.unchanged} unchanged",
        f"patients: {patients.new} new, {patients.updated} updated, {patients.unchanged} unchanged",
    ]
    if not written.changed:
        lines.append("nothing changed: the store already held every resource as given; nothing was written")
    return lines


@data.command("patients")
@click.option("--limit", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def data_patients(limit: int, as_json: bool) -> None:
    """List patients, for development only (refused when WARDFN_ENV=production)."""
    from host.store.resources import open_store

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


@data.command("erase")
@click.argument("patient_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def data_erase(patient_id: str, yes: bool) -> None:
    """Erase a patient (GDPR art. 17) by destroying their data key: their records become unreadable for good."""
    import getpass
    import time
    import uuid

    from host.audit.trail import open_audit
    from host.errors import WardfnError
    from host.store.resources import open_store
    from host.types import AuditEvent

    settings = cli_settings()
    if not yes:
        click.confirm(f"erase patient {patient_id}? Their records can never be read again", abort=True)
    started = time.perf_counter()
    request_id = str(uuid.uuid4())

    def record(outcome: str, reason: str) -> None:
        log.append(
            AuditEvent(
                request_id=request_id,
                subject_id=f"cli:{getpass.getuser()}",
                role="operator",
                function=None,
                patient_id=patient_id,
                purpose="ERASURE",
                decision_id=None,
                allowed=True,
                reasons=(reason,),
                outcome=outcome,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        )

    # Audit before acting: the request is durable on the trail before any key is destroyed (an
    # erasure no record explains cannot happen), and its outcome follows under the same request id.
    # Earlier records about the patient stay as they are (the id, never record content): the chain
    # still verifies.
    log = open_audit(settings)
    try:
        record("erase_requested", "data erase requested")
        store = open_store(settings)
        try:
            erased = store.erase_patient(patient_id)
        except WardfnError:
            record("erase_failed", "data erase failed: nothing was destroyed or the store did not answer")
            raise
        finally:
            store.close()
        if erased:
            record("erased", "data erase: data key destroyed")
        else:
            record("patient_not_found", "data erase: no such patient (never stored, or already erased)")
    finally:
        log.close()
    if not erased:
        raise click.ClickException(f"no patient {patient_id} to erase (never stored, or already erased)")
    err.print(
        f"erased patient {patient_id}: their data key is destroyed and the store answers as if they never existed"
    )
