"""The function catalogue over HTTP against imported Synthea patients: what fhir_export, med_safety,
deidentify and patient_search answer agrees with the bundle files, computed here from the files."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from host.service import AUDIT_QUERY_PURPOSE
from host.store.resources import open_store
from tests.e2e.server import DATABASES, ServerProcess, on_each_database, serve_imported
from tests.host.data.test_fhir_import import synthea_dir

pytestmark = pytest.mark.components

BUNDLES = sorted(p.name for p in synthea_dir().glob("*.json"))
EXPORTED = {
    "Patient", "Encounter", "Condition", "AllergyIntolerance", "MedicationRequest", "Observation", "Procedure",
    "Immunization", "DiagnosticReport", "DocumentReference", "CarePlan", "CareTeam", "Claim",
    "ExplanationOfBenefit", "Consent",
}  # fmt: skip


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, built_functions: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    yield from on_each_database(
        request, lambda url: serve_imported(tmp_path_factory.mktemp("catalogue"), synthea_dir(), url)
    )


def _bundle(name: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in json.loads((synthea_dir() / name).read_bytes())["entry"]]


def _patient(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in resources if r["resourceType"] == "Patient")


def _invoke(server: ServerProcess, function: str, patient_id: str | None, headers: dict[str, str],
            purpose: str = "TREAT", args: dict[str, Any] | None = None) -> httpx.Response:  # fmt: skip
    return httpx.post(
        f"{server.url}/v1/functions/{function}/invoke",
        json={"patient_id": patient_id, "purpose": purpose, "args": args or {}},
        headers=headers,
        timeout=60,
    )


def _walk(server: ServerProcess, function: str, patient_id: str, headers: dict[str, str], purpose: str,
          count: int) -> list[dict[str, Any]]:  # fmt: skip
    """Every page of an export, following its next link (fhir_export) or `next` (deidentify)."""
    pages: list[dict[str, Any]] = []
    page: str | None = None
    while True:
        args: dict[str, Any] = {"_count": count, **({"page": page} if page else {})}
        response = _invoke(server, function, patient_id, headers, purpose=purpose, args=args)
        assert response.status_code == 200, response.text
        pages.append(response.json()["result"])
        links = {link["relation"]: link["url"] for link in pages[-1].get("link", [])}
        page = links.get("next") if function == "fhir_export" else pages[-1].get("next")
        if page is None:
            return pages
        assert len(pages) < 100, "the pages never end"


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_fhir_export_pages_through_the_bundles_record(server: ServerProcess, bundle_name: str) -> None:
    resources = _bundle(bundle_name)
    patient = _patient(resources)
    headers = server.headers(patient["id"], "patient")  # a patient exporting their own record
    pages = _walk(server, "fhir_export", patient["id"], headers, "PATRQT", 200)
    for exported in pages:
        Bundle.model_validate(exported)
    entries = [e["resource"] for exported in pages for e in exported["entry"]]
    outcomes = [e for e in entries if e["resourceType"] == "OperationOutcome"]
    held = [e for e in entries if e["resourceType"] != "OperationOutcome"]
    got = Counter(e["resourceType"] for e in held)
    want = Counter(r["resourceType"] for r in resources if r["resourceType"] in EXPORTED)
    # The policy decides which types a patient's own export holds; every type it holds is whole, once.
    assert set(got) <= set(want) and {t: want[t] for t in got} == dict(got)
    assert len({(e["resourceType"], e["id"]) for e in held}) == len(held)
    assert len(pages) == -(-len(held) // 200) >= 2  # full pages but the last
    core = {"Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "AllergyIntolerance"}
    assert core & set(want) <= set(got)
    # Every type it does not hold is named as withheld (suppressed) on every page, never silently missing.
    suppressed = {i["expression"][0] for o in outcomes for i in o["issue"] if i["code"] == "suppressed"}
    assert len(outcomes) in (0, len(pages)) and set(want) - set(got) <= suppressed


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_med_safety_checks_what_the_bundle_holds(server: ServerProcess, bundle_name: str) -> None:
    resources = _bundle(bundle_name)
    patient = _patient(resources)
    response = _invoke(server, "med_safety", patient["id"], server.headers())
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    active_meds = [r for r in resources if r["resourceType"] == "MedicationRequest" and r["status"] == "active"]
    active_allergies = [
        r for r in resources
        if r["resourceType"] == "AllergyIntolerance" and r["clinicalStatus"]["coding"][0]["code"] == "active"
    ]  # fmt: skip
    assert result["checked"] == {"active_medications": len(active_meds), "active_allergies": len(active_allergies)}
    for flag in result["flags"]:
        assert flag["medication_request"] in {m["id"] for m in active_meds}
        assert flag["reason"]


def test_deidentify_for_research_leaves_no_identifier(server: ServerProcess) -> None:
    resources = _bundle(BUNDLES[0])
    patient = _patient(resources)
    store = open_store(server.settings)
    try:  # research needs the patient's explicit permission
        store.add_resources([{
            "resourceType": "Consent", "id": f"research-{patient['id'][:8]}", "status": "active",
            "scope": {"coding": [{"code": "research"}]}, "category": [{"coding": [{"code": "research"}]}],
            "patient": {"reference": f"Patient/{patient['id']}"},
            "provision": {"type": "permit", "purpose": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]},
        }])  # fmt: skip
    finally:
        store.close()
    pages = _walk(server, "deidentify", patient["id"], server.headers("r-1", "researcher"), "HRESCH", 150)
    held = [r for page in pages for r in page["resources"]]
    assert len(pages) >= 2 and len({page["pseudonym"] for page in pages}) == 1
    assert len(held) == len({(r["resourceType"], r["id"]) for r in held}) > 150
    text = json.dumps(pages)
    words = set(re.findall(r"[\w\-]+", text))
    identifiers = [i["value"] for i in patient["identifier"]] + [t["value"] for t in patient.get("telecom", [])]
    for phi in [patient["id"], *patient["name"][0]["given"], patient["name"][0]["family"], *identifiers]:
        assert (phi not in words) and (phi not in text), phi
    assert not re.search(r"\d{4}-\d{2}-\d{2}", text)
    assert pages[0]["pseudonym"].startswith("pz-")


def test_patient_search_finds_and_audits_its_query(server: ServerProcess) -> None:
    patient = _patient(_bundle(BUNDLES[1]))
    family = patient["name"][0]["family"]
    rid = f"search-{patient['id'][:8]}"
    response = httpx.post(
        f"{server.url}/v1/functions/patient_search/invoke",
        json={"purpose": "TREAT", "args": {"name": family.upper(), "birth_date": patient["birthDate"]}},
        headers={**server.headers(), "X-Request-ID": rid},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert [m["id"] for m in result["matches"]] == [patient["id"]]
    assert set(result["matches"][0]) == {"id", "name", "birth_date", "gender"}
    log = server.open_audit()
    try:
        [record] = [r for r in log.records(limit=100_000) if r.event.request_id == rid]
    finally:
        log.close()
    sealed = record.event.query or ""
    assert family.upper() not in sealed and patient["birthDate"] not in sealed  # never in clear
    store = open_store(server.settings)
    try:
        query = json.loads(store.open_text(sealed, AUDIT_QUERY_PURPOSE))
    finally:
        store.close()
    asked = {"name": family.upper(), "birth_date": patient["birthDate"]}
    assert query["args"] == asked  # the arguments, and every directory query with the ids it matched
    assert query["searches"] == [{"query": {**asked, "identifier": None}, "matched": [patient["id"]]}]
    refused = httpx.post(
        f"{server.url}/v1/functions/patient_search/invoke",
        json={"patient_id": patient["id"], "args": {"name": family}},
        headers=server.headers(),
    )
    assert refused.status_code == 422
