"""The resource store on SQLite and PostgreSQL: indexing by patient, consent, concurrency and error mapping."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from host.errors import InvalidRequest, StoreUnavailable
from host.store.encryption import LocalKek
from host.store.resources import SEARCH_SQL, ResourceStore
from host.store.rows import patient_of
from tests.backends import Backend, PostgresBackend

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
KEK = LocalKek(os.urandom(32))


def patient(patient_id: str, given: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "name": [{"use": "official", "given": [given], "family": family}],
    }


def observation(obs_id: str, patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": obs_id, "subject": {"reference": f"Patient/{patient_id}"}}


def observation_about(reference: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o", "subject": {"reference": reference}}


RESOURCES: list[dict[str, Any]] = [
    patient("p2", "Ngozi", "Okafor"),
    patient("p1", "Wei", "Zhang"),
    observation("o1", "p1"),
    observation("o2", "p1"),
    observation("o3", "p2"),
    {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"}},
    {"resourceType": "CareTeam", "id": "t1", "subject": {"reference": "Patient/p2"}},
    {
        "resourceType": "Consent",
        "id": "c1",
        "status": "active",
        "patient": {"reference": "Patient/p2"},
        "provision": {"type": "deny", "purpose": [{"system": ACT_REASON, "code": "TREAT"}]},
    },
    {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "House"}]},
]


@pytest.fixture
def store(backend: Backend) -> Iterator[ResourceStore]:
    opened = backend.store(KEK)
    opened.add_resources(RESOURCES)
    yield opened
    opened.close()


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (patient("p9", "A", "B"), "p9"),
        (observation("o", "p1"), "p1"),
        ({"resourceType": "AllergyIntolerance", "id": "a", "patient": {"reference": "Patient/p1"}}, "p1"),
        ({"resourceType": "CareTeam", "id": "t", "subject": {"reference": "Patient/p1"}}, "p1"),
        ({"resourceType": "Consent", "id": "c", "patient": {"reference": "Patient/p1"}}, "p1"),
        (observation_about("https://fhir.example/Patient/p1"), "p1"),
        (observation_about("urn:uuid:p1"), "p1"),
        (observation_about("Group/g1"), None),
        (observation_about("Patient/"), None),
        ({"resourceType": "Observation", "id": "o", "subject": {"display": "no reference"}}, None),
        ({"resourceType": "Practitioner", "id": "dr"}, None),
    ],
)
def test_patient_of(resource: dict[str, Any], expected: str | None) -> None:
    assert patient_of(resource) == expected


def test_sqlite_creates_parent_directories_and_wal_schema(tmp_path: Path) -> None:
    store = ResourceStore(tmp_path / "nested" / "dir" / "wardfn.db", KEK)
    store.close()
    assert store.path is not None and store.path.exists()
    with sqlite3.connect(store.path) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(resources)")}
    conn.close()
    assert mode == "wal"
    assert "resources_by_patient_type_id" in indexes
    assert "resources_by_patient" not in indexes  # replaced: it could not serve the ORDER BY


INDEXES = {
    "resources_by_patient_type_id",
    "patient_index_by_key",
    "patient_index_by_patient",
    "data_keys_by_kek",
    "audit_flagged",
}


def test_every_hot_path_is_indexed(store: ResourceStore, backend: Backend) -> None:
    """Search by patient and type, blind-index lookups, keys by KEK, the review queue; the audit
    head and erasures by their primary keys."""
    if backend.name == "sqlite":
        names = {row[0] for row in backend.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
    else:
        names = {row[0] for row in backend.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert INDEXES <= names


def test_postgresql_searches_by_the_patient_index_without_sorting(postgres_backend: PostgresBackend) -> None:
    postgres_backend.store(KEK).close()
    with psycopg.connect(postgres_backend.url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # a few rows: make the planner show the index it would use
        plan = conn.execute(f"EXPLAIN {SEARCH_SQL.replace('?', '%s')}", ("kek", "p", "Observation")).fetchall()
    details = " ".join(str(row[0]) for row in plan)
    assert "resources_by_patient_type_id" in details and "Sort" not in details


def test_sqlite_search_uses_the_patient_index_not_a_scan_of_the_type(tmp_path: Path) -> None:
    """With only (patient, type) indexed, SQLite walked every resource of the type in id order
    to serve ORDER BY id: tens of milliseconds a search at 1,000 patients."""
    store = ResourceStore(tmp_path / "wardfn.db", KEK)
    store.close()
    assert store.path is not None
    with sqlite3.connect(store.path) as conn:
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN {SEARCH_SQL}",
            ("kek", "p", "Observation"),
        ).fetchall()
    conn.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "resources_by_patient_type_id" in details and "TEMP B-TREE" not in details


def test_add_resources_counts_and_generators_are_accepted(backend: Backend) -> None:
    opened = backend.store(KEK)
    try:
        assert opened.add_resources(r for r in RESOURCES) == len(RESOURCES)
        assert opened.add_resources([]) == 0
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("patient_id", "resource_type", "expected_ids"),
    [
        ("p1", "Patient", ["p1"]),
        ("p1", "Observation", ["o1", "o2"]),
        ("p2", "Observation", ["o3"]),
        ("p1", "AllergyIntolerance", ["a1"]),
        ("p2", "AllergyIntolerance", []),
        ("p2", "CareTeam", ["t1"]),
        ("p2", "Consent", ["c1"]),
        ("p1", "Practitioner", []),
        ("nobody", "Observation", []),
    ],
)
def test_search(store: ResourceStore, patient_id: str, resource_type: str, expected_ids: list[str]) -> None:
    bodies = store.search(patient_id, resource_type)
    assert all(isinstance(body, str) for body in bodies)
    assert [json.loads(body)["id"] for body in bodies] == expected_ids


def test_search_returns_bodies_as_stored(store: ResourceStore) -> None:
    (body,) = store.search("p1", "Patient")
    assert json.loads(body) == patient("p1", "Wei", "Zhang")


def test_adding_again_replaces_by_type_and_id(store: ResourceStore) -> None:
    store.add_resources([{**observation("o1", "p1"), "status": "amended"}])
    bodies = [json.loads(body) for body in store.search("p1", "Observation")]
    assert [b.get("status") for b in bodies] == ["amended", None]


def test_upserting_writes_only_what_is_new_or_changed_and_counts_it(store: ResourceStore) -> None:
    again = store.upsert_resources(RESOURCES)
    assert (again.resources.new, again.resources.updated, again.resources.unchanged) == (0, 0, len(RESOURCES))
    assert (again.patients.unchanged, again.changed) == (2, False)
    # Key order is not a change; a new field is, and so is a resource moved to another patient.
    reordered = dict(reversed(list(patient("p1", "Wei", "Zhang").items())))
    written = store.upsert_resources(
        [reordered, {**observation("o1", "p1"), "status": "amended"}, observation("o3", "p1"), patient("p9", "N", "E")]
    )
    assert (written.resources.new, written.resources.updated, written.resources.unchanged) == (1, 2, 1)
    # p1: an observation changed and one moved to them; p9 is new.
    assert (written.patients.new, written.patients.updated, written.patients.unchanged) == (1, 1, 0)
    assert [json.loads(b)["id"] for b in store.search("p1", "Observation")] == ["o1", "o2", "o3"]
    assert store.search("p2", "Observation") == []


def test_a_bad_resource_rolls_back_the_whole_batch(store: ResourceStore) -> None:
    with pytest.raises(InvalidRequest):
        store.add_resources([patient("p3", "A", "B"), {"resourceType": "Patient"}])
    assert not store.patient_exists("p3")


@pytest.mark.parametrize(
    ("patient_id", "exists"), [("p1", True), ("p2", True), ("dr1", False), ("o1", False), ("", False)]
)
def test_patient_exists(store: ResourceStore, patient_id: str, exists: bool) -> None:
    assert store.patient_exists(patient_id) is exists


def test_patient_facts_are_the_three_questions_in_one(store: ResourceStore) -> None:
    team = {
        "resourceType": "CareTeam",
        "id": "t2",
        "status": "active",
        "subject": {"reference": "Patient/p1"},
        "participant": [{"member": {"reference": "Practitioner/dr1"}}, {"member": {"reference": "Group/g"}}],
    }
    store.add_resources([team, patient("p3", "Ama", "Mensah")])
    store.erase_patient("p3")
    for patient_id in ("p1", "p2", "p3", "dr1", "o1", "nobody", ""):
        facts = store.patient_facts(patient_id)
        exists = store.patient_exists(patient_id)
        assert facts.exists is exists, patient_id
        assert list(facts.care_team) == (store.care_team(patient_id) if exists else []), patient_id
        assert list(facts.consent_directives) == (store.consent_directives(patient_id) if exists else []), patient_id
    assert store.patient_facts("p1").care_team == ("dr1",)
    assert store.patient_facts("p2").consent_directives  # p2's deny of TREAT


@pytest.mark.parametrize(
    ("patient_id", "purpose", "expected"),
    [("p1", "TREAT", True), ("p2", "TREAT", False), ("p2", "HPAYMT", True), ("p1", "HRESCH", False)],
)
def test_consent_for(store: ResourceStore, patient_id: str, purpose: str, expected: bool) -> None:
    assert store.consent_for(patient_id, purpose) is expected


def test_list_and_count_patients(store: ResourceStore) -> None:
    assert store.count_patients() == 2
    everyone = [{"id": "p1", "name": "Wei Zhang"}, {"id": "p2", "name": "Ngozi Okafor"}]
    assert store.list_patients(10) == everyone
    assert store.list_patients(1) == [{"id": "p1", "name": "Wei Zhang"}]


def test_concurrent_reads_and_writes_from_many_threads(store: ResourceStore) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(9)

    def reader() -> None:
        try:
            barrier.wait()
            for _ in range(200):
                assert len(store.search("p1", "Observation")) >= 2
                assert store.patient_exists("p2")
        except BaseException as exc:  # collected and re-raised by the test thread
            errors.append(exc)

    def writer() -> None:
        try:
            barrier.wait()
            for i in range(50):
                store.add_resources([observation(f"w{i}", "p2")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.search("p2", "Observation")) == 51


def test_healthy(store: ResourceStore) -> None:
    assert store.healthy() is True
    store.close()
    assert store.healthy() is False


def test_closed_store_is_unavailable(store: ResourceStore) -> None:
    store.close()
    with pytest.raises(StoreUnavailable):
        store.search("p1", "Patient")
    store.close()  # closing twice is harmless


def test_sqlite_unreadable_file_is_unavailable_without_patient_data(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not a SQLite file" * 100)
    with pytest.raises(StoreUnavailable) as caught:
        ResourceStore(path, KEK)
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    assert str(path) in str(caught.value)


def test_error_messages_carry_no_patient_data(store: ResourceStore, backend: Backend) -> None:
    backend.execute("DROP TABLE resources")
    with pytest.raises(StoreUnavailable) as caught:
        store.search("p1-secret-id", "Observation")
    assert "p1-secret-id" not in str(caught.value)
    assert "Observation" not in str(caught.value)


def test_sealed_text_opens_only_for_its_purpose(store: ResourceStore) -> None:
    sealed = store.seal_text('{"name":"Ann Lee"}', "audit-query")
    assert "Ann" not in sealed and sealed != store.seal_text('{"name":"Ann Lee"}', "audit-query")
    assert store.open_text(sealed, "audit-query") == '{"name":"Ann Lee"}'
    with pytest.raises(StoreUnavailable):
        store.open_text(sealed, "something-else")
    with pytest.raises(StoreUnavailable):
        store.open_text("sealed:v1:not-base64!", "audit-query")


WRITER = """
import base64, sys, time
from pathlib import Path
from host.store.database import PostgresDatabase
from host.store.encryption import LocalKek
from host.store.resources import ResourceStore

target, name, key = sys.argv[1], sys.argv[2], base64.b64decode(sys.argv[3])
database = PostgresDatabase(target, lock_timeout_s=30) if target.startswith("postgresql:") else Path(target)
store = ResourceStore(database, LocalKek(key))
time.sleep(max(0.0, float(sys.argv[4]) - time.time()))  # every process starts writing at once
try:
    for n in range(20):
        # The same new patients from every process, in the same order: each one's data key is made once.
        store.add_resources([
            {"resourceType": "Observation", "id": f"{name}-{n}", "subject": {"reference": f"Patient/shared-{n}"}}
        ])
finally:
    store.close()
"""


def test_processes_writing_to_one_database_share_each_patients_data_key(backend: Backend) -> None:
    """Three hosts adding records for the same new patients at once: one data key each, all readable."""
    import base64
    import subprocess
    import sys
    import time

    from host.config import PROJECT_ROOT

    key = os.urandom(32)
    backend.store(LocalKek(key)).close()  # the tables and the KEK registered before the race
    target = backend.url if isinstance(backend, PostgresBackend) else str(backend.path)  # type: ignore[attr-defined]
    start = time.time() + 3
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, target, f"proc{i}", base64.b64encode(key).decode(), str(start)],
            cwd=PROJECT_ROOT,
            stderr=subprocess.PIPE,
        )
        for i in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    store = backend.store(LocalKek(key))
    try:
        found = {json.loads(body)["id"] for n in range(20) for body in store.search(f"shared-{n}", "Observation")}
    finally:
        store.close()
    assert found == {f"proc{i}-{n}" for i in range(3) for n in range(20)}
    assert backend.query("SELECT COUNT(*) FROM data_keys WHERE owner LIKE 'shared-%'") == [(20,)]
