"""Choosing and reaching the database: the URL setting, its password never shown, an unreachable or
unmigrated PostgreSQL refused at start with one line saying what to do, and migrations."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError

from host.assembly import open_host
from host.audit.trail import AuditLog
from host.config import load_settings
from host.errors import AuditUnavailable, ConfigurationError, StoreUnavailable
from host.store import migrations
from host.store.database import AUDIT_LOCK, PostgresDatabase, SqliteDatabase, redact
from host.store.migrations import SchemaOutOfDate
from host.store.resources import ResourceStore
from host.types import AuditEvent
from tests.backends import PostgresBackend
from tests.conftest import FUNCTION_DIRS, TEST_HOME
from tests.e2e.server import WARDFN, free_port
from tests.postgres_server import PostgresServer

PASSWORD = "s3cret-Pa55word"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://wardfn:{PASSWORD}@db:5432/wardfn", "postgresql://wardfn:***@db:5432/wardfn"),
        ("postgresql://wardfn@db/wardfn?sslmode=verify-full", "postgresql://wardfn@db/wardfn?sslmode=verify-full"),
        (
            f"postgresql://db/wardfn?user=wardfn&password={PASSWORD}&sslmode=require",
            "postgresql://db/wardfn?user=wardfn&password=***&sslmode=require",
        ),
        ("postgresql://wardfn:p%40ss@db/wardfn", "postgresql://wardfn:***@db/wardfn"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_the_url_selects_postgresql_and_unset_keeps_the_sqlite_file(tmp_path: Path) -> None:
    assert load_settings(home=tmp_path).postgresql is False
    assert load_settings(home=tmp_path, database_url="").postgresql is False
    assert load_settings(home=tmp_path, database_url="postgresql://u@h/d").postgresql is True


@pytest.mark.parametrize("url", ["mysql://u:pw@h/d", "sqlite:///x.db", "postgresql://"])
def test_a_url_that_is_not_postgresql_is_refused_without_echoing_it(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValidationError, match="WARDFN_DATABASE_URL must be a PostgreSQL URL") as refused:
        load_settings(home=tmp_path, database_url=url)
    # What `wardfn` prints of a settings error (pydantic's own repr carries every input).
    assert "pw@" not in _messages(refused.value)


PRODUCTION = {
    "env": "production",
    "jwt_public_key_file": Path("/dev/null"),
    "jwt_issuer": "https://idp.example",
    "kek": "A" * 43 + "=",
    "audit_checkpoint_key_file": Path("/dev/null"),
}


@pytest.mark.parametrize(
    ("query", "accepted"),
    [("", False), ("?sslmode=require", False), ("?sslmode=verify-ca", False), ("?sslmode=verify-full", True)],
)
def test_production_needs_sslmode_verify_full(tmp_path: Path, query: str, accepted: bool) -> None:
    url = f"postgresql://wardfn:{PASSWORD}@db.example:5432/wardfn{query}"
    if accepted:
        assert load_settings(home=tmp_path, database_url=url, **PRODUCTION).postgresql
        return
    with pytest.raises(ValidationError, match="sslmode=verify-full") as refused:
        load_settings(home=tmp_path, database_url=url, **PRODUCTION)
    assert PASSWORD not in _messages(refused.value)
    assert load_settings(home=tmp_path, database_url=url).postgresql  # development takes what libpq takes


def test_the_cli_refuses_production_without_verify_full_in_one_line(tmp_path: Path) -> None:
    key = tmp_path / "jwt.pem"
    key.write_text("unused")
    done = wardfn(
        tmp_path,
        "db",
        "status",
        WARDFN_ENV="production",
        WARDFN_JWT_PUBLIC_KEY_FILE=str(key),
        WARDFN_JWT_ISSUER="https://idp.example",
        WARDFN_KEK="A" * 43 + "=",
        WARDFN_AUDIT_CHECKPOINT_KEY_FILE=str(key),
        WARDFN_DATABASE_URL=f"postgresql://wardfn:{PASSWORD}@db.example/wardfn?sslmode=require",
    )
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert "sslmode=verify-full" in line and PASSWORD not in done.stderr


def _messages(error: ValidationError) -> str:
    return "; ".join(str(e["msg"]) for e in error.errors())


def wardfn(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": "/usr/bin:/bin",
        "WARDFN_HOME": str(tmp_path / "home"),
        "WARDFN_FUNCTIONS_DIRS": f'["{FUNCTION_DIRS[0]}"]',
        **env,
    }
    return subprocess.run([str(WARDFN), *args], env=environment, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [("serve",), ("db", "migrate"), ("db", "status"), ("audit", "verify")])
def test_an_unreachable_database_is_one_line_naming_what_to_check(tmp_path: Path, command: tuple[str, ...]) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://wardfn:{PASSWORD}@127.0.0.1:{port}/wardfn"
    done = wardfn(tmp_path, *command, WARDFN_DATABASE_URL=url)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"postgresql://wardfn:***@127.0.0.1:{port}/wardfn" in lines[0]
    assert "check that PostgreSQL is running" in lines[0]
    assert PASSWORD not in done.stderr + done.stdout


def test_unreachable_in_process_is_a_configuration_error_without_the_password() -> None:
    with pytest.raises(ConfigurationError) as refused:
        PostgresDatabase(f"postgresql://wardfn:{PASSWORD}@127.0.0.1:{free_port()}/wardfn")
    assert PASSWORD not in str(refused.value) and "\n" not in str(refused.value)


@pytest.fixture
def unmigrated(postgres_server: PostgresServer):  # type: ignore[no-untyped-def]
    opened = PostgresBackend(postgres_server, migrate=False)
    yield opened
    opened.close()


def test_an_unmigrated_database_is_refused_until_wardfn_db_migrate(tmp_path: Path, unmigrated: PostgresBackend) -> None:
    served = wardfn(tmp_path, "serve", WARDFN_DATABASE_URL=unmigrated.url)
    assert served.returncode != 0
    (line,) = served.stderr.strip().splitlines()
    assert "schema version 0, this host needs" in line and "run `wardfn db migrate`" in line

    settings = load_settings(home=TEST_HOME, database_url=unmigrated.url, functions_dirs=FUNCTION_DIRS)
    with pytest.raises(SchemaOutOfDate, match="wardfn db migrate"):
        open_host(settings)
    assert unmigrated.query("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]  # untouched

    status = wardfn(tmp_path, "db", "status", WARDFN_DATABASE_URL=unmigrated.url)
    assert status.returncode == 1 and "pending: 1 initial" in status.stdout
    migrated = wardfn(tmp_path, "db", "migrate", WARDFN_DATABASE_URL=unmigrated.url)
    assert migrated.returncode == 0, migrated.stderr
    assert f"applied: {migrations.LATEST}" in migrated.stdout
    again = wardfn(tmp_path, "db", "migrate", WARDFN_DATABASE_URL=unmigrated.url)
    assert again.returncode == 0 and "applied" not in again.stdout
    assert wardfn(tmp_path, "db", "status", WARDFN_DATABASE_URL=unmigrated.url).returncode == 0
    versions = unmigrated.query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert versions == [(m.version, m.name) for m in migrations.MIGRATIONS]


def test_a_database_newer_than_the_host_is_refused(postgres_backend: PostgresBackend) -> None:
    postgres_backend.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 'now')", migrations.LATEST + 1
    )
    with pytest.raises(SchemaOutOfDate, match="newer than this host"):
        postgres_backend.store(_kek())


def test_migrating_from_several_processes_at_once_applies_each_migration_once(unmigrated: PostgresBackend) -> None:
    processes = [
        subprocess.Popen(
            [str(WARDFN), "db", "migrate"],
            env={"PATH": "/usr/bin:/bin", "WARDFN_DATABASE_URL": unmigrated.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    assert [v for (v,) in unmigrated.query("SELECT version FROM schema_migrations ORDER BY version")] == [
        m.version for m in migrations.MIGRATIONS
    ]


def test_a_sqlite_file_from_before_migrations_is_upgraded_at_open(tmp_path: Path) -> None:
    """The file the code before migrations made: its tables, no schema_migrations, no review index."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE resources (resource_type TEXT NOT NULL, id TEXT NOT NULL, patient_id TEXT, "
        "body BLOB NOT NULL, PRIMARY KEY (resource_type, id))"
    )
    conn.execute("CREATE INDEX resources_by_patient ON resources (patient_id, resource_type)")
    conn.execute(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, request_id TEXT NOT NULL, subject_id TEXT, "
        "role TEXT, function TEXT, patient_id TEXT, purpose TEXT, decision_id TEXT, allowed INTEGER, "
        "reasons TEXT NOT NULL, outcome TEXT NOT NULL, latency_ms REAL NOT NULL, prev_hash TEXT NOT NULL, "
        "hash TEXT NOT NULL)"
    )
    conn.close()
    ResourceStore(path, _kek()).close()
    database = SqliteDatabase(path)
    try:
        assert migrations.status(database) == (migrations.LATEST, [])
    finally:
        database.close()
    conn = sqlite3.connect(path)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    columns = [row[1] for row in conn.execute("PRAGMA table_info(audit)")]
    conn.close()
    assert "resources_by_patient" not in indexes and {"resources_by_patient_type_id", "audit_flagged"} <= indexes
    assert columns[-6:] == ["break_glass_reason", "function_version", "query", "chain", "n", "org_unit"]


def test_driver_errors_that_quote_values_are_described_without_them(postgres_backend: PostgresBackend) -> None:
    store = postgres_backend.store(_kek())
    store.close()
    database = postgres_backend.database()
    try:
        with pytest.raises(psycopg.Error) as caught:
            postgres_backend.execute("INSERT INTO erasures (patient_id, erased_at) VALUES ('pid-secret', 'x')")
            postgres_backend.execute("INSERT INTO erasures (patient_id, erased_at) VALUES ('pid-secret', 'x')")
        assert "pid-secret" in str(caught.value)  # psycopg's own message quotes the key...
        described = database.describe(caught.value)
        assert "pid-secret" not in described and "23505" in described  # ...ours does not
    finally:
        database.close()


def test_a_refused_value_is_not_blamed_on_an_unreachable_server(postgres_backend: PostgresBackend) -> None:
    postgres_backend.execute("INSERT INTO erasures (patient_id, erased_at) VALUES ('p1', 'x')")
    database = postgres_backend.database()
    try:
        with pytest.raises(psycopg.Error) as caught:
            with database.connection() as conn:
                conn.execute("INSERT INTO erasures (patient_id, erased_at) VALUES (?, ?)", ("p1", "x"))
        advice = database.advice(caught.value)
        assert "integrity error" in advice and "wardfn db status" in advice
        assert "PostgreSQL is running" not in advice
        assert "PostgreSQL is running" in database.advice(psycopg.OperationalError("connection refused"))
    finally:
        database.close()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own, to stop and start without disturbing the session's."""
    server = PostgresServer()
    yield server
    server.stop()


def test_after_postgresql_restarts_the_first_calls_get_live_connections(own_postgres: PostgresServer) -> None:
    backend = PostgresBackend(own_postgres)
    database = backend.database()  # a pool of 4
    store = ResourceStore(backend.database(), _kek())
    try:
        # Several connections in the pool, all idle when the server goes away.
        with database.connection(), database.connection(), database.connection():
            pass
        assert store.healthy()
        own_postgres.halt("fast")
        own_postgres.start()
        # Each pooled connection is dead now; not one call may fail on one.
        for _ in range(6):
            with database.connection() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        assert store.healthy() and store.count_patients() == 0
    finally:
        store.close()
        database.close()


def test_while_postgresql_is_down_calls_fail_with_a_database_error_and_then_recover(
    own_postgres: PostgresServer,
) -> None:
    backend = PostgresBackend(own_postgres)
    store = ResourceStore(backend.database(), _kek())
    try:
        own_postgres.halt("immediate")
        assert not store.healthy()
        with pytest.raises(StoreUnavailable) as down:
            store.count_patients()
        assert "check that PostgreSQL is running" in str(down.value)
        own_postgres.start()
        deadline = time.monotonic() + 30
        while not store.healthy() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.count_patients() == 0
    finally:
        store.close()


def test_a_write_cut_off_by_a_crash_leaves_nothing_and_the_pool_recovers(own_postgres: PostgresServer) -> None:
    backend = PostgresBackend(own_postgres)
    database = backend.database()
    try:
        with pytest.raises(psycopg.Error):
            with database.connection() as conn, database.transaction(conn, AUDIT_LOCK):
                conn.execute("INSERT INTO erasures (patient_id, erased_at) VALUES (?, ?)", ("p1", "x"))
                own_postgres.halt("immediate")
        own_postgres.start()
        with database.connection() as conn:
            assert conn.execute("SELECT COUNT(*) FROM erasures").fetchone() == (0,)
    finally:
        database.close()


def test_a_sqlite_file_removed_or_replaced_under_the_host_is_refused_until_put_back(tmp_path: Path) -> None:
    path = tmp_path / "wardfn.db"
    store = ResourceStore(path, _kek())
    audit = AuditLog(path)
    try:
        assert store.healthy() and audit.healthy()
        path.rename(tmp_path / "moved.db")
        assert not store.healthy() and not audit.healthy()
        with pytest.raises(StoreUnavailable, match="removed while the host had it open.*put the file back"):
            store.count_patients()
        with pytest.raises(AuditUnavailable, match="removed while the host had it open.*put the file back"):
            audit.append(_event())
        assert not path.exists()  # no new, empty file made in its place
        (tmp_path / "moved.db").rename(path)
        assert store.healthy() and audit.healthy() and store.count_patients() == 0
        audit.append(_event())

        shutil.copy(path, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", path)
        with pytest.raises(StoreUnavailable, match="replaced while the host had it open"):
            store.count_patients()
        with pytest.raises(AuditUnavailable):
            audit.append(_event())
    finally:
        store.close()
        audit.close()
    # Opened afresh, the file now there serves, with the one record written before it was copied.
    reopened = AuditLog(path)
    try:
        assert reopened.verify().ok and len(reopened.records()) == 1
    finally:
        reopened.close()


def _event() -> AuditEvent:
    return AuditEvent(
        request_id=uuid.uuid4().hex, subject_id="dr-grey", role="authorized_medical_staff", function="f",
        patient_id=None, purpose="TREAT", decision_id=None, allowed=None, reasons=(), outcome="ok", latency_ms=1.0,
    )  # fmt: skip


def _kek():  # type: ignore[no-untyped-def]
    from host.store.encryption import LocalKek

    return LocalKek(os.urandom(32))


def test_missing_postgresql_binaries_fail_saying_how_to_install_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.postgres_server import postgres_bin

    monkeypatch.setenv("WARDFN_PG_BIN", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="make postgres"):
        postgres_bin()


def test_pooled_connections_detect_a_vanished_server_within_seconds(postgres_backend: PostgresBackend) -> None:
    """TCP keepalives and a user timeout by default (a half-open connection otherwise waits ~15 min);
    a URL that sets one keeps its own value."""
    for url, idle in ((postgres_backend.url, "10"), (f"{postgres_backend.url}?keepalives_idle=42", "42")):
        database = PostgresDatabase(url, pool_size=1)
        try:
            with database.connection() as conn:
                parameters = conn.raw.info.get_parameters()
        finally:
            database.close()
        assert parameters["keepalives_idle"] == idle
        assert parameters["keepalives"] == "1" and parameters["tcp_user_timeout"] == "15000"
