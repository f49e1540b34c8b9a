"""clinical_calc over HTTP: no patient, reused warm instances, audited like everything else."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import Patients
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.components

PATH = "/v1/functions/clinical_calc/invoke"
EGFR = {"calculator": "egfr", "creatinine_mg_dl": 1.0, "age": 60, "sex": "female"}


def test_calculations_answer_and_are_audited_without_a_patient(server: ServerProcess) -> None:
    headers = {**server.headers("dr-calc"), "X-Request-ID": "calc-egfr-1"}
    response = httpx.post(server.url + PATH, json={"args": EGFR}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"calculator": "egfr", "value": 64.5, "unit": "mL/min/1.73m2", "stage": "G2"}
    log = server.open_audit()
    try:
        [record] = [r for r in log.records(limit=100_000) if r.event.request_id == "calc-egfr-1"]
    finally:
        log.close()
    assert (record.event.function, record.event.patient_id, record.event.outcome) == ("clinical_calc", None, "ok")


def test_many_calls_on_reused_instances_each_get_their_own_answer(server: ServerProcess) -> None:
    headers = server.headers("dr-calc")

    def bmi(weight: int) -> float:
        args = {"calculator": "bmi", "weight_kg": weight, "height_cm": 200}
        response = httpx.post(server.url + PATH, json={"args": args}, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return float(response.json()["result"]["value"])

    weights = list(range(40, 140))
    with ThreadPoolExecutor(max_workers=8) as pool:
        values = list(pool.map(bmi, weights))
    assert values == [round(w / 4, 1) for w in weights]


@pytest.mark.parametrize(
    ("body", "role", "status"),
    [
        ({"patient_id": "p-1", "args": EGFR}, "authorized_medical_staff", 422),  # works on no patient
        ({"args": {"calculator": "nope"}}, "authorized_medical_staff", 422),
        ({"args": EGFR}, "billing", 403),
    ],
    ids=["patient-id-refused", "bad-args", "role-denied"],
)
def test_refusals(server: ServerProcess, patients: Patients, body: dict[str, object], role: str, status: int) -> None:
    if "patient_id" in body:
        body = {**body, "patient_id": patients.consenting[0]}
    response = httpx.post(server.url + PATH, json=body, headers=server.headers("someone", role))
    assert response.status_code == status, response.text
    assert "result" not in response.json()
