"""Microbenchmark fixtures: the host's parts built as the server builds them, from WARDFN_* settings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from host.artifacts import ArtifactCache
from host.bench.fixtures import bench_database, consenting_patients
from host.build import build_function
from host.config import Settings, load_settings
from host.encryption import kek_from_settings
from host.manifest import discover_functions
from host.registry import limits_for, warmup_for
from host.runtime import EpochTicker, FunctionRequest, Sandbox, SandboxLimits, Warmup, create_engine
from host.store import ResourceStore
from host.types import Scope


@dataclass
class Function:
    component: object
    limits: SandboxLimits
    warmup: Warmup
    request: FunctionRequest
    scope: Scope


@dataclass
class Parts:
    settings: Settings
    sandbox: Sandbox
    functions: dict[str, Function]
    database: Path
    patient_id: str


@pytest.fixture(scope="session")
def parts() -> Iterator[Parts]:
    settings = load_settings()
    database = bench_database(settings)
    patient_id = consenting_patients(settings, database, 1)[0]
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    engine = create_engine()
    ticker = EpochTicker(engine, settings.epoch_tick_ms)
    store = ResourceStore(database, kek_from_settings(settings))
    sandbox = Sandbox(engine, store.search, settings.epoch_tick_ms)
    functions = {}
    for source in discover_functions(settings.functions_dirs):
        if source.name not in ("patient_lookup", "clinical_calc"):
            continue
        artifact, _ = build_function(source, settings.wit_dir, cache, engine)
        manifest = source.manifest
        if manifest.patient == "required":
            request = FunctionRequest(patient_id, "TREAT", {})
            scope = Scope(patient_id, frozenset(manifest.reads))
        else:
            request = FunctionRequest(
                None, "TREAT", {"calculator": "egfr", "creatinine_mg_dl": 1.1, "age": 67, "sex": "female"}
            )
            scope = Scope(None)
        functions[source.name] = Function(
            sandbox.load(Path(artifact.cwasm_path)),
            limits_for(manifest, settings),
            warmup_for(manifest),
            request,
            scope,
        )
    ticker.start()
    yield Parts(settings, sandbox, functions, database, patient_id)
    ticker.stop()
    store.close()
