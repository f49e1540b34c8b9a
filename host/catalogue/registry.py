"""The functions this host serves: each manifest, its verified artifact, its loaded component."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from wasmtime.component import Component

from host.catalogue.arguments import ANY_OBJECT, ArgumentsSchema
from host.catalogue.artifacts import Artifact, ArtifactCache
from host.catalogue.build import cache_key, compile_component
from host.catalogue.manifest import FunctionSource, Manifest, discover_functions
from host.catalogue.oci import LAYOUT_FILE, VerifiedPackage, load_public_key, read_layout
from host.catalogue.warmup import warmup_for
from host.config import Settings
from host.errors import ConfigurationError, FunctionNotFound, WardfnError
from host.metrics import Metrics
from host.runtime.calls import SandboxLimits
from host.runtime.engine import engine_fingerprint
from host.runtime.pool import InstancePool
from host.runtime.sandbox import Sandbox

KIB, MIB = 1024, 1024 * 1024


@dataclass(frozen=True)
class LoadedFunction:
    manifest: Manifest
    artifact: Artifact
    component: Component
    limits: SandboxLimits
    arguments: ArgumentsSchema

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def pool_key(self) -> str:
        return f"{self.name}@{self.artifact.cwasm_sha256}"


def limits_for(manifest: Manifest, settings: Settings) -> SandboxLimits:
    """The manifest's limits, never looser than the host's settings allow (a deadline never shorter than
    WARDFN_MIN_DEADLINE_MS either)."""
    return SandboxLimits(
        deadline_ms=max(settings.min_deadline_ms, min(manifest.limits.deadline_ms, settings.max_deadline_ms)),
        memory_bytes=min(manifest.limits.memory_mib * MIB, settings.max_memory_bytes),
        output_bytes=min(manifest.limits.output_kib * KIB, settings.max_output_bytes),
        stdio_bytes=settings.stdio_limit_bytes,
        log_bytes=settings.function_log_limit_bytes,
        answer_memory_bytes=settings.answer_memory_bytes,
    )


def _arguments_schema(source: FunctionSource) -> ArgumentsSchema:
    name = source.manifest.args_schema
    if name is None:
        return ArgumentsSchema(ANY_OBJECT, f"{source.name} (no args_schema)")
    return ArgumentsSchema.from_file(source.path / name)


@dataclass
class ReloadReport:
    """What a reload did: functions swapped to a new version, removed, and those it could not load."""

    swapped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


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
        self._reload_lock = threading.Lock()
        self._packaged: set[str] = set()

    def load_all(self, cache: ArtifactCache) -> None:
        """Load every function at start-up; any that is not built or not valid stops the host."""
        sources = discover_functions(self._settings.functions_dirs)
        artifacts = cache.lookup_all([(s.name, cache_key(s, self._settings.wit_dir)) for s in sources])
        self._functions = {
            source.name: self._register(source.manifest, _built(source, artifact), _arguments_schema(source))
            for source, artifact in zip(sources, artifacts, strict=True)
        }

    def reload(self, cache: ArtifactCache) -> ReloadReport:
        """Swap in every function whose sources were rebuilt; a function that fails to load keeps its running
        version. In-flight calls finish on the version they started with; the swap is one assignment.
        Packaged functions (WARDFN_PACKAGES_DIRS) are kept as they are: they change by redeployment."""
        with self._reload_lock:
            current = self._functions
            report = ReloadReport()
            try:
                sources = discover_functions(self._settings.functions_dirs)
            except WardfnError as exc:
                report.problems.append(str(exc))
                return report
            updated: dict[str, LoadedFunction] = {
                name: loaded for name, loaded in current.items() if name in self._packaged
            }
            for source in sources:
                running = current.get(source.name)
                try:
                    if running is not None and running.artifact.key == cache_key(source, self._settings.wit_dir):
                        updated[source.name] = running
                        continue
                    updated[source.name] = self._prepare(source, cache)
                    report.swapped.append(f"{source.name} {source.manifest.version}")
                except WardfnError as exc:
                    report.problems.append(str(exc))
                    if running is not None:
                        updated[source.name] = running
            self._functions = updated
            live = {f.pool_key for f in updated.values()}
            for old in current.values():
                if old.pool_key not in live:
                    self._pool.unregister(old.pool_key)
            report.removed = sorted(set(current) - set(updated))
            return report

    def load_packages(self, cache: ArtifactCache) -> None:
        """Load every signed OCI layout in WARDFN_PACKAGES_DIRS, compiling each component here."""
        if not self._settings.packages_dirs:
            return
        assert self._settings.package_public_key_file is not None  # the settings validator insists
        public_key = load_public_key(self._settings.package_public_key_file)
        for layout in _layouts(self._settings.packages_dirs):
            loaded = self._load_package(read_layout(layout, public_key), cache)
            self._functions = {**self._functions, loaded.name: loaded}
            self._packaged.add(loaded.name)

    def _prepare(self, source: FunctionSource, cache: ArtifactCache) -> LoadedFunction:
        artifact = cache.lookup(source.name, cache_key(source, self._settings.wit_dir))
        return self._register(source.manifest, _built(source, artifact), _arguments_schema(source))

    def _load_package(self, package: VerifiedPackage, cache: ArtifactCache) -> LoadedFunction:
        name = package.manifest.name
        if name in self._functions:
            raise ConfigurationError(f"function {name!r} is both a source function and a package; keep one")
        # The key covers the verified component and this engine: a .cwasm never travels in a package.
        key = hashlib.sha256(f"oci-1;{engine_fingerprint()};{package.wasm_digest}".encode()).hexdigest()
        artifact = cache.lookup(name, key)
        if artifact is None:
            cwasm = compile_component(self._sandbox.engine, package.wasm, name)
            artifact = cache.store(name, package.manifest.version, key, package.wasm, cwasm)
        schema = package.args_schema if package.args_schema is not None else ANY_OBJECT
        return self._register(package.manifest, artifact, ArgumentsSchema(schema, f"package {name}"))

    def _register(self, manifest: Manifest, artifact: Artifact, arguments: ArgumentsSchema) -> LoadedFunction:
        started = time.perf_counter()
        component = self._sandbox.load(Path(artifact.cwasm_path))
        self._metrics.component_load_seconds.labels(manifest.name).observe(time.perf_counter() - started)
        loaded = LoadedFunction(
            manifest=manifest,
            artifact=artifact,
            component=component,
            limits=limits_for(manifest, self._settings),
            arguments=arguments,
        )
        self._pool.register(
            loaded.pool_key,
            loaded.component,
            loaded.limits,
            manifest.name,
            warmup=warmup_for(manifest),
            reuse=manifest.reuse_instances,
        )
        return loaded

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


def _built(source: FunctionSource, artifact: Artifact | None) -> Artifact:
    """The artifact, or the error that says how to build it."""
    if artifact is None:
        raise ConfigurationError(
            f"function {source.name!r} is not built for its current sources: run `wardfn build {source.name}`"
        )
    return artifact
