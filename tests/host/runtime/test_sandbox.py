"""The sandbox against real componentize-py components: limits, traps, escapes, and the host surviving them."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host.catalogue.artifacts import ArtifactCache
from host.catalogue.build import cache_key
from host.catalogue.manifest import discover_functions
from host.catalogue.registry import limits_for
from host.catalogue.warmup import warmup_for
from host.errors import (
    FunctionFailed,
    FunctionOutputRejected,
    FunctionReturnedError,
    FunctionTimedOut,
    FunctionTrapped,
    FunctionUnavailable,
)
from host.runtime.calls import FunctionRequest, SandboxLimits
from host.runtime.engine import EpochTicker, Pooling, create_engine
from host.runtime.pool import InstancePool
from host.runtime.sandbox import Sandbox
from host.search.memory import evaluate
from host.types import Scope
from tests.conftest import settings_for

pytestmark = pytest.mark.components

PATIENT = "patient-a"
OTHER = "patient-b"


def _records(patient_id: str, resource_type: str) -> list[str]:
    return [json.dumps({"resourceType": resource_type, "id": patient_id, "name": [{"family": "Secret"}]})]


def _query(patient_id: str, resource_type: str, params: list[tuple[str, str]]) -> list[str]:
    return evaluate(resource_type, params, _records(patient_id, resource_type))


class Harness:
    def __init__(self, sandbox: Sandbox, components: dict[str, Any], limits: dict[str, SandboxLimits]) -> None:
        self.sandbox = sandbox
        self.components = components
        self.limits = limits

    def call(self, function: str, args: dict[str, Any], scope: Scope | None = None) -> Any:
        limits = self.limits[function]
        prepared = self.sandbox.prepare(self.components[function], limits)
        scope = scope or Scope(PATIENT, frozenset({"Patient"}))
        return self.sandbox.call(prepared, FunctionRequest(PATIENT, "TREAT", args), scope, limits)


@pytest.fixture(scope="module")
def harness(built_functions: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    settings = settings_for(tmp_path_factory.mktemp("rt") / "unused.db")
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    # Pooling, as the host runs by default: every instance takes a slot an earlier one left.
    engine = create_engine(Pooling.from_settings(settings))
    ticker = EpochTicker(engine, settings.epoch_tick_ms)
    ticker.start()
    sandbox = Sandbox(engine, _records, settings.epoch_tick_ms, query=_query)
    components, limits = {}, {}
    for source in discover_functions(settings.functions_dirs):
        artifact = cache.lookup(source.name, cache_key(source, settings.wit_dir))
        assert artifact is not None
        components[source.name] = sandbox.load(Path(artifact.cwasm_path))
        limits[source.name] = limits_for(source.manifest, settings)
    yield Harness(sandbox, components, limits)
    ticker.stop()


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("loop", FunctionTimedOut),
        ("memory", FunctionTrapped),
        # Growing in steps hits the memory cap or, on a slow machine, the deadline first.
        ("hoard", FunctionFailed),
        ("raise", FunctionTrapped),
        ("exit", FunctionTrapped),
        ("huge", FunctionOutputRejected),
        ("garbage", FunctionOutputRejected),
        ("no-such-mode", FunctionReturnedError),
    ],
)
def test_hostile_function_fails_cleanly_and_the_next_call_works(harness: Harness, mode: str, error: type) -> None:
    with pytest.raises(error):
        harness.call("hostile", {"mode": mode})
    assert harness.call("hostile", {"mode": "ok"}).body == {"ok": True}


def test_function_error_case_keeps_its_kind(harness: Harness) -> None:
    with pytest.raises(FunctionReturnedError) as caught:
        harness.call("hostile", {"mode": "no-such-mode"})
    assert caught.value.kind == "invalid-input"


def test_escape_attempts_find_no_files_environment_or_network(harness: Harness) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    connections: list[object] = []

    def accept() -> None:
        try:
            connections.append(listener.accept())
        except OSError:
            pass

    waiter = threading.Thread(target=accept)
    waiter.start()
    try:
        got = harness.call("hostile", {"mode": "escape", "port": port}).body
    finally:
        waiter.join()
        listener.close()
    assert got["environ"] == {}
    for attempt in ("file", "cwd_file", "root_listing", "socket", "dns"):
        assert got[attempt]["succeeded"] is False, attempt
    assert connections == []


def test_stdio_is_captured_and_bounded(harness: Harness) -> None:
    result = harness.call("hostile", {"mode": "stdout"})
    assert result.body == {"ok": True}
    assert 0 < result.stdio_bytes <= harness.limits["hostile"].stdio_bytes
    assert sum(len(line) for line in result.log) <= harness.limits["hostile"].log_bytes


def test_records_answer_only_inside_the_scope(harness: Harness) -> None:
    other = harness.call("hostile", {"mode": "other_patient", "target": OTHER}).body["other"]
    assert other == {"succeeded": False, "error": "AccessError_Denied", "detail": other["detail"]}
    forbidden = harness.call("hostile", {"mode": "forbidden_type"}).body
    assert forbidden["consent"]["succeeded"] is False
    assert forbidden["own"] == {"succeeded": True, "value": 1}


def test_patient_lookup_reads_through_the_records_import(harness: Harness) -> None:
    scope = Scope(PATIENT, frozenset({"Patient", "AllergyIntolerance", "MedicationRequest", "Observation"}))
    body = harness.call("patient_lookup", {}, scope).body
    assert body["demographics"]["id"] == PATIENT
    assert body["demographics"]["name"]["family"] == "Secret"


def test_patient_lookup_granted_nothing_marks_every_section_withheld(harness: Harness) -> None:
    # The host found the patient before the call; what the decision withholds is marked, never "none".
    body = harness.call("patient_lookup", {}, Scope(PATIENT, frozenset())).body
    assert set(body) == {"demographics", "allergies", "medications", "vital_signs"}
    assert all(section["withheld"] is True for section in body.values())


def test_prepared_instances_serve_one_invocation_each(harness: Harness) -> None:
    pool = InstancePool(harness.sandbox, size=2)
    pool.register("hostile", harness.components["hostile"], harness.limits["hostile"])
    pool.start()
    try:
        first = pool.take("hostile", harness.components["hostile"], harness.limits["hostile"])
        limits = harness.limits["hostile"]
        request = FunctionRequest(PATIENT, "TREAT", {"mode": "ok"})
        assert harness.sandbox.call(first, request, Scope(PATIENT, frozenset()), limits).body == {"ok": True}
        with pytest.raises(RuntimeError):  # its store is gone: it cannot be called again
            harness.sandbox.call(first, request, Scope(PATIENT, frozenset()), limits)
        assert pool.take("hostile", harness.components["hostile"], harness.limits["hostile"]) is not first
    finally:
        pool.stop()


def test_a_reusable_instance_is_never_given_patient_records(harness: Harness) -> None:
    limits = harness.limits["clinical_calc"]
    prepared = harness.sandbox.prepare(harness.components["clinical_calc"], limits, reusable=True)
    args = {"calculator": "bmi", "weight_kg": 70, "height_cm": 175}
    try:
        with pytest.raises(RuntimeError, match="may not be given access to patient records"):
            harness.sandbox.call(prepared, FunctionRequest(None, "TREAT", args), Scope(PATIENT, frozenset()), limits)
        with pytest.raises(RuntimeError, match="may not be given access to patient records"):
            harness.sandbox.call(
                prepared, FunctionRequest(None, "TREAT", args), Scope(None, frozenset({"Patient"})), limits
            )
        for _ in range(3):  # and without records it serves one call after another
            body = harness.sandbox.call(prepared, FunctionRequest(None, "TREAT", args), Scope(None), limits).body
            assert body["value"] == 22.9
    finally:
        prepared.discard()


def test_the_pool_reuses_only_what_the_manifest_allows(harness: Harness) -> None:
    pool = InstancePool(harness.sandbox, size=1, reuse_size=2)
    pool.register("calc", harness.components["clinical_calc"], harness.limits["clinical_calc"], reuse=True)
    pool.register("hostile", harness.components["hostile"], harness.limits["hostile"])
    calc_parts = (harness.components["clinical_calc"], harness.limits["clinical_calc"])
    hostile_parts = (harness.components["hostile"], harness.limits["hostile"])
    calc = pool.take("calc", *calc_parts)
    pool.give_back("calc", calc)
    assert pool.take("calc", *calc_parts) is calc  # warm and reused
    once = pool.take("hostile", *hostile_parts)
    pool.give_back("hostile", once)  # a one-shot instance is dropped, never queued again
    assert not once.usable
    assert pool.take("hostile", *hostile_parts) is not once


def test_warm_up_reads_synthetic_records_never_the_store(harness: Harness) -> None:
    store_reads: list[tuple[str, str]] = []

    def store(patient_id: str, resource_type: str) -> list[str]:
        store_reads.append((patient_id, resource_type))
        return _records(patient_id, resource_type)

    def store_query(patient_id: str, resource_type: str, params: list[tuple[str, str]]) -> list[str]:
        store_reads.append((patient_id, resource_type))
        return _query(patient_id, resource_type, params)

    sandbox = Sandbox(harness.sandbox.engine, store, 5, query=store_query)
    source = next(
        s for s in discover_functions(settings_for(Path("unused.db")).functions_dirs) if s.name == "patient_lookup"
    )
    limits = harness.limits["patient_lookup"]
    prepared = sandbox.prepare(harness.components["patient_lookup"], limits, warmup_for(source.manifest))
    assert store_reads == []
    assert prepared.stdio.used == 0
    scope = Scope(PATIENT, frozenset(source.manifest.reads))
    body = sandbox.call(prepared, FunctionRequest(PATIENT, "TREAT", {}), scope, limits).body
    assert body["demographics"]["id"] == PATIENT and body["demographics"]["name"]["family"] == "Secret"
    assert {resource_type for _, resource_type in store_reads} == set(source.manifest.reads)


def test_a_spent_instance_is_replaced_once_its_call_is_finished(harness: Harness) -> None:
    pool = InstancePool(harness.sandbox, size=2)
    parts = (harness.components["hostile"], harness.limits["hostile"])
    pool.register("hostile", *parts)
    ready = pool._slots["hostile"].ready

    def until_ready(count: int) -> None:
        deadline = time.monotonic() + 30
        while ready.qsize() < count:
            assert time.monotonic() < deadline, f"the pool never reached {count} ready instances"
            time.sleep(0.01)

    pool.start()
    try:
        until_ready(2)
        spent = pool.take("hostile", *parts)
        spent.discard()
        pool.finished("hostile")
        until_ready(2)
        assert spent not in list(ready.queue)
    finally:
        pool.stop()


def test_a_pooled_slot_starts_its_next_instance_from_the_initial_image(
    built_functions: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two slots, many instances: each slot serves many, and none sees what an earlier one stashed."""
    settings = settings_for(tmp_path_factory.mktemp("slots") / "unused.db")
    engine = create_engine(Pooling(2, max_memory_size=settings.max_memory_bytes))
    ticker = EpochTicker(engine, settings.epoch_tick_ms)
    ticker.start()
    sandbox = Sandbox(engine, _records, settings.epoch_tick_ms, query=_query)
    [source] = [s for s in discover_functions(settings.functions_dirs) if s.name == "hostile"]
    artifact = ArtifactCache(settings.artifact_dir, settings.key_dir).lookup(
        source.name, cache_key(source, settings.wit_dir)
    )
    assert artifact is not None
    component, limits = sandbox.load(Path(artifact.cwasm_path)), limits_for(source.manifest, settings)
    scope = Scope(PATIENT, frozenset({"Patient"}))
    try:
        for _ in range(6):
            prepared = sandbox.prepare(component, limits)
            body = sandbox.call(prepared, FunctionRequest(PATIENT, "TREAT", {"mode": "stash"}), scope, limits).body
            assert body["stash_before"] == []
        held = [sandbox.prepare(component, limits) for _ in range(2)]
        with pytest.raises(FunctionUnavailable):  # every slot taken: refused as load (503), not a trap
            sandbox.prepare(component, limits)
        for prepared in held:
            prepared.discard()
        after = sandbox.prepare(component, limits)  # a slot given back serves again
        assert sandbox.call(after, FunctionRequest(PATIENT, "TREAT", {"mode": "ok"}), scope, limits).body == {
            "ok": True
        }
    finally:
        sandbox.runner.close()
        ticker.stop()
