"""The process's one wasmtime engine, and the ticker that advances its epoch so deadlines interrupt guests."""

from __future__ import annotations

import threading
from importlib.metadata import version as package_version

from wasmtime import Config, Engine

WIT_PACKAGE = "wardfn:patient"
WIT_VERSION = "0.1.0"
HANDLER_EXPORT = f"{WIT_PACKAGE}/handler@{WIT_VERSION}"


def create_engine() -> Engine:
    """The process's one engine. Its settings are part of every artifact's cache key."""
    config = Config()
    config.epoch_interruption = True
    return Engine(config)


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
