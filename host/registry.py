"""The functions this host serves: each manifest, its verified artifact, its loaded component."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from wasmtime.component import Component

from host.artifacts import Artifact, ArtifactCache
from host.build import cache_key, compile_component
from host.config import Settings
from host.errors import ConfigurationError, FunctionNotFound
from host.manifest import FunctionSource, Manifest, discover_functions
from host.metrics import Metrics
from host.oci import LAYOUT_FILE, VerifiedPackage, load_public_key, read_layout
from host.runtime import InstancePool, Sandbox, SandboxLimits, engine_fingerprint

KIB, MIB = 1024, 1024 * 1024


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


class Registry:
    """Loads every discovered function from the artifact cache; refuses any that is not built."""

    def __init__(
        self, settings: Settings, sandbox: Sandbox, pool: InstancePool, metrics: Metrics | None = None
    ) -> None:
        self._settings = settings
        self._sandbox = sandbox
        self._pool = pool
        self._metrics = metrics if metrics is not None else Metrics()
        self._functions: dict[str, LoadedFunction] = {}

    def load_all(self, cache: ArtifactCache) -> None:
        for source in discover_functions(self._settings.functions_dirs):
            self._load(source, cache)

    def load_packages(self, cache: ArtifactCache) -> None:
        """Load every signed OCI layout in WARDFN_PACKAGES_DIRS, compiling each component here."""
        if not self._settings.packages_dirs:
            return
        assert self._settings.package_public_key_file is not None  # the settings validator insists
        public_key = load_public_key(self._settings.package_public_key_file)
        for layout in _layouts(self._settings.packages_dirs):
            self._load_package(read_layout(layout, public_key), cache)

    def _load(self, source: FunctionSource, cache: ArtifactCache) -> None:
        key = cache_key(source, self._settings.wit_dir)
        artifact = cache.lookup(source.name, key)
        if artifact is None:
            raise ConfigurationError(
                f"function {source.name!r} is not built for its current sources: run `wardfn build {source.name}`"
            )
        self._register(source.manifest, artifact)

    def _load_package(self, package: VerifiedPackage, cache: ArtifactCache) -> None:
        name = package.manifest.name
        if name in self._functions:
            raise ConfigurationError(f"function {name!r} is both a source function and a package; keep one")
        # The key covers the verified component and this engine: a .cwasm never travels in a package.
        key = hashlib.sha256(f"oci-1;{engine_fingerprint()};{package.wasm_digest}".encode()).hexdigest()
        artifact = cache.lookup(name, key)
        if artifact is None:
            cwasm = compile_component(self._sandbox.engine, package.wasm, name)
            artifact = cache.store(name, package.manifest.version, key, package.wasm, cwasm)
        self._register(package.manifest, artifact)

    def _register(self, manifest: Manifest, artifact: Artifact) -> None:
        started = time.perf_counter()
        component = self._sandbox.load(Path(artifact.cwasm_path))
        self._metrics.component_load_seconds.labels(manifest.name).observe(time.perf_counter() - started)
        loaded = LoadedFunction(
            manifest=manifest, artifact=artifact, component=component, limits=limits_for(manifest, self._settings)
        )
        self._pool.register(loaded.pool_key, loaded.component, loaded.limits, manifest.name)
        self._functions[manifest.name] = loaded

    def get(self, name: str) -> LoadedFunction:
        try:
            return self._functions[name]
        except KeyError:
            raise FunctionNotFound(f"no function named {name!r}; GET /v1/functions lists them") from None

    def names(self) -> frozenset[str]:
        return frozenset(self._functions)

    def all(self) -> list[LoadedFunction]:
        return sorted(self._functions.values(), key=lambda f: f.name)


def _layouts(directories: list[Path]) -> list[Path]:
    """Each entry is an OCI layout, or a directory whose subdirectories are layouts."""
    found: list[Path] = []
    for directory in directories:
        if (directory / LAYOUT_FILE).is_file():
            found.append(directory)
        elif directory.is_dir():
            found.extend(sorted(p for p in directory.iterdir() if (p / LAYOUT_FILE).is_file()))
        else:
            raise ConfigurationError(f"packages directory {directory} does not exist (WARDFN_PACKAGES_DIRS)")
    return found
