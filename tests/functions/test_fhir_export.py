"""fhir_export's logic under plain CPython: a Bundle that validates with fhir.resources R4B."""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B.bundle import Bundle

from host.data.synthetic import generate
from tests.functions.loader import load

export = load("fhir_export", "export")


def _reader(resources: list[dict[str, object]]) -> object:
    def read(kind: str) -> list[str]:
        return [json.dumps(r) for r in resources if r["resourceType"] == kind]

    return read


@pytest.mark.parametrize("bundle_type", ["searchset", "collection"])
def test_export_is_a_valid_r4_bundle_holding_the_record(bundle_type: str) -> None:
    resources = list(generate(1, 3))
    text = export.export(_reader(resources), bundle_type)
    bundle = Bundle.model_validate_json(text)
    assert bundle.type == bundle_type
    exported = json.loads(text)
    assert [e["resource"] for e in exported["entry"]][0]["resourceType"] == "Patient"
    assert sorted(json.dumps(e["resource"], sort_keys=True) for e in exported["entry"]) == sorted(
        json.dumps(r, sort_keys=True) for r in resources if r["resourceType"] in export.RESOURCE_TYPES
    )
    if bundle_type == "searchset":
        assert exported["total"] == len(exported["entry"])
        assert {e["search"]["mode"] for e in exported["entry"]} == {"match", "include"}


def test_no_patient_is_not_found() -> None:
    with pytest.raises(export.PatientNotFound):
        export.export(_reader([]))


def test_unknown_bundle_type_is_refused() -> None:
    with pytest.raises(ValueError):
        export.export(_reader(list(generate(1, 3))), "transaction")
