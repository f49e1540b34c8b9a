"""The pseudonym and directory imports, against real components, a real store and real keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from host.catalogue.artifacts import ArtifactCache
from host.catalogue.build import cache_key
from host.catalogue.manifest import discover_functions
from host.catalogue.registry import limits_for
from host.data.synthetic import seed_store
from host.errors import FunctionReturnedError
from host.runtime.calls import FunctionRequest, SandboxLimits
from host.runtime.engine import EpochTicker, create_engine
from host.runtime.sandbox import Sandbox
from host.store.pseudonyms import Pseudonymizer
from host.store.resources import ResourceStore, open_store
from host.types import Scope
from tests.conftest import settings_for

pytestmark = pytest.mark.components


Imports = frozenset[str]
LINKAGE: Imports = frozenset({"pseudonym"})
SEARCH: Imports = frozenset({"directory"})


@dataclass
class Rig:
    sandbox: Sandbox
    store: ResourceStore
    pseudonyms: Pseudonymizer
    components: dict[str, Any]
    limits: dict[str, SandboxLimits]
    reads: dict[str, frozenset[str]]

    def call(
        self, name: str, patient_id: str | None, args: dict[str, Any], imports: frozenset[str] = frozenset()
    ) -> Any:
        scope = Scope(patient_id, self.reads[name], imports=imports)
        prepared = self.sandbox.prepare(self.components[name], self.limits[name])
        request = FunctionRequest(patient_id, "TREAT", args)
        return self.sandbox.call(prepared, request, scope, self.limits[name]).body


@pytest.fixture(scope="module")
def rig(built_functions: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("imports")
    settings = settings_for(workdir / "wardfn.db")
    store = open_store(settings)
    seed_store(store, 30, 5)
    pseudonyms = Pseudonymizer.from_key_dir(workdir / "keys")
    engine = create_engine()
    ticker = EpochTicker(engine, settings.epoch_tick_ms)
    ticker.start()
    sandbox = Sandbox(
        engine,
        store.search,
        settings.epoch_tick_ms,
        pseudonyms.pseudonym,
        store.directory_search,
        query_session=store.query_session,
    )
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    components, limits, reads = {}, {}, {}
    for source in discover_functions(settings.functions_dirs):
        artifact = cache.lookup(source.name, cache_key(source, settings.wit_dir))
        assert artifact is not None
        components[source.name] = sandbox.load(Path(artifact.cwasm_path))
        limits[source.name] = limits_for(source.manifest, settings)
        reads[source.name] = frozenset(source.manifest.reads)
    yield Rig(sandbox, store, pseudonyms, components, limits, reads)
    ticker.stop()
    store.close()


def _patient(rig: Rig, index: int = 0) -> dict[str, Any]:
    pid = rig.store.list_patients(100)[index]["id"]
    return dict(json.loads(rig.store.search(pid, "Patient")[0]))


def test_deidentify_carries_the_hosts_pseudonym_and_no_name(rig: Rig) -> None:
    patient = _patient(rig)
    body = rig.call("deidentify", patient["id"], {}, imports=LINKAGE)
    assert body["pseudonym"] == rig.pseudonyms.pseudonym(patient["id"])
    text = json.dumps(body)
    assert patient["name"][0]["family"] not in text and patient["id"] not in text
    again = rig.call("deidentify", patient["id"], {}, imports=LINKAGE)
    assert again["pseudonym"] == body["pseudonym"]


def test_a_pseudonym_the_decision_did_not_grant_is_denied(rig: Rig) -> None:
    # The manifest asks for it; without the grant the import answers `denied` and deidentify fails.
    patient = _patient(rig)
    with pytest.raises(FunctionReturnedError) as caught:
        rig.call("deidentify", patient["id"], {}, imports=frozenset({"log", "directory"}))
    assert caught.value.kind == "internal"


@pytest.mark.parametrize(
    "query",
    [
        lambda p: {"name": p["name"][0]["family"].upper()},
        lambda p: {"name": f"  {p['name'][0]['given'][0].lower()}   {p['name'][0]['family']} "},
        lambda p: {"birth_date": p["birthDate"]},
        lambda p: {"identifier": p["identifier"][0]["value"].lower()},
        lambda p: {"name": p["name"][0]["family"], "birth_date": p["birthDate"]},
    ],
)
def test_search_finds_by_normalised_exact_keys(rig: Rig, query: Any) -> None:
    patient = _patient(rig, 3)
    body = rig.call("patient_search", None, query(patient), imports=SEARCH)
    assert patient["id"] in [m["id"] for m in body["matches"]]
    assert 1 <= body["count"] <= 20
    for match in body["matches"]:
        assert set(match) == {"id", "name", "birth_date", "gender"}


def test_search_is_exact_not_fuzzy(rig: Rig) -> None:
    patient = _patient(rig, 3)
    body = rig.call(
        "patient_search", None, {"name": patient["name"][0]["family"][:-1]}, imports=frozenset({"directory"})
    )
    assert patient["id"] not in [m["id"] for m in body["matches"]]


def test_search_without_the_directory_capability_is_refused(rig: Rig) -> None:
    patient = _patient(rig, 3)
    with pytest.raises(FunctionReturnedError) as caught:
        rig.call(
            "patient_search", None, {"name": patient["name"][0]["family"]}, imports=frozenset({"log", "pseudonym"})
        )
    assert caught.value.kind == "invalid-input"


def test_pseudonym_for_another_patient_is_refused(rig: Rig) -> None:
    patient, other = _patient(rig, 0), _patient(rig, 1)
    scope = Scope(other["id"], rig.reads["deidentify"], imports=frozenset({"pseudonym"}))
    prepared = rig.sandbox.prepare(rig.components["deidentify"], rig.limits["deidentify"])
    with pytest.raises(FunctionReturnedError):
        # The request names one patient while the scope grants another: nothing can be read.
        rig.sandbox.call(prepared, FunctionRequest(patient["id"], "TREAT", {}), scope, rig.limits["deidentify"])


@pytest.mark.parametrize("query", [{"name": "-"}, {"name": " \u0301 "}, {"identifier": " "}])
def test_a_key_that_normalises_to_nothing_matches_no_one(rig: Rig, query: dict[str, str]) -> None:
    # Valid by the function's schema, so never a refusal (the OpenAPI fuzzer's positive data): no match.
    assert rig.call("patient_search", None, query, imports=SEARCH) == {"count": 0, "matches": []}
