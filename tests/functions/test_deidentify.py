"""deidentify's Safe Harbor logic under plain CPython, as a property over every generated and imported
patient: none of the patient's names, identifiers, phone numbers, emails, street lines or full dates
appear anywhere in the output, and no age over 89 does."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from host.data.fhir_import import bundle_files, read_bundle
from host.data.synthetic import generate
from tests.functions.fake_query import evaluate
from tests.functions.loader import load
from tests.host.data.test_fhir_import import synthea_dir

safe_harbor = load("deidentify", "safe_harbor")
TODAY = datetime.date(2026, 11, 25)


def _records() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    generated = list(generate(120, 20261125))
    for patient in (r for r in generated if r["resourceType"] == "Patient"):
        yield f"generated-{patient['id'][:8]}", [r for r in generated if _belongs(r, patient["id"])]
    for path in bundle_files([synthea_dir()]):
        resources = read_bundle(path, 64 * 1024 * 1024)
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        yield f"synthea-{path.stem[-8:]}", [r for r in resources if _belongs(r, patient["id"])]


def _belongs(resource: dict[str, Any], patient_id: str) -> bool:
    if resource["resourceType"] == "Patient":
        return bool(resource["id"] == patient_id)
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
    return bool(ref == f"Patient/{patient_id}")


RECORDS = list(_records())


def _phi(patient: dict[str, Any], resources: list[dict[str, Any]]) -> set[str]:
    found: set[str] = {patient["id"]}
    for name in patient.get("name", []):
        found.update(name.get("given", []))
        found.add(name.get("family", ""))
    found.update(i["value"] for i in patient.get("identifier", []) if i.get("value"))
    found.update(t["value"] for t in patient.get("telecom", []) if t.get("value"))
    for address in patient.get("address", []):
        found.update(address.get("line", []))
        found.add(address.get("city", ""))
        found.add(address.get("postalCode", ""))
    full_dates = re.findall(r"\d{4}-\d{2}-\d{2}", json.dumps(resources))
    found.update(full_dates)
    found.update(r["id"] for r in resources)
    return {p for p in found if p and len(p) > 2}


def _deidentify(resources: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    return patient, safe_harbor.deidentify(patient["id"], by_type, "pz-test", TODAY)


@pytest.mark.parametrize(("label", "resources"), RECORDS, ids=[label for label, _ in RECORDS])
def test_no_identifier_survives(label: str, resources: list[dict[str, Any]]) -> None:
    patient, output = _deidentify(resources)
    text = json.dumps(output)
    words = set(re.findall(r"[\w\-]+", text))
    for phi in _phi(patient, resources):
        # Whole words for single-word values (a name inside another word is no leak); substrings otherwise.
        survived = phi in words if re.fullmatch(r"[\w\-]+", phi) else phi in text
        assert not survived, f"{label}: {phi!r} survived"
    assert "@" not in text and "urn:uuid" not in text
    assert output["pseudonym"] == "pz-test"


@pytest.mark.parametrize(("label", "resources"), RECORDS, ids=[label for label, _ in RECORDS])
def test_ages_over_89_never_appear(label: str, resources: list[dict[str, Any]]) -> None:
    patient, output = _deidentify(resources)
    born = datetime.date.fromisoformat(patient["birthDate"])
    true_age = TODAY.year - born.year - ((TODAY.month, TODAY.day) < (born.month, born.day))
    [clean_patient] = [r for r in output["resources"] if r["resourceType"] == "Patient"]
    if true_age > 89:
        assert output["age"] == "90+"
        assert "birthDate" not in clean_patient
    else:
        assert output["age"] == true_age
        assert clean_patient["birthDate"] == patient["birthDate"][:4]


def test_some_generated_patients_are_over_89() -> None:
    """The age property above is only tested if the data holds someone over 89."""
    ages = [_deidentify(resources)[1]["age"] for _, resources in RECORDS]
    assert "90+" in ages


@pytest.mark.parametrize(
    ("label", "resources"), RECORDS[:40] + RECORDS[-11:], ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_output_is_still_valid_fhir(label: str, resources: list[dict[str, Any]]) -> None:
    _, output = _deidentify(resources)
    for resource in output["resources"]:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.parametrize(("postal", "kept"), [("02139", "021"), ("03601", "000"), ("89301", "000"), ("9", None)])
def test_zip_codes_keep_three_digits_except_restricted_prefixes(postal: str, kept: str | None) -> None:
    address = safe_harbor._address({"line": ["1 Main St"], "city": "X", "state": "MA", "postalCode": postal})
    assert address.get("postalCode") == kept and address["state"] == "MA" and "line" not in address


def _querier(resources: list[dict[str, Any]]) -> Any:
    def query(kind: str, params: Any) -> list[str]:
        return evaluate(kind, params, [json.dumps(r) for r in resources if r["resourceType"] == kind])

    return query


@pytest.mark.parametrize("count", [1, 3, 50])
def test_pages_together_are_the_whole_record_and_their_references_hold(count: int) -> None:
    label, resources = next(r for r in RECORDS if r[0].startswith("synthea"))
    patient, whole = _deidentify(resources)
    query = _querier(resources)
    pages, token = [], None
    while True:
        page = safe_harbor.deidentify_page(patient["id"], query, "pz-test", TODAY, count, token)
        pages.append(page)
        assert page["pseudonym"] == "pz-test" and page["age"] == whole["age"]
        assert 0 < len(page["resources"]) <= count
        token = page.get("next")
        if token is None:
            break
    walked = [r for page in pages for r in page["resources"]]
    assert len(pages) > 1
    assert sorted(json.dumps(r, sort_keys=True) for r in walked) == sorted(
        json.dumps(r, sort_keys=True) for r in whole["resources"]
    )
    held = {f"{r['resourceType']}/{r['id']}" for r in walked}
    targets = set(re.findall(r'"reference": "([^"]+)"', json.dumps(walked)))
    assert targets and targets <= held  # a reference into another page points at what that page holds
