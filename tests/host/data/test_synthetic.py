"""The synthetic generator: deterministic, plausible, and loadable quickly."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host.data.synthetic import PRACTITIONER_IDS, generate, seed_store
from host.data.vocabulary import SSN_SYSTEM
from host.store.encryption import LocalKek
from host.store.resources import ResourceStore
from host.store.rows import patient_of

VITAL_CODES = {"8867-4", "85354-9", "8310-5", "9279-1", "29463-7", "8302-2", "59408-5"}


@pytest.fixture(scope="module")
def thousand() -> list[dict[str, Any]]:
    return list(generate(1000, 20261125))


def by_patient(resources: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        patient_id = patient_of(resource)
        assert patient_id is not None
        grouped.setdefault(patient_id, []).append(resource)
    return grouped


def dump(resources: Iterator[dict[str, Any]]) -> str:
    return json.dumps(list(resources), sort_keys=False)


def test_same_patients_and_seed_give_identical_output() -> None:
    assert dump(generate(50, 7)) == dump(generate(50, 7))


def test_another_seed_gives_other_patients() -> None:
    assert dump(generate(50, 7)) != dump(generate(50, 8))


def test_fewer_patients_is_a_prefix() -> None:
    assert dump(generate(20, 7))[:-1] in dump(generate(50, 7))


def test_zero_patients_yields_nothing() -> None:
    assert list(generate(0, 1)) == []


def test_ids_are_unique_uuids(thousand: list[dict[str, Any]]) -> None:
    keys = [(r["resourceType"], r["id"]) for r in thousand]
    assert len(keys) == len(set(keys))
    assert all(len(r["id"]) == 36 and r["id"][14] == "4" for r in thousand)


def test_every_resource_references_an_existing_patient(thousand: list[dict[str, Any]]) -> None:
    patients = {r["id"] for r in thousand if r["resourceType"] == "Patient"}
    assert len(patients) == 1000
    for resource in thousand:
        if resource["resourceType"] != "Patient":
            field = "patient" if resource["resourceType"] in ("AllergyIntolerance", "Consent") else "subject"
            assert resource[field]["reference"].startswith("Patient/")
            assert patient_of(resource) in patients


def test_encounter_references_stay_within_the_patient(thousand: list[dict[str, Any]]) -> None:
    for patient_id, resources in by_patient(thousand).items():
        encounters = {f"Encounter/{r['id']}" for r in resources if r["resourceType"] == "Encounter"}
        for resource in resources:
            if "encounter" in resource:
                assert resource["encounter"]["reference"] in encounters, patient_id


def test_about_one_patient_in_twenty_denies_treatment(thousand: list[dict[str, Any]]) -> None:
    consents = [r for r in thousand if r["resourceType"] == "Consent"]
    assert 25 <= len(consents) <= 80
    for consent in consents:
        assert consent["status"] == "active"
        assert consent["provision"]["type"] == "deny"
        assert [p["code"] for p in consent["provision"]["purpose"]] == ["TREAT"]


def test_each_patient_has_the_promised_shape(thousand: list[dict[str, Any]]) -> None:
    for patient_id, resources in by_patient(thousand).items():
        counts = Counter(r["resourceType"] for r in resources)
        assert counts["Patient"] == 1
        assert 1 <= counts["Encounter"] <= 3
        assert counts["Condition"] <= 4
        assert counts["AllergyIntolerance"] <= 3
        assert counts["MedicationRequest"] <= 5
        assert counts["CareTeam"] == 1
        assert counts["Consent"] <= 1
        vitals = [r for r in resources if r["resourceType"] == "Observation"]
        times = {r["effectiveDateTime"] for r in vitals}
        assert 1 <= len(times) <= 4, patient_id
        for moment in times:
            codes = {r["code"]["coding"][0]["code"] for r in vitals if r["effectiveDateTime"] == moment}
            assert codes == VITAL_CODES


def test_patient_demographics(thousand: list[dict[str, Any]]) -> None:
    patients = [r for r in thousand if r["resourceType"] == "Patient"]
    for patient in patients:
        (name,) = patient["name"]
        assert name["use"] == "official" and name["given"] and name["family"]
        assert "1930-01-01" <= patient["birthDate"] <= "2020-12-31"
        assert patient["gender"] in ("male", "female", "other", "unknown")
        identifiers = {i["system"]: i for i in patient["identifier"]}
        assert identifiers["urn:wardfn:mrn"]["type"]["coding"][0]["code"] == "MR"
        ssn = identifiers["http://hl7.org/fhir/sid/us-ssn"]
        assert ssn["type"]["coding"][0]["code"] == "SS"
        assert ssn["value"].startswith("999-")  # never issued: no real person's number
        assert {t["system"] for t in patient["telecom"]} == {"phone", "email"}
        assert patient["address"][0]["city"]
    assert len({p["identifier"][0]["value"] for p in patients}) == len(patients)
    assert len({p["name"][0]["family"] for p in patients}) > 30


def _national_identifiers(resources: list[dict[str, Any]]) -> list[str]:
    """The patients' SSNs, in MRN order."""
    patients = sorted(
        (r for r in resources if r["resourceType"] == "Patient"), key=lambda p: p["identifier"][0]["value"]
    )
    return [next(i["value"] for i in p["identifier"] if i["system"] == SSN_SYSTEM) for p in patients]


def test_national_identifiers_are_fictional_and_unique(thousand: list[dict[str, Any]]) -> None:
    ssns = _national_identifiers(thousand)
    assert all(re.fullmatch(r"999-(?!00)\d{2}-(?!0000)\d{4}", ssn) for ssn in ssns), ssns[:5]
    assert len(set(ssns)) == len(ssns)


def test_national_identifiers_are_not_a_function_of_the_mrn(thousand: list[dict[str, Any]]) -> None:
    # Patients whose MRNs differ by one: their SSNs should differ as two random draws do (in about
    # 5.4 of 6 digits), not by one as a counter's would.
    numbers = [ssn[4:].replace("-", "") for ssn in _national_identifiers(thousand)]
    differing = [sum(a != b for a, b in zip(x, y, strict=True)) for x, y in itertools.pairwise(numbers)]
    assert sum(differing) / len(differing) > 4.5
    assert sum(d <= 2 for d in differing) < len(differing) / 50
    steps = {int(y) - int(x) for x, y in itertools.pairwise(numbers)}
    assert len(steps) > 0.9 * len(differing), "the step from one patient's SSN to the next should not repeat"


def test_national_identifiers_follow_the_seed() -> None:
    first = _national_identifiers(list(generate(50, 7)))
    assert first == _national_identifiers(list(generate(50, 7)))
    assert _national_identifiers(list(generate(20, 7))) == first[:20]
    # The same MRNs under another seed: other SSNs, so the MRN alone says nothing of them.
    other = _national_identifiers(list(generate(50, 8)))
    assert sum(a == b for a, b in zip(first, other, strict=True)) <= 1


def test_vital_signs_are_coded_and_plausible(thousand: list[dict[str, Any]]) -> None:
    observations = [r for r in thousand if r["resourceType"] == "Observation"]
    for obs in observations:
        assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
        assert obs["code"]["coding"][0]["system"] == "http://loinc.org"
        if obs["code"]["coding"][0]["code"] == "85354-9":
            assert "valueQuantity" not in obs
            parts = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in obs["component"]}
            assert set(parts) == {"8480-6", "8462-4"}
            assert parts["8480-6"] > parts["8462-4"]
        else:
            assert obs["valueQuantity"]["value"] > 0


def test_allergies_and_medications_vary(thousand: list[dict[str, Any]]) -> None:
    allergies = [r for r in thousand if r["resourceType"] == "AllergyIntolerance"]
    medications = [r for r in thousand if r["resourceType"] == "MedicationRequest"]
    assert {a["clinicalStatus"]["coding"][0]["code"] for a in allergies} == {"active", "resolved"}
    assert {m["status"] for m in medications} == {"active", "stopped", "completed"}
    assert all(a["reaction"][0]["manifestation"] and a["recordedDate"] for a in allergies)
    assert all(m["dosageInstruction"][0]["text"] and m["authoredOn"] for m in medications)


def test_care_teams_draw_from_the_practitioner_pool(thousand: list[dict[str, Any]]) -> None:
    assert len(set(PRACTITIONER_IDS)) == len(PRACTITIONER_IDS) == 50
    pool = {f"Practitioner/{p}" for p in PRACTITIONER_IDS}
    for team in (r for r in thousand if r["resourceType"] == "CareTeam"):
        members = [p["member"]["reference"] for p in team["participant"]]
        assert 2 <= len(members) <= 4
        assert len(set(members)) == len(members)
        assert set(members) <= pool


def test_seed_store_loads_a_thousand_patients_quickly(tmp_path: Path) -> None:
    store = ResourceStore(tmp_path / "wardfn.db", LocalKek(os.urandom(32)))
    try:
        started = time.perf_counter()
        assert seed_store(store, 1000, 20261125) == 1000
        elapsed = time.perf_counter() - started
        assert store.count_patients() == 1000
        first = store.list_patients(1)[0]["id"]
        assert store.search(first, "Observation")
        assert store.search(first, "CareTeam")
    finally:
        store.close()
    assert elapsed < 10, f"seeding 1,000 patients took {elapsed:.1f} s"


def test_seeded_consent_denials_reach_the_store(tmp_path: Path) -> None:
    resources = list(generate(200, 3))
    denied = {patient_of(r) for r in resources if r["resourceType"] == "Consent"}
    store = ResourceStore(tmp_path / "wardfn.db", LocalKek(os.urandom(32)))
    try:
        store.add_resources(resources)
        patients = [r["id"] for r in resources if r["resourceType"] == "Patient"]
        assert {p for p in patients if not store.consent_for(p, "TREAT")} == denied
    finally:
        store.close()
