from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from host.store.consent import consented
from host.store.resources import open_store
from tests.e2e.server import DATABASES, ServerProcess, on_each_database


@dataclass(frozen=True)
class Patients:
    consenting: list[str]
    refusing_treatment: str


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, built_functions: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The real server, once on each database it runs on: the SQLite file, then PostgreSQL."""
    yield from on_each_database(request, lambda url: ServerProcess(tmp_path_factory.mktemp("server"), database_url=url))


@pytest.fixture(scope="module")
def patients(server: ServerProcess) -> Patients:
    store = open_store(server.settings)
    try:
        ids = [p["id"] for p in store.list_patients(1000)]
        refusing = [pid for pid in ids if not consented([json.loads(c) for c in store.search(pid, "Consent")], "TREAT")]
    finally:
        store.close()
    assert refusing, "the seed should give some patients a Consent that denies treatment"
    return Patients(consenting=[p for p in ids if p not in refusing], refusing_treatment=refusing[0])
