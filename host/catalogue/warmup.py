"""The synthetic invocation that warms a function's prepared instances.

Warm-up calls read one fictional patient, kept beside this module as FHIR JSON
(`warmup_patient.json`, made by the synthetic generator with its own seed: see
`tests/host/catalogue/test_warmup.py`): realistic in shape and size, so the warm-up exercises
the code paths and memory growth a real call will, and served from memory, never from the store.
Its `records.query` is evaluated over the same patient by the store's own evaluator (host.search),
so a function that asks with search parameters warms that path too.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from host.catalogue.manifest import Manifest
from host.runtime.calls import FunctionRequest, Warmup
from host.search.memory import evaluate
from host.types import Scope

WARMUP_PATIENT_FILE = Path(__file__).with_name("warmup_patient.json")
# The generator's seed the file was made with: `generate(1, WARMUP_SEED)`.
WARMUP_SEED = 6060842


@functools.cache
def synthetic_patient() -> tuple[str, dict[str, tuple[str, ...]]]:
    """(id, {resource type: JSON bodies}) of the warm-up patient."""
    by_type: dict[str, list[str]] = {}
    patient_id = ""
    for resource in json.loads(WARMUP_PATIENT_FILE.read_text()):
        if resource["resourceType"] == "Patient":
            patient_id = resource["id"]
        by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource, separators=(",", ":")))
    return patient_id, {k: tuple(v) for k, v in by_type.items()}


def _synthetic_records(patient_id: str, resource_type: str) -> list[str]:
    """What a warm-up call reads: the synthetic patient's resources. Never the store."""
    synthetic_id, by_type = synthetic_patient()
    return list(by_type.get(resource_type, ())) if patient_id == synthetic_id else []


def _synthetic_query(patient_id: str, resource_type: str, params: list[tuple[str, str]]) -> list[str]:
    """What a warm-up query reads: the synthetic patient's resources that match, evaluated as the store does."""
    return evaluate(resource_type, params, _synthetic_records(patient_id, resource_type))


def warmup_for(manifest: Manifest) -> Warmup:
    """The synthetic invocation that warms this function's prepared instances."""
    patient_id = synthetic_patient()[0] if manifest.patient == "required" else None
    return Warmup(
        request=FunctionRequest(patient_id=patient_id, purpose="TREAT", args=dict(manifest.warmup_args)),
        scope=Scope(patient_id=patient_id, resource_types=frozenset(manifest.reads) if patient_id else frozenset()),
        read=_synthetic_records,
        query=_synthetic_query,
    )
