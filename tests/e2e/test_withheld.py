"""Withheld is an answer, over HTTP against `wardfn serve`: billing's medication safety check is not
"safe" without the allergies it may not see, and research's de-identified export carries the age."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Patients
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.components

WITHHELD = {"withheld": True, "reason": "not granted for this purpose of use"}


def _invoke(server: ServerProcess, function: str, patient_id: str, sub: str, role: str, purpose: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/functions/{function}/invoke",
        json={"patient_id": patient_id, "purpose": purpose},
        headers=server.headers(sub, role),
        timeout=60,
    )


def test_billings_med_safety_answers_safe_null_never_safe(server: ServerProcess, patients: Patients) -> None:
    patient_id = patients.consenting[0]
    response = _invoke(server, "med_safety", patient_id, "billing-1", "billing", "HPAYMT")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    assert result["safe"] is None and result["withheld"] == ["AllergyIntolerance"]
    assert result["flags"] == WITHHELD and result["checked"]["active_allergies"] == WITHHELD
    assert isinstance(result["checked"]["active_medications"], int), "the granted medications are still read"
    looked_up = _invoke(server, "patient_lookup", patient_id, "billing-1", "billing", "HPAYMT")
    assert looked_up.status_code == 200, looked_up.text
    summary = looked_up.json()["result"]
    assert summary["allergies"] == WITHHELD and summary["vital_signs"] == WITHHELD
    assert isinstance(summary["medications"], list)


def test_a_researchers_export_carries_the_age_and_no_full_date(server: ServerProcess, patients: Patients) -> None:
    for patient_id in patients.consenting:
        response = _invoke(server, "deidentify", patient_id, "res-1", "researcher", "HRESCH")
        if response.status_code == 403:
            continue  # this patient's Consent refuses research
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["result"]
        assert result["age"] == "90+" or (isinstance(result["age"], int) and 0 <= result["age"] < 90), result["age"]
        text = json.dumps(result)
        assert not re.search(r"\d{4}-\d{2}", text) and patient_id not in text
        assert result["withheld"]["Procedure"] == WITHHELD
        return
    pytest.fail("the seed should give some patient no Consent refusing research")
