"""`wardfn serve --policy opa` against the real OPA on a loopback port, over real HTTP: the same answers
as the embedded engine, and when OPA stops, every request is 503 and none is allowed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from host.policy.engine import RegoPolicyEngine
from host.store.resources import open_store
from tests.e2e.server import ServerProcess
from tests.opa_server import OpaServer

pytestmark = pytest.mark.components


@pytest.fixture()
def sidecar(tmp_path: Path) -> Iterator[OpaServer]:
    server = OpaServer.with_policy(tmp_path)
    yield server
    server.stop()


@pytest.fixture()
def host(built_functions: list[str], sidecar: OpaServer, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path, patients=20, WARDFN_POLICY="opa", WARDFN_OPA_URL=sidecar.url)
    yield process
    process.stop()


def _patients(host: ServerProcess) -> tuple[str, list[str]]:
    store = open_store(host.settings)
    try:
        ids = [p["id"] for p in store.list_patients(100)]
        consenting = [p for p in ids if not store.consent_directives(p)]
        return consenting[0], store.care_team(consenting[0])
    finally:
        store.close()


def _get(host: ServerProcess, patient_id: str, sub: str, role: str) -> httpx.Response:
    return httpx.get(f"{host.url}/v1/patients/{patient_id}/summary", headers=host.headers(sub, role), timeout=30)


def test_the_sidecar_decides_as_the_embedded_engine_would(host: ServerProcess) -> None:
    patient_id, team = _patients(host)
    assert _get(host, patient_id, "dr-grey", "authorized_medical_staff").status_code == 200
    assert _get(host, patient_id, team[0], "nurse").status_code == 200
    off = _get(host, patient_id, "rn-off-team", "nurse")
    assert off.status_code == 403
    assert off.json()["error"]["reasons"] == ["the clinician is not on the patient's care team"]
    registration = _get(host, patient_id, "reg-1", "registration")
    assert registration.status_code == 200
    assert registration.json()["result"]["demographics"]["id"] == patient_id
    status = httpx.get(f"{host.url}/v1/policy", headers=host.headers()).json()
    embedded = RegoPolicyEngine.from_directory(host.settings.policy_dir, timeout_s=5.0)
    try:
        assert status["engine"] == "opa" and status["revision"] == embedded.revision
    finally:
        embedded.close()


def test_stopping_opa_makes_every_request_503_and_none_allowed(host: ServerProcess, sidecar: OpaServer) -> None:
    patient_id, team = _patients(host)
    allowed = [("dr-grey", "authorized_medical_staff"), (team[0], "physician"), ("reg-1", "registration")]
    for sub, role in allowed * 2:  # twice: the second round comes from the decision cache
        assert _get(host, patient_id, sub, role).status_code == 200
    assert httpx.get(f"{host.url}/readyz").status_code == 200

    sidecar.stop()
    # A decision not in the cache goes to OPA, finds it gone, and is refused at once.
    fresh = _get(host, patient_id, "dr-new", "authorized_medical_staff")
    assert fresh.status_code == 503 and fresh.json()["error"]["code"] == "policy_unavailable"
    deadline = time.monotonic() + 5
    while httpx.get(f"{host.url}/readyz").status_code != 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{host.url}/readyz").json()["checks"]["policy"] is False

    statuses = []
    for _ in range(5):
        for sub, role in [*allowed, ("rn-off-team", "nurse"), ("billing-1", "billing")]:
            response = _get(host, patient_id, sub, role)
            statuses.append(response.status_code)
            assert "result" not in response.json() and patient_id not in response.text
    assert set(statuses) == {503}, statuses
    log = host.open_audit()
    try:
        tail = log.records(limit=100_000)[-len(statuses) :]
    finally:
        log.close()
    assert all(r.event.outcome == "policy_unavailable" and r.event.allowed is None for r in tail)
    assert host.alive()
