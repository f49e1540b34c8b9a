"""fhir_export's logic under plain CPython: Bundles that validate with fhir.resources R4B and, page by page,
hold the whole record once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from host.data.synthetic import generate
from tests.functions.fake_query import evaluate
from tests.functions.loader import load

export = load("fhir_export", "export")
pages = load("fhir_export", "wardfn_pages")
withheld_module = load("fhir_export", "wardfn_withheld")


def _querier(resources: list[dict[str, Any]], withheld: Sequence[str] = ()) -> Any:
    """The guest's query over these resources, evaluated as the host evaluates it; a withheld type raises."""

    def query(kind: str, params: Sequence[tuple[str, str]]) -> list[str]:
        if kind in withheld:
            raise withheld_module.Withheld(kind)
        return evaluate(kind, params, [json.dumps(r) for r in resources if r["resourceType"] == kind])

    return query


def _record(seed: int = 3) -> list[dict[str, Any]]:
    patients = list(generate(1, seed))
    return [r for r in patients if r["resourceType"] in export.RESOURCE_TYPES]


def _walk(query: Any, bundle_type: str = "searchset", **options: Any) -> list[dict[str, Any]]:
    bundles, page = [], None
    while True:
        text = export.export(query, bundle_type, page=page, **options)
        Bundle.model_validate_json(text)
        bundles.append(json.loads(text))
        links = {link["relation"]: link["url"] for link in bundles[-1].get("link", [])}
        if "next" not in links:
            return bundles
        page = links["next"]
        assert len(bundles) < 1000, "the pages never end"


@pytest.mark.parametrize("bundle_type", ["searchset", "collection"])
def test_export_is_a_valid_r4_bundle_holding_the_record(bundle_type: str) -> None:
    resources = _record()
    [bundle] = _walk(_querier(resources), bundle_type)
    assert bundle["type"] == bundle_type
    assert bundle["entry"][0]["resource"]["resourceType"] == "Patient"
    assert sorted(json.dumps(e["resource"], sort_keys=True) for e in bundle["entry"]) == sorted(
        json.dumps(r, sort_keys=True) for r in resources
    )
    if bundle_type == "searchset":
        assert bundle["total"] == len(bundle["entry"])
        assert {e["search"]["mode"] for e in bundle["entry"]} == {"match", "include"}


@pytest.mark.parametrize("count", [1, 2, 5, 7])
def test_pages_hold_every_resource_once_in_order(count: int) -> None:
    resources = _record()
    whole = [e["resource"] for e in _walk(_querier(resources))[0]["entry"]]
    walked = _walk(_querier(resources), count=count)
    assert len(walked) > 1
    assert all(0 < len(b["entry"]) <= count for b in walked)
    assert [e["resource"] for b in walked for e in b["entry"]] == whole
    assert all("total" not in b for b in walked)  # a paged record is not counted


def test_a_page_stops_at_its_byte_budget_but_is_never_empty() -> None:
    resources = _record()
    walked = _walk(_querier(resources), budget=1)
    assert [len(b["entry"]) for b in walked] == [1] * len(resources)


def test_every_page_names_what_was_withheld() -> None:
    resources = _record()
    walked = _walk(_querier(resources, withheld=["AllergyIntolerance"]), count=3)
    for bundle in walked:
        [outcome] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "OperationOutcome"]
        assert outcome["issue"][0]["code"] == "suppressed"
        assert outcome["issue"][0]["expression"] == ["AllergyIntolerance"]


@pytest.mark.parametrize(
    "token", ["nonsense", "urn:wardfn:page:WzEsMl0x", pages.encode(99, 0), "urn:wardfn:page:Wy0xLDBd"]
)
def test_a_page_token_it_did_not_give_is_refused(token: str) -> None:
    with pytest.raises(pages.BadPageToken):
        export.export(_querier(_record()), page=token)


def test_no_patient_is_not_found() -> None:
    with pytest.raises(export.PatientNotFound):
        export.export(_querier([]))


def test_unknown_bundle_type_is_refused() -> None:
    with pytest.raises(ValueError):
        export.export(_querier(_record()), "transaction")
