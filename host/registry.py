"""The functions this host serves: each manifest, its verified artifact, its loaded component."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from wasmtime.component import Component

from host.artifacts import Artifact, ArtifactCache
from host.build import cache_key
from host.config import Settings
from host.errors import ConfigurationError, FunctionNotFound
from host.manifest import FunctionSource, Manifest, discover_functions
from host.runtime import FunctionRequest, InstancePool, Sandbox, SandboxLimits, Warmup
from host.seed import generate
from host.types import Scope

KIB, MIB = 1024, 1024 * 1024
# Warm-up calls read one patient from the synthetic generator, with its own seed: realistic
# in shape and size (so the warm-up exercises the code paths and memory growth a real call
# will), fictional in content, and served from memory, never from the store.
WARMUP_SEED = 6060842


@dataclass(frozen=True)
class LoadedFunction:
    manifest: Manifest
    artifact: Artifact
    component: Component
    limits: SandboxLimits

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def pool_key(self) -> str:
        return f"{self.name}@{self.artifact.cwasm_sha256}"


def limits_for(manifest: Manifest, settings: Settings) -> SandboxLimits:
    """The manifest's limits, never looser than the host's settings allow."""
    return SandboxLimits(
        deadline_ms=min(manifest.limits.deadline_ms, settings.deadline_ms),
        memory_bytes=min(manifest.limits.memory_mib * MIB, settings.memory_limit_bytes),
        output_bytes=min(manifest.limits.output_kib * KIB, settings.output_limit_bytes),
        stdio_bytes=settings.stdio_limit_bytes,
        log_bytes=settings.function_log_limit_bytes,
    )


@functools.cache
def _synthetic_patient() -> tuple[str, dict[str, tuple[str, ...]]]:
    """(id, {resource type: JSON bodies}) of one synthetic patient."""
    by_type: dict[str, list[str]] = {}
    patient_id = ""
    for resource in generate(1, WARMUP_SEED):
        if resource["resourceType"] == "Patient":
            patient_id = resource["id"]
        by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource, separators=(",", ":")))
    return patient_id, {k: tuple(v) for k, v in by_type.items()}


def _synthetic_records(patient_id: str, resource_type: str) -> list[str]:
    """What a warm-up call reads: the synthetic patient's resources. Never the store."""
    synthetic_id, by_type = _synthetic_patient()
    return list(by_type.get(resource_type, ())) if patient_id == synthetic_id else []


def warmup_for(manifest: Manifest) -> Warmup:
    """The synthetic invocation that warms this function's prepared instances."""
    patient_id = _synthetic_patient()[0] if manifest.patient == "required" else None
    return Warmup(
        request=FunctionRequest(patient_id=patient_id, purpose="TREAT", args=dict(manifest.warmup_args)),
        scope=Scope(patient_id=patient_id, resource_types=frozenset(manifest.reads) if patient_id else frozenset()),
        read=_synthetic_records,
    )


class Registry:
    """Loads every discovered function from the artifact cache; refuses any that is not built."""

    def __init__(self, settings: Settings, sandbox: Sandbox, pool: InstancePool) -> None:
        self._settings = settings
        self._sandbox = sandbox
        self._pool = pool
        self._functions: dict[str, LoadedFunction] = {}

    def load_all(self, cache: ArtifactCache) -> None:
        for source in discover_functions(self._settings.functions_dirs):
            self._load(source, cache)

    def _load(self, source: FunctionSource, cache: ArtifactCache) -> None:
        key = cache_key(source, self._settings.wit_dir)
        artifact = cache.lookup(source.name, key)
        if artifact is None:
            raise ConfigurationError(
                f"function {source.name!r} is not built for its current sources: run `wardfn build {source.name}`"
            )
        loaded = LoadedFunction(
            manifest=source.manifest,
            artifact=artifact,
            component=self._sandbox.load(Path(artifact.cwasm_path)),
            limits=limits_for(source.manifest, self._settings),
        )
        self._pool.register(
            loaded.pool_key,
            loaded.component,
            loaded.limits,
            warmup=warmup_for(source.manifest),
            reuse=source.manifest.reuse_instances,
        )
        self._functions[source.name] = loaded

    def get(self, name: str) -> LoadedFunction:
        try:
            return self._functions[name]
        except KeyError:
            raise FunctionNotFound(f"no function named {name!r}; GET /v1/functions lists them") from None

    def all(self) -> list[LoadedFunction]:
        return sorted(self._functions.values(), key=lambda f: f.name)
