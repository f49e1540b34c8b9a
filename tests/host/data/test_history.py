"""The history profile: charts of the size asked for, deterministic per patient, shaped as real ones."""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from host.data.history import (
    SIZE_MAX,
    SIZE_MIN,
    generate_histories,
    history_patient,
    history_size,
    seed_histories,
)
from host.data.synthetic import REFERENCE_DAY
from host.data.vocabulary import MRN_SYSTEM, SSN_SYSTEM
from host.store.encryption import LocalKek
from host.store.resources import ResourceStore
from host.store.rows import patient_of

SEED = 20261125
VITAL_CODES = {"8867-4", "85354-9", "8310-5", "9279-1", "29463-7", "8302-2", "59408-5"}
Resource = dict[str, Any]


@pytest.fixture(scope="module")
def chart() -> list[Resource]:
    return history_patient(SEED, 4, 3000)


def of_type(resources: list[Resource], resource_type: str) -> list[Resource]:
    return [r for r in resources if r["resourceType"] == resource_type]


def category(resource: Resource) -> str:
    return str(resource["category"][0]["coding"][0]["code"])


def status(concept: Resource) -> str:
    return str(concept["coding"][0]["code"])


def test_a_patient_is_the_same_whatever_the_count_and_the_run() -> None:
    third = history_patient(SEED, 2, 300)
    assert json.dumps(third) == json.dumps(history_patient(SEED, 2, 300))
    assert json.dumps(list(generate_histories(3, SEED, 300))[2]) == json.dumps(third)
    assert json.dumps(list(generate_histories(5, SEED, 300))[2]) == json.dumps(third)


def test_seed_and_index_each_make_another_patient() -> None:
    ids = {history_patient(seed, index, 50)[0]["id"] for seed in (1, 2) for index in (0, 1)}
    assert len(ids) == 4


def test_the_size_does_not_change_who_the_patient_is() -> None:
    small, large = history_patient(SEED, 7, 100)[0], history_patient(SEED, 7, 2000)[0]
    assert small == large


@pytest.mark.parametrize("target", [20, 21, 100, 999, 1000, 5000])
def test_a_chart_holds_exactly_the_resources_asked_for(target: int) -> None:
    resources = history_patient(SEED, 1, target)
    assert len(resources) == target
    assert len({(r["resourceType"], r["id"]) for r in resources}) == target


def test_tiny_targets_still_give_a_patient_and_an_encounter() -> None:
    resources = history_patient(SEED, 1, 3)
    assert {"Patient", "Encounter", "CareTeam"} <= {r["resourceType"] for r in resources}


def test_drawn_sizes_follow_real_charts() -> None:
    sizes = [history_size(SEED, index) for index in range(600)]
    assert all(SIZE_MIN <= size <= SIZE_MAX for size in sizes)
    assert 500 <= statistics.median(sizes) <= 2000
    assert sum(100 <= size <= 5000 for size in sizes) / len(sizes) > 0.8
    assert any(size > 10_000 for size in sizes)
    assert len(history_patient(SEED, 0)) == history_size(SEED, 0)


def test_every_resource_belongs_to_the_patient_and_its_encounters(chart: list[Resource]) -> None:
    patient_id = chart[0]["id"]
    assert chart[0]["resourceType"] == "Patient"
    assert all(patient_of(r) == patient_id for r in chart)
    encounters = {f"Encounter/{e['id']}" for e in of_type(chart, "Encounter")}
    assert all(r["encounter"]["reference"] in encounters for r in chart if "encounter" in r)


def test_the_chart_mixes_the_types_as_real_ones_do(chart: list[Resource]) -> None:
    counts = Counter(r["resourceType"] for r in chart)
    assert counts["Patient"] == 1 and counts["CareTeam"] == 1
    assert counts["Observation"] > len(chart) / 2
    assert counts["Encounter"] > 100 and counts["MedicationRequest"] > 100 and counts["Condition"] >= 5


def test_vital_signs_and_labs_are_coded_over_years(chart: list[Resource]) -> None:
    observations = of_type(chart, "Observation")
    vitals = [o for o in observations if category(o) == "vital-signs"]
    labs = [o for o in observations if category(o) == "laboratory"]
    assert vitals and labs and len(vitals) + len(labs) == len(observations)
    assert {o["code"]["coding"][0]["code"] for o in vitals} == VITAL_CODES
    assert len({o["code"]["coding"][0]["code"] for o in labs}) >= 10
    assert all(o["code"]["coding"][0]["system"] == "http://loinc.org" for o in observations)
    assert all(o["status"] == "final" and ("valueQuantity" in o or "component" in o) for o in observations)
    days = sorted(datetime.fromisoformat(o["effectiveDateTime"]).date() for o in observations)
    assert (days[-1] - days[0]).days > 3 * 365 and days[-1] <= REFERENCE_DAY


def test_conditions_have_a_clinical_status_and_an_onset(chart: list[Resource]) -> None:
    conditions = of_type(chart, "Condition")
    statuses = Counter(status(c["clinicalStatus"]) for c in conditions)
    assert statuses["active"] and statuses["resolved"]
    for condition in conditions:
        onset = date.fromisoformat(condition["onsetDateTime"])
        assert onset <= REFERENCE_DAY
        if status(condition["clinicalStatus"]) == "resolved":
            assert date.fromisoformat(condition["abatementDateTime"]) >= onset


def test_medications_run_in_courses_with_start_and_end(chart: list[Resource]) -> None:
    requests = of_type(chart, "MedicationRequest")
    statuses = Counter(r["status"] for r in requests)
    assert set(statuses) <= {"active", "completed", "stopped"} and statuses["completed"] > statuses["active"] > 0
    for request in requests:
        validity = request["dispenseRequest"]["validityPeriod"]
        start, end = date.fromisoformat(validity["start"]), date.fromisoformat(validity["end"])
        assert start <= end and start == datetime.fromisoformat(request["authoredOn"]).date()
        if request["status"] == "active":
            assert end > REFERENCE_DAY
    active = {r["medicationCodeableConcept"]["coding"][0]["code"] for r in requests if r["status"] == "active"}
    assert len(active) <= 12, "a chart's active medications are a handful, not its history"


def test_allergies_have_a_status_and_an_onset() -> None:
    allergies = [a for index in range(40) for a in of_type(history_patient(SEED, index, 30), "AllergyIntolerance")]
    assert Counter(status(a["clinicalStatus"]) for a in allergies)["active"] > 0
    assert all(date.fromisoformat(a["onsetDateTime"]) <= date.fromisoformat(a["recordedDate"]) for a in allergies)


def test_identifiers_are_fictional_and_unique_across_patients() -> None:
    patients = [history_patient(SEED, index, 20)[0] for index in range(400)]
    ssns = [i["value"] for p in patients for i in p["identifier"] if i["system"] == SSN_SYSTEM]
    mrns = [i["value"] for p in patients for i in p["identifier"] if i["system"] == MRN_SYSTEM]
    assert len(set(ssns)) == len(ssns) == 400 and all(s.startswith("999-") for s in ssns)
    assert len(set(mrns)) == 400 and mrns[0] == "MRN90000001"


def test_about_one_patient_in_twenty_denies_treatment() -> None:
    denying = sum(bool(of_type(history_patient(SEED, index, 20), "Consent")) for index in range(600))
    assert 10 <= denying <= 60


def test_seeded_histories_are_stored_indexed_and_served(tmp_path: Path) -> None:
    store = ResourceStore(tmp_path / "wardfn.db", LocalKek(os.urandom(32)))
    seen: list[int] = []
    try:
        assert seed_histories(store, 3, SEED, 400, progress=seen.append) == 1200
        assert seen == [400, 400, 400] and store.count_patients() == 3
        chart = history_patient(SEED, 1, 400)
        patient_id = chart[0]["id"]
        assert len(store.search(patient_id, "Observation")) == len(of_type(chart, "Observation"))
        newest = store.query(
            patient_id, "Observation", [("category", "vital-signs"), ("_sort", "-date"), ("_count", "1")]
        )
        vitals = [o for o in of_type(chart, "Observation") if category(o) == "vital-signs"]
        assert json.loads(newest[0])["effectiveDateTime"] == max(o["effectiveDateTime"] for o in vitals)
        assert store.care_team(patient_id)
    finally:
        store.close()
