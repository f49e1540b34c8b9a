"""Shared fixtures: one build of every function per session, in a cache kept between runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.catalogue.artifacts import ArtifactCache
from host.catalogue.build import build_function
from host.catalogue.manifest import discover_functions
from host.config import PROJECT_ROOT, Settings, load_settings
from host.runtime.engine import create_engine

# Keys and compiled artifacts persist across test runs (the cache key decides
# what is stale); databases are always fresh, per test.
TEST_HOME = PROJECT_ROOT / ".wardfn" / "test-home"
FUNCTION_DIRS = [PROJECT_ROOT / "functions", PROJECT_ROOT / "tests" / "functions"]


def checkpoint_file_for(database: Path) -> Path:
    """A test database's audit checkpoints: beside it, not left behind under the shared test home."""
    return database.with_name(database.name + ".checkpoints.jsonl")


def settings_for(database: Path, **overrides: object) -> Settings:
    overrides.setdefault("audit_checkpoint_file", checkpoint_file_for(database))
    return load_settings(home=TEST_HOME, database=database, functions_dirs=FUNCTION_DIRS, **overrides)


@pytest.fixture(scope="session")
def built_functions() -> list[str]:
    """Every function under functions/ and tests/functions/, built once (about 10 s each when stale)."""
    settings = load_settings(home=TEST_HOME, functions_dirs=FUNCTION_DIRS)
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    engine = create_engine()
    names = []
    for source in discover_functions(settings.functions_dirs):
        build_function(source, settings.wit_dir, cache, engine)
        names.append(source.name)
    return names


@pytest.fixture(scope="session")
def opa_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The real OPA serving this project's policy bundle, for the whole session."""
    from tests.opa_server import OpaServer

    server = OpaServer.with_policy(tmp_path_factory.mktemp("opa"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """A private PostgreSQL cluster on loopback for the whole session (see tests/postgres_server.py)."""
    from tests.postgres_server import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Each database the store and audit trail run on: a fresh SQLite file, or a fresh PostgreSQL database."""
    from tests.backends import open_backend

    yield from open_backend(request, tmp_path / "nested" / "wardfn.db")


@pytest.fixture
def postgres_backend(postgres_server):  # type: ignore[no-untyped-def]
    """A fresh, migrated PostgreSQL database, for the tests about PostgreSQL alone."""
    from tests.backends import PostgresBackend

    opened = PostgresBackend(postgres_server)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A private RabbitMQ node for the whole session, with a plain and a TLS listener on loopback."""
    from tests.rabbitmq_server import RabbitMQServer, TlsFiles

    root = tmp_path_factory.mktemp("rabbitmq")
    server = RabbitMQServer(root / "node", TlsFiles(root / "tls"))
    yield server
    server.stop()
