"""FHIR search parameters on the sealed search index, on SQLite and PostgreSQL: what matches, in which
order, what is refused, and that the index stays sealed through writes, erasure, key rotation and
databases made before it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from host.errors import InvalidRequest, StoreUnavailable
from host.store import migrations
from host.store.encryption import LocalKek
from host.store.resources import ResourceStore
from tests.backends import Backend

KEK = LocalKek(os.urandom(32))
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def obs(oid: str, code: str, when: Any, status: str = "final", patient: str = "p1") -> dict[str, Any]:
    resource = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "subject": {"reference": f"Patient/{patient}"},
        "category": [coded(OBS_CATEGORY, "vital-signs" if code in ("8867-4", "8480-6") else "laboratory")],
        "code": coded(LOINC, code),
        "valueQuantity": {"value": 1, "unit": "x"},
    }
    if isinstance(when, dict):
        resource["effectivePeriod"] = when
    elif when is not None:
        resource["effectiveDateTime"] = when
    return resource


RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1"},
    {"resourceType": "Patient", "id": "p2"},
    obs("hr-2019", "8867-4", "2019-03-01T10:00:00Z"),
    obs("hr-2021", "8867-4", "2021-06-15T08:30:00+02:00"),
    obs("hr-2020", "8867-4", "2020-01-01"),
    obs("bp-2020", "8480-6", "2020-05-05T12:00:00Z", status="amended"),
    obs("a1c-2018", "4548-4", {"start": "2018-02-01", "end": "2018-02-03"}),
    obs("a1c-open", "4548-4", {"start": "2022-01-01"}),
    obs("undated", "8867-4", None, status="preliminary"),
    obs("other-patient", "8867-4", "2023-01-01T00:00:00Z", patient="p2"),
    {
        "resourceType": "Condition",
        "id": "c-active",
        "subject": {"reference": "Patient/p1"},
        "clinicalStatus": coded(CLINICAL, "active"),
        "code": coded(SNOMED, "44054006"),
        "onsetDateTime": "2010-04-01",
    },
    {
        "resourceType": "Condition",
        "id": "c-resolved",
        "subject": {"reference": "Patient/p1"},
        "clinicalStatus": coded(CLINICAL, "resolved"),
        "code": coded(SNOMED, "195662009"),
        "recordedDate": "2015-09-09",
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m-active",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": coded("http://www.nlm.nih.gov/research/umls/rxnorm", "860975"),
        "authoredOn": "2020-02-02T09:00:00Z",
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m-stopped",
        "status": "stopped",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": coded("http://www.nlm.nih.gov/research/umls/rxnorm", "197361"),
        "authoredOn": "2012-02-02T09:00:00Z",
    },
    {
        "resourceType": "AllergyIntolerance",
        "id": "al-food",
        "patient": {"reference": "Patient/p1"},
        "clinicalStatus": coded("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"),
        "category": ["food"],
        "code": coded(SNOMED, "91935009"),
    },
    {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2020-03-03T10:00:00Z", "end": "2020-03-03T11:00:00Z"},
    },
]

# Clinical dates and codes of the fixture that must never appear in clear in the database.
SECRETS = ["2019-03-01", "2021-06-15", "2018-02-01", "2010-04-01", "2020-02-02", "8867-4", "44054006", "860975"]


@pytest.fixture
def store(backend: Backend) -> Iterator[ResourceStore]:
    opened = backend.store(KEK)
    opened.add_resources(RESOURCES)
    yield opened
    opened.close()


def ids(store: ResourceStore, resource_type: str, params: list[tuple[str, str]], patient: str = "p1") -> list[str]:
    return [json.loads(body)["id"] for body in store.query(patient, resource_type, params)]


HR = f"{LOINC}|8867-4"


SEARCHES: list[tuple[str, list[tuple[str, str]], list[str]]] = [
    # No parameters: every resource of the type, by id, as `search` reads them.
    ("Observation", [], ["a1c-2018", "a1c-open", "bp-2020", "hr-2019", "hr-2020", "hr-2021", "undated"]),
    # Tokens: system|code, a bare code, |code (no system: none here), system| (any code of it), OR by comma.
    ("Observation", [("code", HR)], ["hr-2019", "hr-2020", "hr-2021", "undated"]),
    ("Observation", [("code", "4548-4")], ["a1c-2018", "a1c-open"]),
    ("Observation", [("code", "|8867-4")], []),
    ("Observation", [("code", "http://snomed.info/sct|8867-4")], []),
    (
        "Observation",
        [("code", f"{LOINC}|")],
        ["a1c-2018", "a1c-open", "bp-2020", "hr-2019", "hr-2020", "hr-2021", "undated"],
    ),
    ("Observation", [("code", f"{HR},{LOINC}|8480-6"), ("date", "ge2020")], ["bp-2020", "hr-2020", "hr-2021"]),
    ("Observation", [("category", f"{OBS_CATEGORY}|laboratory")], ["a1c-2018", "a1c-open"]),
    ("Observation", [("status", "amended,preliminary")], ["bp-2020", "undated"]),
    # A name given twice: both must hold.
    ("Observation", [("code", HR), ("status", "final"), ("status", "preliminary")], []),
    # Sort on the date, both ways; ties by id; undated last; _count after sorting.
    ("Observation", [("code", HR), ("_sort", "-date")], ["hr-2021", "hr-2020", "hr-2019", "undated"]),
    ("Observation", [("code", HR), ("_sort", "date")], ["hr-2019", "hr-2020", "hr-2021", "undated"]),
    ("Observation", [("code", HR), ("_sort", "-date"), ("_count", "1")], ["hr-2021"]),
    ("Observation", [("_sort", "-date"), ("_count", "2")], ["a1c-open", "hr-2021"]),
    ("Observation", [("code", HR), ("_count", "0")], []),
    # Dates, with FHIR's range semantics: a day holds its times; a period matches as a range.
    ("Observation", [("date", "2020-01-01")], ["hr-2020"]),
    ("Observation", [("date", "2020")], ["bp-2020", "hr-2020"]),
    ("Observation", [("date", "ge2021-06-15T06:30:00Z"), ("code", HR)], ["hr-2021"]),
    ("Observation", [("date", "gt2021-06-15T06:30:00Z"), ("code", HR)], []),
    ("Observation", [("date", "lt2019-03-01T10:00:01Z"), ("code", HR)], ["hr-2019"]),
    ("Observation", [("date", "le2019-03-01T09:59:59Z"), ("code", HR)], []),
    ("Observation", [("date", "ge2019-06"), ("date", "lt2021")], ["bp-2020", "hr-2020"]),
    ("Observation", [("date", "2018-02-02")], []),  # the period is wider than that day
    ("Observation", [("date", "2018-02")], ["a1c-2018"]),
    ("Observation", [("date", "ge2030")], ["a1c-open"]),  # an open period goes on
    ("Observation", [("date", "ne2020")], ["a1c-2018", "a1c-open", "hr-2019", "hr-2021"]),
    ("Observation", [("date", "sa2021-12-31"), ("date", "eb2023")], []),
    ("Observation", [("date", "sa2021-12-31")], ["a1c-open"]),
    # The other types' parameters, from the one table.
    ("Condition", [("clinical-status", "active")], ["c-active"]),
    ("Condition", [("clinical-status", f"{CLINICAL}|resolved")], ["c-resolved"]),
    ("Condition", [("_sort", "-date")], ["c-resolved", "c-active"]),  # onset, else recordedDate
    ("Condition", [("onset-date", "ge2000")], ["c-active"]),
    ("Condition", [("code", f"{SNOMED}|44054006")], ["c-active"]),
    ("MedicationRequest", [("status", "active")], ["m-active"]),
    ("MedicationRequest", [("code", "197361")], ["m-stopped"]),
    ("MedicationRequest", [("_sort", "-authoredon")], ["m-active", "m-stopped"]),
    ("MedicationRequest", [("date", "lt2015")], ["m-stopped"]),
    ("AllergyIntolerance", [("clinical-status", "active"), ("category", "food")], ["al-food"]),
    ("AllergyIntolerance", [("category", "medication")], []),
    ("Encounter", [("class", "AMB"), ("date", "2020-03-03")], ["e1"]),
    ("Encounter", [("status", "planned")], []),
    # A type outside the table: counted, by id.
    ("Patient", [("_count", "5")], ["p1"]),
]


@pytest.mark.parametrize(("resource_type", "params", "expected"), SEARCHES)
def test_parameters_select_and_order_as_fhir_says(
    store: ResourceStore, resource_type: str, params: list[tuple[str, str]], expected: list[str]
) -> None:
    assert ids(store, resource_type, params) == expected


def test_one_invocations_searches_answer_as_separate_ones_do(store: ResourceStore) -> None:
    # A session keeps each index it opened (and each token's postings) for the searches after it.
    query = store.query_session()
    for resource_type, params, expected in SEARCHES * 2:
        assert [json.loads(body)["id"] for body in query("p1", resource_type, params)] == expected, params


def test_a_session_opens_each_index_once_and_only_for_itself(store: ResourceStore, backend: Backend) -> None:
    query = store.query_session()
    assert [json.loads(b)["id"] for b in query("p1", "Observation", [("code", HR), ("_count", "1")])] == ["hr-2019"]
    # Rewritten as every write does: a new blob with its own fingerprint (nonce and tag).
    backend.execute(
        "UPDATE search_index SET sealed = ?, fingerprint = ? WHERE patient_id = 'p1'", b"\0" * 40, b"\0" * 28
    )
    # The session answers from the index it opened; a new session (the next invocation) reads it again.
    assert [json.loads(b)["id"] for b in query("p1", "Observation", [("code", HR), ("_sort", "-date")])] == [
        "hr-2021",
        "hr-2020",
        "hr-2019",
        "undated",
    ]
    with pytest.raises(StoreUnavailable):
        store.query_session()("p1", "Observation", [("code", HR)])
    with pytest.raises(StoreUnavailable):
        query("p1", "Condition", [])  # not opened by this session: read, and found altered


def test_pages_walk_every_result_once(store: ResourceStore) -> None:
    for sort in ([], [("_sort", "-date")]):
        whole = ids(store, "Observation", sort)
        pages = [
            ids(store, "Observation", [*sort, ("_offset", str(start)), ("_count", "2")]) for start in range(0, 8, 2)
        ]
        assert [rid for page in pages for rid in page] == whole


def test_the_kept_indexes_forget_an_erased_patient(store: ResourceStore) -> None:
    assert ids(store, "Observation", [("code", HR), ("_count", "1")]) == ["hr-2019"]
    assert ids(store, "Observation", [("date", "2023")], patient="p2") == ["other-patient"]
    kept = store._indexes._kept  # the decrypted indexes this store holds across invocations
    assert {key[0] for key in kept} == {"p1", "p2"}
    assert store.erase_patient("p1")
    assert {key[0] for key in kept} == {"p2"}


def test_only_the_patients_own_resources_are_found(store: ResourceStore) -> None:
    assert ids(store, "Observation", [("date", "2023")]) == []
    assert ids(store, "Observation", [("date", "2023")], patient="p2") == ["other-patient"]
    assert ids(store, "Observation", [], patient="nobody") == []


def test_elements_keep_only_what_was_asked_tagged_subsetted(store: ResourceStore) -> None:
    [body] = store.query(
        "p1", "Observation", [("code", HR), ("_sort", "-date"), ("_count", "1"), ("_elements", "code,value")]
    )
    found = json.loads(body)
    assert set(found) == {"resourceType", "id", "meta", "code", "valueQuantity"}
    assert found["meta"]["tag"][-1]["code"] == "SUBSETTED"


@pytest.mark.parametrize(
    "params",
    [
        [("subject", "Patient/p2")],  # not a parameter of the table
        [("code:text", "heart")],  # modifiers
        [("subject.name", "x")],  # chains
        [("_include", "Observation:subject")],
        [("code", "a|b|c")],
        [("code", "|")],
        [("code", "")],
        [("code", "a\\,b")],
        [("date", "ap2020")],
        [("date", "2020-13-01")],
        [("date", "yesterday")],
        [("_sort", "code")],
        [("_sort", "-status")],
        [("_count", "-1")],
        [("_count", "ten")],
        [("_offset", "-1")],
        [("_elements", "value.unit")],
    ],
)
def test_unsupported_parameters_are_refused_not_ignored(store: ResourceStore, params: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidRequest):
        store.query("p1", "Observation", params)


def test_the_index_is_sealed_one_row_per_patient_and_type(store: ResourceStore, backend: Backend) -> None:
    rows = backend.query("SELECT patient_id, resource_type FROM search_index ORDER BY 1, 2")
    assert rows == [
        ("p1", t) for t in ("AllergyIntolerance", "Condition", "Encounter", "MedicationRequest", "Observation")
    ] + [("p2", "Observation")]
    dump = backend.dump()
    for secret in SECRETS:
        assert secret.encode() not in dump, secret


def test_the_index_follows_replacements_and_additions(store: ResourceStore) -> None:
    store.add_resources([obs("hr-2024", "8867-4", "2024-01-01T00:00:00Z"), obs("hr-2019", "8480-6", "2019-03-01")])
    assert ids(store, "Observation", [("code", HR), ("_sort", "-date")]) == ["hr-2024", "hr-2021", "hr-2020", "undated"]
    assert ids(store, "Observation", [("code", "8480-6")]) == ["bp-2020", "hr-2019"]


def test_a_resource_moved_to_another_patient_is_not_found_under_the_first(store: ResourceStore) -> None:
    store.add_resources([obs("hr-2021", "8867-4", "2021-06-15T08:30:00+02:00", patient="p2")])
    assert "hr-2021" not in ids(store, "Observation", [("code", HR)])
    assert "hr-2021" in ids(store, "Observation", [("code", HR)], patient="p2")


def test_only_the_selected_resources_are_decrypted(store: ResourceStore, backend: Backend) -> None:
    # An unreadable body among those not selected does not matter: it is never opened.
    backend.execute("UPDATE resources SET body = ? WHERE id = ?", b"\0" * 40, "hr-2019")
    assert ids(store, "Observation", [("code", HR), ("_sort", "-date"), ("_count", "1")]) == ["hr-2021"]
    with pytest.raises(StoreUnavailable):
        store.query("p1", "Observation", [("code", HR), ("_sort", "date"), ("_count", "1")])


def test_a_tampered_or_moved_index_is_refused(store: ResourceStore, backend: Backend) -> None:
    [(sealed,)] = backend.query(
        "SELECT sealed FROM search_index WHERE patient_id = 'p1' AND resource_type = 'Observation'"
    )
    backend.execute(
        "UPDATE search_index SET sealed = ? WHERE patient_id = 'p1' AND resource_type = 'Condition'", bytes(sealed)
    )
    with pytest.raises(StoreUnavailable):
        store.query("p1", "Condition", [])


def test_erasure_shreds_the_index(store: ResourceStore, backend: Backend) -> None:
    assert store.erase_patient("p1")
    assert store.query("p1", "Observation", [("code", HR)]) == []
    assert backend.query("SELECT patient_id FROM search_index") == [("p2",)]


def test_the_index_follows_a_kek_rotation(store: ResourceStore, backend: Backend) -> None:
    new = LocalKek(os.urandom(32))
    store.rotate_kek(new)
    rotated = backend.store(new)
    try:
        rotated.retire_kek(KEK)
        assert ids(rotated, "Observation", [("code", HR), ("_sort", "-date"), ("_count", "1")]) == ["hr-2021"]
    finally:
        rotated.close()


def test_a_database_made_before_the_index_gets_it_at_open(store: ResourceStore, backend: Backend) -> None:
    store.close()
    backend.execute("DELETE FROM search_index")
    backend.execute("DELETE FROM search_index_builds")
    reopened = backend.store(KEK)
    try:
        assert ids(reopened, "Observation", [("code", HR), ("_sort", "-date"), ("_count", "1")]) == ["hr-2021"]
        assert len(backend.query("SELECT 1 FROM search_index")) == 6
    finally:
        reopened.close()


def test_an_index_of_another_version_is_read_from_the_resources(store: ResourceStore, backend: Backend) -> None:
    backend.execute("UPDATE search_index SET version = 0")
    assert ids(store, "Observation", [("code", HR), ("_sort", "-date"), ("_count", "1")]) == ["hr-2021"]
    # And the next write of that type brings it up to date.
    store.add_resources([obs("hr-2025", "8867-4", "2025-01-01")])
    assert (
        backend.query("SELECT version FROM search_index WHERE resource_type = 'Observation' AND patient_id = 'p1'")[0][
            0
        ]
        == 1
    )
    assert ids(store, "Observation", [("code", HR), ("_sort", "-date"), ("_count", "2")]) == ["hr-2025", "hr-2021"]


def test_each_index_row_carries_its_blobs_fingerprint(store: ResourceStore, backend: Backend) -> None:
    # Written with the blob, and (migration 8) filled in from the blob for rows written before it.
    rows = backend.query("SELECT sealed, fingerprint FROM search_index")
    assert rows and all(bytes(f) == bytes(s)[:12] + bytes(s)[-16:] for s, f in rows)
    backend.execute("UPDATE search_index SET fingerprint = NULL")
    if backend.name == "sqlite":
        backend.execute(migrations.SEARCH_INDEX_FINGERPRINT_FILL_SQLITE)
    else:
        backend.execute(migrations.SEARCH_INDEX_FINGERPRINT_POSTGRESQL[1])
    assert backend.query("SELECT sealed, fingerprint FROM search_index") == rows


def test_an_index_row_without_a_fingerprint_is_answered_and_not_kept(store: ResourceStore, backend: Backend) -> None:
    backend.execute("UPDATE search_index SET fingerprint = NULL")
    assert ids(store, "Observation", [("code", HR), ("_sort", "-date"), ("_count", "1")]) == ["hr-2021"]
    # Nothing tells this blob from the next one: a rewrite behind the host's back is found at once.
    backend.execute("UPDATE search_index SET sealed = ? WHERE patient_id = 'p1'", b"\0" * 40)
    with pytest.raises(StoreUnavailable):
        store.query("p1", "Observation", [("code", HR)])
