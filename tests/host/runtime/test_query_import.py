"""`records.query` against a real component (the test-only `querier`), a real store and real keys:
the same grant as `records.search` (patient, types, obligations), FHIR parameters evaluated by the
host, and arguments refused by their size before they are copied."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from host.catalogue.artifacts import ArtifactCache
from host.catalogue.build import cache_key
from host.catalogue.manifest import discover_functions
from host.catalogue.registry import limits_for
from host.cli.progress import build_functions
from host.data.synthetic import seed_store
from host.runtime.calls import FunctionRequest, SandboxLimits
from host.runtime.engine import EpochTicker, create_engine
from host.runtime.sandbox import Sandbox
from host.store.resources import ResourceStore, open_store
from host.types import Scope
from tests.conftest import settings_for
from tests.prebuild import build_settings

pytestmark = pytest.mark.components

HR = "http://loinc.org|8867-4"
READS = frozenset({"Patient", "Observation", "Condition"})


@dataclass
class Rig:
    sandbox: Sandbox
    store: ResourceStore
    component: Any
    limits: SandboxLimits

    def query(
        self, patient_id: str, resource_type: str, params: list[Any], scope: Scope | None = None, **args: Any
    ) -> dict[str, Any]:
        granted = scope or Scope(patient_id, READS)
        prepared = self.sandbox.prepare(self.component, self.limits)
        request = FunctionRequest(patient_id, "TREAT", {"type": resource_type, "params": params, **args})
        body: dict[str, Any] = self.sandbox.call(prepared, request, granted, self.limits).body
        return body


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # Only the test-only function this module needs, built if the tests' cache lacks it.
    build_functions(build_settings(), ["querier"], force=False, console=Console(stderr=True), jobs=1)
    workdir = tmp_path_factory.mktemp("query")
    settings = settings_for(workdir / "wardfn.db")
    store = open_store(settings)
    seed_store(store, 4, 11)
    engine = create_engine()
    ticker = EpochTicker(engine, settings.epoch_tick_ms)
    ticker.start()
    sandbox = Sandbox(engine, store.search, settings.epoch_tick_ms, query=store.query)
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    [source] = [s for s in discover_functions(settings.functions_dirs) if s.name == "querier"]
    artifact = cache.lookup(source.name, cache_key(source, settings.wit_dir))
    assert artifact is not None
    yield Rig(sandbox, store, sandbox.load(Path(artifact.cwasm_path)), limits_for(source.manifest, settings))
    ticker.stop()
    store.close()


def _patients(rig: Rig) -> list[str]:
    return [p["id"] for p in rig.store.list_patients(10)]


def _latest(rig: Rig, patient_id: str) -> dict[str, Any]:
    readings = [json.loads(b) for b in rig.store.search(patient_id, "Observation")]
    heart = [r for r in readings if r["code"]["coding"][0]["code"] == "8867-4"]
    return max(heart, key=lambda r: (r["effectiveDateTime"], r["id"]))


def test_the_latest_reading_is_what_the_whole_history_ends_with(rig: Rig) -> None:
    for patient_id in _patients(rig):
        answer = rig.query(patient_id, "Observation", [["code", HR], ["_sort", "-date"], ["_count", "1"]])
        assert answer["ok"] == [_latest(rig, patient_id)]


def test_elements_project_inside_the_host(rig: Rig) -> None:
    patient_id = _patients(rig)[0]
    answer = rig.query(patient_id, "Observation", [["_elements", "code,value"], ["_count", "2"]])
    assert len(answer["ok"]) == 2
    assert all(set(r) == {"resourceType", "id", "meta", "code", "valueQuantity"} for r in answer["ok"])


def test_obligations_apply_to_what_a_query_returns(rig: Rig) -> None:
    patient_id = _patients(rig)[0]
    scope = Scope(patient_id, READS, mask=frozenset({"Observation.valueQuantity"}), drop=frozenset({"*.subject"}))
    answer = rig.query(patient_id, "Observation", [["_count", "3"]], scope=scope)
    assert len(answer["ok"]) == 3
    for reading in answer["ok"]:
        assert "reference" not in reading.get("subject", {})  # dropped: at most its data-absent-reason is left
        assert reading["valueQuantity"]["unit"] == "***"


@pytest.mark.parametrize(
    ("case", "patient", "resource_type", "params", "error"),
    [
        ("another patient", "other", "Observation", [], "QueryError_Denied"),
        ("a type not granted", "self", "MedicationRequest", [], "QueryError_Denied"),
        ("an unknown parameter", "self", "Observation", [["subject", "Patient/x"]], "QueryError_Invalid"),
        ("a malformed date", "self", "Observation", [["date", "yesterday"]], "QueryError_Invalid"),
        ("too many parameters", "self", "Observation", [["_count", "1"]] * 33, "QueryError_Invalid"),
        ("an oversized value", "self", "Observation", [["code", "x" * 5000]], "QueryError_Invalid"),
        ("an oversized patient id", "huge", "Observation", [], "QueryError_Denied"),
    ],
)
def test_what_the_grant_or_the_host_refuses(
    rig: Rig, case: str, patient: str, resource_type: str, params: list[Any], error: str
) -> None:
    own, other = _patients(rig)[:2]
    target = {"self": own, "other": other, "huge": "p" * 2000}[patient]
    answer = rig.query(own, resource_type, params, patient=target)
    assert answer.get("error") == error, case


def test_without_a_query_source_the_import_is_unavailable(rig: Rig) -> None:
    sandbox = Sandbox(rig.sandbox.engine, rig.store.search, tick_ms=10)
    patient_id = _patients(rig)[0]
    prepared = sandbox.prepare(rig.component, rig.limits)
    request = FunctionRequest(patient_id, "TREAT", {"type": "Observation", "params": []})
    body = sandbox.call(prepared, request, Scope(patient_id, READS), rig.limits).body
    assert body["error"] == "QueryError_Unavailable"


@pytest.mark.parametrize(
    "params",
    [[["date", "ge2020-03-15"]], [["_sort", "-date"], ["_count", "1"]], [["date:missing", "true"]]],
)
def test_dates_generalised_by_the_decision_cannot_be_searched_or_sorted(rig: Rig, params: list[Any]) -> None:
    # The index holds full dates; bisecting on them would give research back what it sees only as years.
    patient_id = _patients(rig)[0]
    scope = Scope(patient_id, READS, generalise=frozenset({"*.*:year"}))
    assert rig.query(patient_id, "Observation", params, scope=scope).get("error") == "QueryError_Invalid"
    by_code = rig.query(patient_id, "Observation", [["code", HR]], scope=scope)
    assert by_code["ok"] and all(len(r["effectiveDateTime"]) == 4 for r in by_code["ok"])  # years only
