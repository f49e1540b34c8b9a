"""Encryption at rest in the store, on real SQLite files and PostgreSQL databases: no plaintext on
disk or in a dump, a wrong KEK refused, rows bound to their place, erasure by crypto-shredding, KEK
rotation with nothing lost."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from host.errors import ConfigurationError, InvalidRequest, StoreUnavailable
from host.store.encryption import LocalKek
from host.store.resources import ResourceStore
from host.types import DirectoryQuery
from tests.backends import Backend


def patient(patient_id: str, given: str, family: str, phone: str, mrn: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"system": "urn:wardfn:mrn", "value": mrn}],
        "name": [{"use": "official", "given": [given], "family": family}],
        "telecom": [{"system": "phone", "value": phone}],
        "birthDate": "1961-07-14",
    }


def observation(obs_id: str, patient_id: str, note: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "subject": {"reference": f"Patient/{patient_id}"},
        "note": [{"text": note}],
    }


PATIENTS = [
    patient("pid-ngozi", "Ngozi", "Okonkwo-Adeyemi", "(617) 555-0142", "MRN00004242"),
    patient("pid-wei", "Weiqiang", "Zhangsun", "(312) 555-0177", "MRN00007777"),
]
RESOURCES = [
    *PATIENTS,
    observation("obs-1", "pid-ngozi", "tuberculosis contact tracing"),
    observation("obs-2", "pid-wei", "hepatitis screening"),
    {"resourceType": "Practitioner", "id": "dr-1", "name": [{"family": "Housemartin"}]},
]
PLAINTEXT = [
    b"Okonkwo",
    b"Adeyemi",
    b"Ngozi",
    b"Weiqiang",
    b"Zhangsun",
    b"zhangsun",
    b"555-0142",
    b"555-0177",
    b"MRN00004242",
    b"MRN00007777",
    b"1961-07-14",
    b"tuberculosis",
    b"hepatitis",
    b"Housemartin",
]


def file_bytes(path: Path) -> bytes:
    """The database as an attacker with the disk would read it: the file and its write-ahead log."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.fixture
def kek() -> LocalKek:
    return LocalKek(os.urandom(32))


@pytest.fixture
def store(backend: Backend, kek: LocalKek) -> Any:
    opened = backend.store(kek)
    opened.add_resources(RESOURCES)
    yield opened
    opened.close()


def test_no_plaintext_reaches_the_file_yet_search_answers_plaintext(store: ResourceStore, backend: Backend) -> None:
    raw = backend.dump()
    assert b"pid-ngozi" in raw and b"obs-1" in raw  # ids are stored as they are: the dump is read
    assert [needle for needle in PLAINTEXT if needle in raw] == []
    assert [json.loads(body) for body in store.search("pid-ngozi", "Patient")] == [PATIENTS[0]]
    assert json.loads(store.search("pid-wei", "Observation")[0])["note"][0]["text"] == "hepatitis screening"


def test_search_keys_are_blind_indexes_and_still_find_patients(store: ResourceStore, backend: Backend) -> None:
    keys = [key for (key,) in backend.query("SELECT key FROM patient_index")]
    assert keys and all(len(key) == 64 and int(key, 16) >= 0 for key in keys)
    found = store.directory_search(DirectoryQuery(name="ngozi okonkwo adeyemi", birth_date="1961-07-14"), 10)
    assert [match["id"] for match in found] == ["pid-ngozi"]
    assert found[0]["name"] == "Ngozi Okonkwo-Adeyemi"
    assert [m["id"] for m in store.directory_search(DirectoryQuery(identifier="mrn00007777"), 10)] == ["pid-wei"]
    assert [m["id"] for m in store.directory_search(DirectoryQuery(name="ZHANGSUN"), 10)] == ["pid-wei"]
    assert store.directory_search(DirectoryQuery(name="zhangsu"), 10) == []  # exact keys only
    assert store.list_patients(10) == [
        {"id": "pid-ngozi", "name": "Ngozi Okonkwo-Adeyemi"},
        {"id": "pid-wei", "name": "Weiqiang Zhangsun"},
    ]


def test_a_wrong_kek_is_refused_at_open_with_one_clear_line(
    store: ResourceStore, kek: LocalKek, backend: Backend
) -> None:
    store.close()
    with pytest.raises(ConfigurationError) as refused:
        backend.store(LocalKek(os.urandom(32)))
    message = str(refused.value)
    assert "wrong key-encryption key" in message and kek.kek_id in message and "WARDFN_KEK" in message
    assert "\n" not in message
    reopened = backend.store(kek)
    assert len(reopened.search("pid-ngozi", "Observation")) == 1
    reopened.close()


def test_a_body_moved_to_another_row_is_refused_without_patient_data(store: ResourceStore, backend: Backend) -> None:
    ((stolen,),) = backend.query("SELECT body FROM resources WHERE id = 'obs-1'")
    backend.execute("UPDATE resources SET body = ? WHERE id = 'obs-2'", stolen)
    with pytest.raises(StoreUnavailable, match="integrity check") as refused:
        store.search("pid-wei", "Observation")
    assert "pid-wei" not in str(refused.value) and "obs-2" not in str(refused.value)


def test_erasure_destroys_the_key_and_the_store_answers_as_if_the_patient_never_was(
    store: ResourceStore, kek: LocalKek, backend: Backend
) -> None:
    ((wrapped,),) = backend.query("SELECT wrapped FROM data_keys WHERE owner = 'pid-ngozi'")
    sealed = backend.query("SELECT body FROM resources WHERE patient_id = 'pid-ngozi' ORDER BY id")

    assert store.erase_patient("pid-ngozi") is True

    for resource_type in ("Patient", "Observation"):
        assert store.search("pid-ngozi", resource_type) == []
    assert not store.patient_exists("pid-ngozi")
    assert store.count_patients() == 1
    assert [p["id"] for p in store.list_patients(10)] == ["pid-wei"]
    assert store.directory_search(DirectoryQuery(identifier="MRN00004242"), 10) == []
    assert len(store.search("pid-wei", "Observation")) == 1  # nobody else is touched
    still_sealed = backend.query("SELECT body FROM resources WHERE patient_id = 'pid-ngozi' ORDER BY id")
    ((keys,),) = backend.query("SELECT COUNT(*) FROM data_keys WHERE owner = 'pid-ngozi'")
    assert still_sealed == sealed and keys == 0  # the ciphertext stays; its key is gone
    # SQLite: overwritten, not left in a free page or the WAL. PostgreSQL: not in a dump.
    assert wrapped not in backend.dump()
    assert [needle for needle in PLAINTEXT if needle in backend.dump()] == []

    assert store.erase_patient("pid-ngozi") is False
    assert store.erase_patient("never-stored") is False
    with pytest.raises(InvalidRequest, match="erased"):
        store.add_resources([observation("obs-9", "pid-ngozi", "again")])
    store.close()
    reopened = backend.store(kek)
    assert reopened.search("pid-ngozi", "Observation") == [] and reopened.count_patients() == 1
    reopened.close()


def everything(store: ResourceStore) -> dict[tuple[str, str], list[str]]:
    return {(p, t): store.search(p, t) for p in ("pid-ngozi", "pid-wei") for t in ("Patient", "Observation")}


def test_rotation_keeps_every_record_readable_on_either_kek_then_retires_the_old_one(
    store: ResourceStore, kek: LocalKek, backend: Backend
) -> None:
    before = everything(store)
    new = LocalKek(os.urandom(32))

    assert store.rotate_kek(new, batch=2) == 4  # two patients, the blind-index key, the shared key
    assert store.rotate_kek(new) == 0  # idempotent
    assert set(store.kek_status()) == {kek.kek_id, new.kek_id}

    on_new = backend.store(new)  # a host restarted on the new key, while the old one serves
    assert everything(on_new) == before == everything(store)
    assert [m["id"] for m in on_new.directory_search(DirectoryQuery(name="weiqiang"), 10)] == ["pid-wei"]
    # Written meanwhile by a host still on the old key: wrapped under the old key alone.
    store.add_resources([patient("pid-late", "Latecomer", "Afterwards", "(212) 555-0199", "MRN00009999")])
    with pytest.raises(StoreUnavailable, match="not wrapped under this host's key-encryption key"):
        on_new.search("pid-late", "Patient")  # fails closed, never garbage

    assert on_new.retire_kek(kek) == 1  # the straggler is wrapped under the new key first
    assert on_new.kek_status() == {new.kek_id: 5}
    assert json.loads(on_new.search("pid-late", "Patient")[0])["name"][0]["family"] == "Afterwards"
    assert everything(on_new) == before
    with pytest.raises(StoreUnavailable, match="restart the host with the current WARDFN_KEK"):
        store.search("pid-wei", "Patient")  # a host left on the retired key serves nothing
    store.close()
    with pytest.raises(ConfigurationError, match="wrong key-encryption key"):
        backend.store(kek)
    on_new.close()


def test_rotation_refuses_the_same_key_and_retiring_the_key_in_use(store: ResourceStore, kek: LocalKek) -> None:
    with pytest.raises(InvalidRequest, match="current one"):
        store.rotate_kek(kek)
    with pytest.raises(InvalidRequest, match="runs on"):
        store.retire_kek(kek)
    with pytest.raises(InvalidRequest, match="not one"):
        store.retire_kek(LocalKek(os.urandom(32)))


def test_a_sqlite_file_made_before_encryption_is_encrypted_in_place(tmp_path: Path, kek: LocalKek) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE resources (resource_type TEXT NOT NULL, id TEXT NOT NULL, patient_id TEXT, "
            "body TEXT NOT NULL, PRIMARY KEY (resource_type, id))"
        )
        conn.execute("CREATE TABLE patient_index (patient_id TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL)")
        conn.executemany(
            "INSERT INTO resources VALUES (?, ?, ?, ?)",
            [
                (
                    r["resourceType"],
                    r["id"],
                    r.get("subject", {}).get("reference", "Patient/")[8:]
                    or (r["id"] if r["resourceType"] == "Patient" else None),
                    json.dumps(r),
                )
                for r in RESOURCES
            ],
        )
        conn.execute("INSERT INTO patient_index VALUES ('pid-wei', 'family', 'zhangsun')")
    conn.close()
    assert b"Zhangsun" in file_bytes(path)

    store = ResourceStore(path, kek)
    assert [needle for needle in PLAINTEXT if needle in file_bytes(path)] == []
    assert json.loads(store.search("pid-wei", "Patient")[0]) == PATIENTS[1]
    assert [m["id"] for m in store.directory_search(DirectoryQuery(name="zhangsun"), 10)] == ["pid-wei"]
    store.close()
