"""What both benchmarks work on: a seeded synthetic database of their own, and its patients."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from host.catalogue.artifacts import ArtifactCache
from host.config import Settings
from host.data.synthetic import seed_store
from host.runtime.engine import EpochTicker, create_engine
from host.runtime.sandbox import Sandbox
from host.store.consent import consented
from host.store.encryption import kek_from_settings
from host.store.resources import ResourceStore

BENCH_DATABASE = "bench.db"
PURPOSE = "TREAT"


def bench_database(settings: Settings) -> Path:
    """`$WARDFN_HOME/bench.db`, seeded with WARDFN_SEED_PATIENTS synthetic patients if empty."""
    path = settings.home / BENCH_DATABASE
    store = ResourceStore(path, kek_from_settings(settings))
    try:
        if store.count_patients() == 0:
            seed_store(store, max(settings.seed_patients, 1), settings.seed)
    finally:
        store.close()
    return path


def consenting_patients(settings: Settings, database: Path, limit: int = 200) -> list[str]:
    """Up to `limit` patient ids whose consent allows treatment: every request to them is a 200."""
    store = ResourceStore(database, kek_from_settings(settings))
    try:
        ids = [p["id"] for p in store.list_patients(limit * 2)]
        chosen = [pid for pid in ids if consented([json.loads(c) for c in store.search(pid, "Consent")], PURPOSE)]
    finally:
        store.close()
    if not chosen:
        raise RuntimeError(f"no patient in {database} consents to {PURPOSE}: delete it to seed it again")
    return chosen[:limit]


@dataclass
class BenchRuntime:
    """The runtime parts both benchmarks drive, built as the server builds them."""

    database: Path
    patient_id: str
    cache: ArtifactCache
    ticker: EpochTicker
    store: ResourceStore
    sandbox: Sandbox

    def close(self) -> None:
        self.ticker.stop()
        self.store.close()


def open_bench_runtime(settings: Settings) -> BenchRuntime:
    """The bench database, one consenting patient, and a sandbox reading that database; the ticker runs."""
    database = bench_database(settings)
    patient_id = consenting_patients(settings, database, 1)[0]
    engine = create_engine()
    store = ResourceStore(database, kek_from_settings(settings))
    runtime = BenchRuntime(
        database=database,
        patient_id=patient_id,
        cache=ArtifactCache(settings.artifact_dir, settings.key_dir),
        ticker=EpochTicker(engine, settings.epoch_tick_ms),
        store=store,
        sandbox=Sandbox(engine, store.search, settings.epoch_tick_ms),
    )
    runtime.ticker.start()
    return runtime
