"""Encryption at rest end to end, with the real CLI and a real server: no plaintext PHI in the
database's bytes, a wrong key-encryption key refused at start, erasure by crypto-shredding with the
audit chain still verifying, and a KEK rotation while the service answers; on each database: the
SQLite file's bytes, and PostgreSQL's real pg_dump (bytea decoded), as a stolen backup holds them."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host.config import load_settings
from host.data.synthetic import generate
from host.store.consent import consented
from host.store.resources import ResourceStore, open_store
from host.types import normalise
from tests.backends import Backend, open_backend
from tests.conftest import FUNCTION_DIRS, TEST_HOME, checkpoint_file_for
from tests.e2e.server import DATABASES, WARDFN, ServerProcess
from tests.host.data.test_fhir_import import synthea_dir

pytestmark = pytest.mark.components

SEEDED = 30
SEED = 20261125


def new_kek() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def wardfn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WARDFN), *args], env=env, capture_output=True, text=True, timeout=300)


def needles(patient: dict[str, Any]) -> set[bytes]:
    """Byte strings that would be in the file if this Patient's identifying fields were stored in clear.

    Long enough (at least 5 bytes) that random ciphertext cannot contain one by chance.
    """
    found: set[str] = set()
    for name in patient.get("name") or []:
        # As the store would have serialised it, and each part on its own.
        found.add(json.dumps(name, separators=(",", ":"), ensure_ascii=False))
        parts = [*(name.get("given") or []), name.get("family") or ""]
        found.update(part for part in parts if len(part) >= 5)
        found.add(normalise(" ".join(parts)))  # what the blind index hashes
    found.update(i["value"] for i in patient.get("identifier") or [] if i.get("value") != patient["id"])
    found.update(t["value"] for t in patient.get("telecom") or [])
    found.update(line for a in patient.get("address") or [] for line in a.get("line") or [])
    found.add(patient["birthDate"])
    return {text.encode() for text in found if len(text.encode()) >= 5}


def seeded_patients() -> list[dict[str, Any]]:
    return [r for r in generate(SEEDED, SEED) if r["resourceType"] == "Patient"]


def synthea_patients() -> list[dict[str, Any]]:
    return [
        e["resource"]
        for path in sorted(synthea_dir().glob("*.json"))
        for e in json.loads(path.read_bytes())["entry"]
        if e["resource"]["resourceType"] == "Patient"
    ]


def leaks(backend: Backend, patients: list[dict[str, Any]]) -> list[bytes]:
    raw = backend.dump()
    assert all(p["id"].encode() in raw for p in patients), "ids are stored in clear: the dump must show them"
    return sorted(needle for p in patients for needle in needles(p) if needle in raw)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encrypted")


@pytest.fixture(scope="module", params=DATABASES)
def backend(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Backend]:
    """The database this module's CLI and servers share: the SQLite file, or a PostgreSQL database."""
    yield from open_backend(request, workdir / "sqlite" / "wardfn.db")


@pytest.fixture(scope="module")
def env(workdir: Path, backend: Backend) -> dict[str, str]:
    return {
        **os.environ,
        "WARDFN_HOME": str(TEST_HOME),
        # Each database its own path: on PostgreSQL a command that ignored the URL would make a
        # fresh file here (see the last test), not quietly use the SQLite run's.
        "WARDFN_DATABASE": str(workdir / backend.name / "wardfn.db"),
        # One trail per database, so one checkpoint file each.
        "WARDFN_AUDIT_CHECKPOINT_FILE": str(checkpoint_file_for(workdir / f"{backend.name}.trail")),
        "WARDFN_FUNCTIONS_DIRS": json.dumps([str(d) for d in FUNCTION_DIRS]),
        "WARDFN_SEED_PATIENTS": "0",
        "WARDFN_KEK": new_kek(),
        **backend.env(),
    }


@pytest.fixture(scope="module")
def database(env: dict[str, str], backend: Backend) -> Backend:
    """Seeded, then the Synthea bundles imported, by the CLI; the dump is checked after each step."""
    seeded = wardfn(env, "data", "seed", "--patients", str(SEEDED), "--seed", str(SEED))
    assert seeded.returncode == 0, seeded.stderr
    assert leaks(backend, seeded_patients()) == []
    imported = wardfn(env, "data", "import", str(synthea_dir()))
    assert imported.returncode == 0, imported.stderr
    return backend


def store_for(env: dict[str, str], kek: str | None = None) -> ResourceStore:
    settings = load_settings(
        home=TEST_HOME,
        database=Path(env["WARDFN_DATABASE"]),
        database_url=env.get("WARDFN_DATABASE_URL"),
        kek=kek or env["WARDFN_KEK"],
    )
    return open_store(settings)


@pytest.fixture(scope="module")
def server(
    built_functions: list[str], database: Backend, env: dict[str, str], workdir: Path
) -> Iterator[ServerProcess]:
    first = workdir / f"first-{database.name}"
    first.mkdir()
    url = env.get("WARDFN_DATABASE_URL")
    process = ServerProcess(first, patients=0, database_url=url, **_server_env(env))
    yield process
    process.stop()


def _server_env(env: dict[str, str], **changes: str) -> dict[str, str]:
    return {k: v for k, v in {**env, **changes}.items() if k.startswith("WARDFN_") and k != "WARDFN_SEED_PATIENTS"}


def summaries(server: ServerProcess, patient_ids: list[str]) -> dict[str, Any]:
    answers = {}
    for pid in patient_ids:
        response = httpx.get(f"{server.url}/v1/patients/{pid}/summary", headers=server.headers(), timeout=30)
        assert response.status_code == 200, response.text
        answers[pid] = response.json()["result"]
    return answers


def treatable(env: dict[str, str]) -> list[str]:
    store = store_for(env)
    try:
        ids = [p["id"] for p in store.list_patients(1000)]
        return [p for p in ids if consented([json.loads(c) for c in store.search(p, "Consent")], "TREAT")]
    finally:
        store.close()


def test_the_database_bytes_hold_no_plaintext_phi_after_seeding_and_importing(database: Backend) -> None:
    patients = [*seeded_patients(), *synthea_patients()]
    assert len(patients) == SEEDED + 11
    assert sum(len(needles(p)) for p in patients) > 300
    assert leaks(database, patients) == []


# Where the Synthea bundles date care: the elements the search index reads, and a few more.
CLINICAL_DATES = (
    "effectiveDateTime",
    "onsetDateTime",
    "recordedDate",
    "authoredOn",
    "issued",
    "performedDateTime",
    "occurrenceDateTime",
    "abatementDateTime",
)


def clinical_dates() -> set[str]:
    """Every clinical date and time the seeded patients and the Synthea bundles hold, as written there."""
    found: set[str] = set()
    bundles = [json.loads(path.read_bytes())["entry"] for path in sorted(synthea_dir().glob("*.json"))]
    for resource in [*generate(SEEDED, SEED), *(e["resource"] for entries in bundles for e in entries)]:
        found.update(resource[k] for k in CLINICAL_DATES if isinstance(resource.get(k), str))
        for period in (resource.get("period"), resource.get("effectivePeriod"), resource.get("performedPeriod")):
            if isinstance(period, dict):
                found.update(v for k, v in period.items() if k in ("start", "end") and isinstance(v, str))
    return found


def table_bytes(backend: Backend, sql: str) -> bytes:
    """The values of a query's rows, as bytes: what a table holds, whatever pages the file keeps besides."""
    return b"\0".join(
        str(value).encode() if isinstance(value, (str, int)) else bytes(value)
        for row in backend.query(sql)
        for value in row
        if value is not None
    )


def test_no_clinical_date_is_in_clear_in_the_resource_or_index_tables(database: Backend) -> None:
    dates = clinical_dates()
    assert len(dates) > 1000
    # Timestamps as the bundles write them: nowhere in the database's bytes.
    raw = database.dump()
    assert sorted(d for d in dates if len(d) > 10 and d.encode() in raw) == []
    # Days alone (YYYY-MM-DD), in the tables that hold the records and their search index (the
    # audit trail and the key tables carry today's dates, access times, not clinical ones).
    indexes = database.query("SELECT COUNT(*) FROM search_index")[0][0]
    assert indexes > 11 * 5  # every imported patient has several indexed types
    tables = table_bytes(database, "SELECT resource_type, id, patient_id, body FROM resources")
    tables += table_bytes(database, "SELECT patient_id, resource_type, version, sealed FROM search_index")
    days = {d[:10] for d in dates}
    assert sorted(day for day in days if day.encode() in tables) == []


def test_a_wrong_kek_refuses_to_start_with_one_clear_line(database: Backend, env: dict[str, str]) -> None:
    done = wardfn({**env, "WARDFN_KEK": new_kek()}, "serve", "--port", "9")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "wrong key-encryption key" in line]
    assert len(errors) == 1 and "WARDFN_KEK" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_the_server_answers_through_decryption(server: ServerProcess, env: dict[str, str]) -> None:
    patient_id = treatable(env)[0]
    store = store_for(env)
    try:
        patient = json.loads(store.search(patient_id, "Patient")[0])
    finally:
        store.close()
    summary = summaries(server, [patient_id])[patient_id]
    assert summary["demographics"]["name"]["family"] == patient["name"][0]["family"]
    assert summary["demographics"]["birth_date"] == patient["birthDate"]


def test_erasure_leaves_the_fields_unreadable_and_the_audit_chain_green(
    server: ServerProcess, env: dict[str, str], database: Backend
) -> None:
    patient_id = treatable(env)[-1]
    summaries(server, [patient_id])  # an audited read before the erasure

    done = wardfn(env, "data", "erase", patient_id, "--yes")
    assert done.returncode == 0, done.stderr

    response = httpx.get(f"{server.url}/v1/patients/{patient_id}/summary", headers=server.headers())
    assert response.status_code == 404
    store = store_for(env)
    try:
        assert store.search(patient_id, "Patient") == [] and store.search(patient_id, "Observation") == []
        assert patient_id not in [p["id"] for p in store.list_patients(1000)]
    finally:
        store.close()
    [(sealed,)] = database.query("SELECT COUNT(*) FROM resources WHERE patient_id = ?", patient_id)
    [(keys,)] = database.query("SELECT COUNT(*) FROM data_keys WHERE owner = ?", patient_id)
    outcomes = [o for (o,) in database.query("SELECT outcome FROM audit WHERE patient_id = ? ORDER BY seq", patient_id)]
    assert sealed > 0 and keys == 0  # the ciphertext is still there, its key is not
    # The erasure is on the trail, its request durable before any key was destroyed.
    assert outcomes[-4:] == ["ok", "erase_requested", "erased", "patient_not_found"]
    verified = wardfn(env, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "audit chains intact" in verified.stdout
    again = wardfn(env, "data", "erase", patient_id, "--yes")
    assert again.returncode != 0 and "already erased" in again.stderr


def test_rotation_with_the_service_running_keeps_every_record_readable(
    server: ServerProcess, env: dict[str, str], workdir: Path, backend: Backend
) -> None:
    patient_ids = treatable(env)[:8]
    before = summaries(server, patient_ids)
    new = new_kek()
    failures: list[str] = []
    stop = threading.Event()

    def keep_reading() -> None:
        while not stop.is_set():
            try:
                if summaries(server, patient_ids) != before:
                    failures.append("a different answer")
            except AssertionError as exc:
                failures.append(str(exc)[:200])

    reader = threading.Thread(target=keep_reading)
    reader.start()
    try:
        rotated = wardfn({**env, "WARDFN_NEW_KEK": new}, "keys", "rotate")
    finally:
        stop.set()
        reader.join()
    assert rotated.returncode == 0, rotated.stderr
    assert failures == []
    status = wardfn(env, "keys", "status")
    assert status.returncode == 0 and len(status.stdout.splitlines()) == 2

    # A host restarted on the new key serves the same answers while the old one still runs.
    elsewhere = workdir / f"second-{backend.name}"
    elsewhere.mkdir()
    url = env.get("WARDFN_DATABASE_URL")
    second = ServerProcess(elsewhere, patients=0, database_url=url, **_server_env(env, WARDFN_KEK=new))
    try:
        assert summaries(second, patient_ids) == before == summaries(server, patient_ids)
        server.stop()
        retired = wardfn({**env, "WARDFN_KEK": new, "WARDFN_OLD_KEK": env["WARDFN_KEK"]}, "keys", "retire")
        assert retired.returncode == 0, retired.stderr
        assert summaries(second, patient_ids) == before
        store = store_for(env, kek=new)
        try:
            assert all(store.search(pid, "Observation") for pid in patient_ids)
            assert len(store.kek_status()) == 1
        finally:
            store.close()
    finally:
        second.stop()
    refused = wardfn(env, "serve", "--port", "9")  # the retired key
    assert refused.returncode != 0 and "wrong key-encryption key" in refused.stderr


def test_production_without_a_kek_refuses_to_start(env: dict[str, str], workdir: Path) -> None:
    public = workdir / "idp.pem"
    public.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    # On PostgreSQL with the certificate check production requires (without it the URL would be
    # refused first, for another reason). The test cluster speaks no TLS: the refusal must come
    # before any connection is tried, or the error would be about TLS instead.
    url = env.get("WARDFN_DATABASE_URL")
    verified = {"WARDFN_DATABASE_URL": f"{url}{'&' if '?' in url else '?'}sslmode=verify-full"} if url else {}
    production = {
        **{k: v for k, v in env.items() if k not in ("WARDFN_KEK", "WARDFN_DATABASE_URL")},
        **verified,
        "WARDFN_ENV": "production",
        "WARDFN_JWT_PUBLIC_KEY_FILE": str(public),
        "WARDFN_JWT_ISSUER": "https://idp.hospital.example",
    }
    done = wardfn(production, "serve", "--port", "9")
    assert done.returncode != 0
    assert "WARDFN_KEK or WARDFN_KEK_FILE" in done.stderr and "Traceback" not in done.stderr


def test_every_command_used_the_database_it_was_given(env: dict[str, str], backend: Backend) -> None:
    """Last in the module: on PostgreSQL no CLI command or server made a SQLite file beside it."""
    assert Path(env["WARDFN_DATABASE"]).exists() == (backend.name == "sqlite")
