"""What both benchmarks work on: a seeded synthetic database of their own, and its patients."""

from __future__ import annotations

import json
from pathlib import Path

from host.config import Settings
from host.consent import consented
from host.encryption import kek_from_settings
from host.seed import seed_store
from host.store import ResourceStore

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
