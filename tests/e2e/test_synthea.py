"""Imported Synthea patients through the whole path: what patient_lookup answers is what the bundles say."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import Backend
from tests.e2e.server import DATABASES, WARDFN, ServerProcess, on_each_database, serve_imported
from tests.host.data.test_fhir_import import synthea_dir

pytestmark = pytest.mark.components

BUNDLES = sorted(p.name for p in synthea_dir().glob("*.json"))


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, built_functions: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    yield from on_each_database(
        request, lambda url: serve_imported(tmp_path_factory.mktemp("synthea"), synthea_dir(), url)
    )


def _expected(bundle: dict[str, Any]) -> dict[str, Any]:
    """What a clinician should see, computed from the bundle file itself."""
    resources = [e["resource"] for e in bundle["entry"]]
    latest: dict[str, dict[str, Any]] = {}
    for obs in resources:
        if obs["resourceType"] != "Observation":
            continue
        if not any(c.get("code") == "vital-signs" for cat in obs.get("category", []) for c in cat.get("coding", [])):
            continue
        code = obs["code"]["coding"][0]["code"]
        if code not in latest or obs["effectiveDateTime"] > latest[code]["effectiveDateTime"]:
            latest[code] = obs
    return {
        "patient": next(r for r in resources if r["resourceType"] == "Patient"),
        "allergies": sum(
            1
            for r in resources
            if r["resourceType"] == "AllergyIntolerance" and r["clinicalStatus"]["coding"][0]["code"] == "active"
        ),
        "medications": sum(
            1 for r in resources if r["resourceType"] == "MedicationRequest" and r["status"] == "active"
        ),
        "vitals": {code: (obs.get("valueQuantity") or {}).get("value") for code, obs in latest.items()},
    }


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_summary_agrees_with_the_bundle(server: ServerProcess, bundle_name: str) -> None:
    expected = _expected(json.loads((synthea_dir() / bundle_name).read_bytes()))
    patient = expected["patient"]
    response = httpx.get(f"{server.url}/v1/patients/{patient['id']}/summary", headers=server.headers(), timeout=30)
    assert response.status_code == 200, response.text
    summary = response.json()["result"]
    assert summary["demographics"]["birth_date"] == patient["birthDate"]
    assert summary["demographics"]["name"]["family"] == patient["name"][0]["family"]
    assert len(summary["allergies"]) == expected["allergies"]
    assert len(summary["medications"]) == expected["medications"]
    assert {v["code"]: v.get("value") for v in summary["vital_signs"]} == expected["vitals"]


def test_import_runs_from_a_path_with_spaces_and_accents(backend: Backend, tmp_path: Path) -> None:
    accented = next(p for p in synthea_dir().glob("*.json") if " " in p.name)
    patient_id = next(
        e["resource"]["id"] for e in json.loads(accented.read_bytes())["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )  # fmt: skip
    # A home of its own: the import makes the key-encryption key there for this fresh database.
    env = {"WARDFN_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", **backend.env()}
    done = subprocess.run([str(WARDFN), "data", "import", str(accented)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "1 patients" in done.stderr
    # In the database the environment names, not in a SQLite file beside it.
    assert backend.query("SELECT DISTINCT patient_id FROM resources WHERE patient_id IS NOT NULL") == [(patient_id,)]
