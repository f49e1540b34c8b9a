"""The warm-up patient: the synthetic generator's, kept beside the catalogue so it needs no data stack."""

from __future__ import annotations

import json

from host.catalogue.manifest import discover_functions
from host.catalogue.warmup import WARMUP_PATIENT_FILE, WARMUP_SEED, synthetic_patient, warmup_for
from host.config import PROJECT_ROOT
from host.data.synthetic import generate


def test_the_warm_up_patient_is_the_generators_with_its_seed() -> None:
    # Regenerate with: json.dumps(list(generate(1, WARMUP_SEED)), indent=1, sort_keys=True)
    assert json.loads(WARMUP_PATIENT_FILE.read_text()) == list(generate(1, WARMUP_SEED))


def test_a_warm_up_reads_only_the_synthetic_patient() -> None:
    patient_id, by_type = synthetic_patient()
    lookup = next(s for s in discover_functions([PROJECT_ROOT / "functions"]) if s.name == "patient_lookup")
    warmup = warmup_for(lookup.manifest)
    assert warmup.request.patient_id == patient_id
    assert warmup.read(patient_id, "Observation") == list(by_type["Observation"])
    assert warmup.read("someone-else", "Observation") == []
    assert warmup.scope.resource_types == frozenset(lookup.manifest.reads)


def test_a_warm_up_query_is_evaluated_over_the_synthetic_patient_only() -> None:
    patient_id, by_type = synthetic_patient()
    lookup = next(s for s in discover_functions([PROJECT_ROOT / "functions"]) if s.name == "patient_lookup")
    warmup = warmup_for(lookup.manifest)
    assert warmup.query is not None
    latest = warmup.query(patient_id, "Observation", [("category", "vital-signs"), ("_sort", "-date"), ("_count", "1")])
    assert len(latest) == 1
    dates = [json.loads(o).get("effectiveDateTime", "") for o in by_type["Observation"]]
    assert json.loads(latest[0]).get("effectiveDateTime") == max(dates)
    assert warmup.query("someone-else", "Observation", [("_count", "1")]) == []
