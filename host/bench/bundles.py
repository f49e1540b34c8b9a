"""Real charts in `wardfn bench history --bundles PATH`: FHIR bundles (Synthea's, say) imported into
the bench's database and summarised one call at a time like the synthetic charts.

Issue 13's check on charts the developers have not seen: on an idle host, every summary answers
200, its p50 is at most 50 ms and every call is under 200 ms. The JSON names the bundles by number
and size only: a bundle's file name and content are a patient's (synthetic or not).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from host.bench import report
from host.config import Settings
from host.data.fhir_import import bundle_files, read_bundle
from host.store.encryption import kek_from_settings
from host.store.resources import ResourceStore

# The check, per bundle: the worst bundle's summary p50, and the slowest summary of all.
P50 = "bundle_summary_p50_ms"
MAX = "bundle_summary_max_ms"
TARGETS = {P50: ("<=", 50.0), MAX: ("<", 200.0)}


@dataclass(frozen=True)
class BundlePatient:
    """One imported bundle's patient: its number in the run, id (never written out) and size."""

    number: int
    patient_id: str
    counts: dict[str, int]

    @property
    def resources(self) -> int:
        return sum(self.counts.values())


def import_for_bench(settings: Settings, database: Path, paths: list[Path]) -> list[BundlePatient]:
    """Import every bundle under `paths` into `database`; one patient a bundle (the first Patient)."""
    patients = []
    store = ResourceStore(database, kek_from_settings(settings))
    try:
        for number, path in enumerate(bundle_files(paths), start=1):
            resources = read_bundle(path, settings.import_max_bytes)
            store.upsert_resources(resources)
            patient = next((r for r in resources if r["resourceType"] == "Patient"), None)
            if patient is None:
                continue  # a bundle of no patient's chart: nothing to summarise
            counts = dict(sorted(Counter(str(r["resourceType"]) for r in resources).items()))
            patients.append(BundlePatient(number, str(patient["id"]), counts))
    finally:
        store.close()
    return patients


def staff_requests(patient_id: str, staff: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The summary and med_safety of one patient, as medical staff, for treatment (httpx request arguments)."""
    return {
        "summary": {"method": "GET", "url": f"/v1/patients/{patient_id}/summary", "headers": staff},
        "med_safety": {
            "method": "POST",
            "url": "/v1/functions/med_safety/invoke",
            "headers": staff,
            "json": {"patient_id": patient_id, "purpose": "TREAT", "args": {}},
        },
    }


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The bundles' part of the JSON: each bundle's runs, and the check over all of them."""
    summaries = [run for run in runs if run["function"] == "summary"]
    worst_p50 = max((run["latency_ms"]["p50"] or 0.0 for run in summaries), default=None)
    slowest = max((run["latency_ms"]["max"] or 0.0 for run in summaries), default=None)
    every_200 = all(run["errors"] == 0 for run in summaries)
    return {
        "runs": runs,
        P50: worst_p50,
        MAX: slowest,
        "every_summary_200": every_200,
        "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
        "holds": bool(
            summaries
            and every_200
            and worst_p50 is not None
            and slowest is not None
            and worst_p50 <= 50.0
            and slowest < 200.0
        ),
    }


def print_bundles(console: Console, bundles: dict[str, Any]) -> None:
    table = Table(title="imported bundles (latency in ms, every call)", title_justify="left")
    for column in ("bundle", "function", "resources", "calls", "p50", "p99", "max", "statuses"):
        table.add_column(column, justify="left" if column in ("function", "statuses") else "right")
    for run in bundles["runs"]:
        lat = run["latency_ms"]
        table.add_row(
            str(run["bundle"]),
            run["function"],
            f"{run['resources']:,}",
            str(run["calls"]),
            *(report.ms(lat[k]) for k in ("p50", "p99", "max")),
            ", ".join(f"{k}: {v}" for k, v in run["status"].items()),
        )
    console.print(table)
    console.print(
        f"worst summary p50 {report.ms(bundles[P50])} ms (at most 50), slowest summary {report.ms(bundles[MAX])} ms "
        f"(under 200), every summary 200: {'yes' if bundles['every_summary_200'] else 'no'}: "
        f"{'holds' if bundles['holds'] else 'does not hold'}"
    )
