"""Microbenchmark fixtures: the host's parts built as the server builds them, from WARDFN_* settings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from host.bench.fixtures import open_bench_runtime
from host.catalogue.build import build_function
from host.catalogue.manifest import discover_functions
from host.catalogue.registry import limits_for
from host.catalogue.warmup import warmup_for
from host.config import Settings, load_settings
from host.runtime.calls import FunctionRequest, SandboxLimits, Warmup
from host.runtime.sandbox import Sandbox
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
    runtime = open_bench_runtime(settings)
    database, patient_id, sandbox = runtime.database, runtime.patient_id, runtime.sandbox
    functions = {}
    for source in discover_functions(settings.functions_dirs):
        if source.name not in ("patient_lookup", "clinical_calc"):
            continue
        artifact, _ = build_function(source, settings.wit_dir, runtime.cache, runtime.sandbox.engine)
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
    yield Parts(settings, sandbox, functions, database, patient_id)
    runtime.close()
