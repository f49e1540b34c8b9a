"""The OpenAPI description is complete and true: schemathesis, every check, against the real server.

The run is schemathesis's own engine (what `schemathesis run --checks all` runs), driven from
Python: every operation of `/openapi.json` (one invoke operation per function, its arguments
schema in the request body) through the coverage phase (edge and negative values, undocumented
methods), the fuzzing phase (positive and negative data) and the stateful phase (calls chained
along the links it infers), with a real token and real patient ids. Every answer must be one the
description promises: status, headers, body. Examples are few, so that the run takes about a
minute on a busy machine; the seed is fixed, so a failure reproduces.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, from_schema
from schemathesis.engine.events import FatalError, NonFatalError, ScenarioFinished

from tests.conftest import FUNCTION_DIRS
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.components

# `make fuzz FUZZ_EXAMPLES=500` runs this file alone, longer.
EXAMPLES = int(os.environ.get("WARDFN_FUZZ_EXAMPLES", "25"))
SEED = 20261125


@pytest.fixture(scope="module")
def fuzzed(built_functions: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server with the shipped functions only: the test-only ones (hostile) fail on purpose."""
    server = ServerProcess(
        tmp_path_factory.mktemp("fuzzed"), patients=12, WARDFN_FUNCTIONS_DIRS=json.dumps([str(FUNCTION_DIRS[0])])
    )
    yield server
    server.stop()


def _config(server: ServerProcess, cache_dir: str) -> dict[str, Any]:
    store = server.open_store()
    try:
        patient_ids = [p["id"] for p in store.list_patients(100)]
    finally:
        store.close()
    staff = server.token("dr-fuzz", "authorized_medical_staff", ttl=3600)
    officer = server.token("officer-fuzz", "compliance_officer", ttl=3600)
    real_patient = {"dictionary": "patients", "probability": 0.7}
    return {
        "seed": SEED,
        "cache": {"enabled": False, "directory": cache_dir},
        "headers": {"Authorization": f"Bearer {staff}"},
        "dictionaries": {"patients": {"values": patient_ids}},
        "parameters": {"path.patient_id": real_patient, "body.patient_id": real_patient},
        # The trail is for compliance officers: fuzz it as one.
        "operations": [{"include-path": "/v1/audit/records", "headers": {"Authorization": f"Bearer {officer}"}}],
        "generation": {"max-examples": EXAMPLES},
        "request-timeout": 60,
    }


@pytest.fixture(scope="module")
def api_schema(fuzzed: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = SchemathesisConfig.from_dict(_config(fuzzed, str(tmp_path_factory.mktemp("schemathesis"))))
    return schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json", config=config)


def test_every_answer_is_one_the_description_promises(api_schema: Any) -> None:
    failures: list[str] = []
    passed: dict[str, set[str]] = {}
    for event in from_schema(api_schema).execute():
        if isinstance(event, FatalError):
            failures.append(f"schemathesis failed: {event.exception!r}")
        elif isinstance(event, NonFatalError):
            failures.append(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, ScenarioFinished):
            if event.status == Status.SUCCESS:
                passed.setdefault(event.phase.value, set()).add(event.label or "")
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"{event.label} ({event.phase.value}): {check.name}: {failure.title}\n"
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
    assert not failures, "\n\n".join(dict.fromkeys(failures))
    operations = {f"{op.method.upper()} {op.path}" for op in (r.ok() for r in api_schema.get_all_operations())}
    assert operations <= passed.get("fuzzing", set()), "every operation must be fuzzed, none skipped"
    assert passed.get("coverage") and passed.get("stateful"), passed


def test_the_description_has_each_function_and_every_status(api_schema: Any) -> None:
    document = api_schema.raw_schema
    paths = document["paths"]
    for name in ("clinical_calc", "patient_lookup", "patient_search", "med_safety", "fhir_export", "deidentify"):
        operation = paths[f"/v1/functions/{name}/invoke"]["post"]
        assert operation["operationId"] == f"invoke_{name}"
        body = document["components"]["schemas"][f"{name}_invoke"]
        assert body["properties"]["args"] == {"$ref": f"#/components/schemas/{name}_args"}
        assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "413", "422", "500", "503", "504"}
        assert operation["responses"]["200"]["headers"]["X-Break-Glass"]["required"] is True
    assert "/v1/functions/{name}/invoke" not in paths
    calc = document["components"]["schemas"]["clinical_calc_args"]
    assert calc["properties"]["weight_kg"]["minimum"] == 1 and "$schema" not in calc
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
