"""The two databases the store and the audit trail run on, behind one test interface.

Tests take the `backend` fixture (parametrised: sqlite, postgresql) and open stores and logs
through it, and reach behind the host's back (as someone with the database could) with
`execute` and `query`, written with `?` placeholders for both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from host.audit.trail import AuditLog
from host.store import migrations
from host.store.database import BUSY_TIMEOUT_S, Database, PostgresDatabase, SqliteDatabase
from host.store.encryption import KeyProvider
from host.store.resources import ResourceStore
from tests.postgres_server import PostgresServer
from tests.sql import execute


class Backend:
    name: str

    def database(self, lock_timeout_s: float = BUSY_TIMEOUT_S) -> Database:
        raise NotImplementedError

    def store(self, keys: KeyProvider) -> ResourceStore:
        return ResourceStore(self.database(), keys)

    def audit(self, busy_timeout_s: float = BUSY_TIMEOUT_S, max_batch: int = 256) -> AuditLog:
        return AuditLog(self.database(busy_timeout_s), busy_timeout_s=busy_timeout_s, max_batch=max_batch)

    def execute(self, sql: str, *params: Any) -> None:
        """Change the database behind the host's back, in one committed transaction."""
        raise NotImplementedError

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def dump(self) -> bytes:
        """What a stolen disk or backup holds."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The WARDFN_* variables that point a `wardfn` command at this database."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def database(self, lock_timeout_s: float = BUSY_TIMEOUT_S) -> Database:
        return SqliteDatabase(self.path, lock_timeout_s)

    def audit(self, busy_timeout_s: float = BUSY_TIMEOUT_S, max_batch: int = 256) -> AuditLog:
        return AuditLog(self.path, busy_timeout_s=busy_timeout_s, max_batch=max_batch)

    def execute(self, sql: str, *params: Any) -> None:
        execute(self.path, sql, *params)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def dump(self) -> bytes:
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    def env(self) -> dict[str, str]:
        return {"WARDFN_DATABASE": str(self.path)}


class PostgresBackend(Backend):
    """A database of its own on the session's cluster, migrated as `wardfn db migrate` would."""

    name = "postgresql"

    def __init__(self, server: PostgresServer, migrate: bool = True) -> None:
        self.server = server
        self.url = server.create_database()
        if migrate:
            database = self.database()
            try:
                migrations.migrate(database)
            finally:
                database.close()

    def database(self, lock_timeout_s: float = BUSY_TIMEOUT_S) -> Database:
        return PostgresDatabase(self.url, pool_size=4, lock_timeout_s=lock_timeout_s)

    def execute(self, sql: str, *params: Any) -> None:
        execute(self.url, sql, *params)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql.replace("%", "%%").replace("?", "%s"), params).fetchall()

    def dump(self) -> bytes:
        return self.server.dump(self.url)

    def env(self) -> dict[str, str]:
        return {"WARDFN_DATABASE_URL": self.url}

    def close(self) -> None:
        self.server.drop_database(self.url)


def open_backend(request: pytest.FixtureRequest, sqlite_path: Path) -> Iterator[Backend]:
    """The body of a fixture parametrised over the databases: the SQLite file at `sqlite_path`, or a
    fresh, migrated database on the session's PostgreSQL cluster, dropped afterwards."""
    if request.param == "sqlite":
        yield SqliteBackend(sqlite_path)
        return
    opened = PostgresBackend(request.getfixturevalue("postgres_server"))
    yield opened
    opened.close()
