"""Shared fixtures: the functions built before the session (tests/prebuild.py), servers, databases."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from host.catalogue.artifacts import ArtifactCache
from host.catalogue.build import cache_key
from host.catalogue.manifest import discover_functions
from host.cli.progress import build_functions, default_jobs
from host.config import Settings, load_settings
from tests.prebuild import FUNCTION_DIRS, PREBUILT_ENV, TEST_HOME, build_settings

__all__ = ["FUNCTION_DIRS", "TEST_HOME", "checkpoint_file_for", "settings_for"]

# The suite runs on busy 2-core machines (CI; a laptop building beside it) and tests behaviour, not
# speed: every host it makes, in process or as a server, gives a call at least 2 s and waits 5 s past a
# deadline before leaving a call behind, so that a slow machine's 200 ms summary is not a 504. Tests of
# the deadlines themselves set their own limits.
os.environ.setdefault("WARDFN_MIN_DEADLINE_MS", "2000")
os.environ.setdefault("WARDFN_DEADLINE_MARGIN_MS", "5000")


def checkpoint_file_for(database: Path) -> Path:
    """A test database's audit checkpoints: beside it, not left behind under the shared test home."""
    return database.with_name(database.name + ".checkpoints.jsonl")


def settings_for(database: Path, **overrides: object) -> Settings:
    overrides.setdefault("audit_checkpoint_file", checkpoint_file_for(database))
    return load_settings(home=TEST_HOME, database=database, functions_dirs=FUNCTION_DIRS, **overrides)


@pytest.fixture(scope="session")
def built_functions() -> list[str]:
    """Every function under functions/ and tests/functions/, from the cache `make functions` fills.

    Run by hand without that step, what is missing is built here, under the first test's timeout.
    """
    settings = build_settings()
    sources = discover_functions(settings.functions_dirs)
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    found = cache.lookup_all([(s.name, cache_key(s, settings.wit_dir)) for s in sources])
    missing = [s.name for s, artifact in zip(sources, found, strict=True) if artifact is None]
    if missing and os.environ.get(PREBUILT_ENV):
        pytest.fail(
            f"{', '.join(missing)}: not in the tests' cache {settings.artifact_dir} although `make functions` "
            "built it before this session (did a function's source change meanwhile?); run `make test` again",
            pytrace=False,
        )
    if missing:
        build_functions(settings, missing, force=False, console=Console(file=io.StringIO()), jobs=default_jobs())
    return [s.name for s in sources]


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
