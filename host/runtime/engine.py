"""The process's one wasmtime engine, and the ticker that advances its epoch so deadlines interrupt guests.

The engine can use wasmtime's pooling allocator: instance slots (memories, tables, core and
component instances) reserved once, and given back to a later instance of the same component
with the first bytes of each linear memory and table still resident, reset to the component's
initial image instead of unmapped. A fresh instance then starts from the pristine snapshot
without a fresh heap's page faults. wasmtime-py (50) exposes the pooling settings through its
C API bindings only, so they are set here on the `wasm_config_t` behind `Config`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib.metadata import version as package_version

from wasmtime import Config, Engine
from wasmtime import _ffi as ffi

from host.config import POOL_TABLE_KEEP_RESIDENT_BYTES, Settings

WIT_PACKAGE = "wardfn:patient"
WIT_VERSION = "0.1.0"
HANDLER_EXPORT = f"{WIT_PACKAGE}/handler@{WIT_VERSION}"


@dataclass(frozen=True)
class Pooling:
    """The pooling allocator's sizes: how many instances may live at once, and what each slot keeps resident."""

    component_instances: int
    memory_keep_resident: int = 12 * 1024 * 1024
    table_keep_resident: int = POOL_TABLE_KEEP_RESIDENT_BYTES
    # The most a linear memory may grow to in a slot: the largest memory cap a manifest may ask for
    # (each store's own cap, set per call, still applies below it).
    max_memory_size: int = 1024 * 1024 * 1024
    # A componentize-py component is several core modules (CPython, libc, the WASI adapter, ...):
    # ours take 14 core instances, one memory and two tables each. A component past these caps
    # fails to load (ArtifactRejected), so they leave room; unused caps cost address space only.
    core_per_component: int = 24
    memories_per_component: int = 2
    tables_per_component: int = 4
    table_elements: int = 100_000
    max_core_instance_size: int = 4 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> Pooling | None:
        """The pool the settings ask for; None when pooling is off."""
        if not settings.pooling:
            return None
        return cls(
            settings.pool_instance_slots, settings.pool_keep_resident_bytes, max_memory_size=settings.max_memory_bytes
        )


def create_engine(pooling: Pooling | None = None) -> Engine:
    """The process's one engine. Its settings are part of every artifact's cache key.

    The allocation strategy is not: wasmtime loads an artifact compiled without pooling into a
    pooling engine (the memory reservation and guards it was compiled for are the same)."""
    config = Config()
    config.epoch_interruption = True
    if pooling is not None:
        _set_pooling(config, pooling)
    return Engine(config)


def _set_pooling(config: Config, pooling: Pooling) -> None:
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        count = max(pooling.component_instances, 1)
        ffi.wasmtime_pooling_allocation_config_total_component_instances_set(pool, count)
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(pool, count * pooling.core_per_component)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(pool, count * pooling.memories_per_component)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(pool, count * pooling.tables_per_component)
        ffi.wasmtime_pooling_allocation_config_max_core_instances_per_component_set(pool, pooling.core_per_component)
        ffi.wasmtime_pooling_allocation_config_max_memories_per_component_set(pool, pooling.memories_per_component)
        ffi.wasmtime_pooling_allocation_config_max_tables_per_component_set(pool, pooling.tables_per_component)
        ffi.wasmtime_pooling_allocation_config_table_elements_set(pool, pooling.table_elements)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, pooling.max_memory_size)
        ffi.wasmtime_pooling_allocation_config_max_core_instance_size_set(pool, pooling.max_core_instance_size)
        ffi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(pool, pooling.memory_keep_resident)
        ffi.wasmtime_pooling_allocation_config_table_keep_resident_set(pool, pooling.table_keep_resident)
        # Every slot may stay warm: kept for its last component, resident up to the sizes above (measured:
        # a slot that loses its warmth keeps its resident pages anyway, so a lower bound saves no memory).
        ffi.wasmtime_pooling_allocation_config_max_unused_warm_slots_set(pool, count)
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)


def engine_fingerprint() -> str:
    """What a serialized component depends on: the wasmtime version and the engine settings."""
    return f"wasmtime={package_version('wasmtime')};epoch_interruption=1"


class EpochTicker:
    """Advances the engine's epoch at a fixed interval so deadlines interrupt running code."""

    def __init__(self, engine: Engine, interval_ms: int) -> None:
        self._engine = engine
        self._interval = interval_ms / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wardfn-epoch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._engine.increment_epoch()
