"""32 concurrent clients, 500 invocations: every answer right, one audit record each, the chain intact."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from host.store.resources import open_store
from tests.e2e.conftest import Patients
from tests.e2e.server import WARDFN, ServerProcess

pytestmark = pytest.mark.components

CLIENTS = 32
INVOCATIONS = 500


def _verify(server: ServerProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WARDFN), "audit", "verify"], env=server.env, capture_output=True, text=True, timeout=120)


def test_concurrent_invocations_are_correct_and_each_audited_once(server: ServerProcess, patients: Patients) -> None:
    store = open_store(server.settings)
    try:
        families = {
            pid: json.loads(store.search(pid, "Patient")[0])["name"][0]["family"] for pid in patients.consenting
        }
    finally:
        store.close()
    work = [(f"conc-{i:04d}", patients.consenting[i % len(patients.consenting)]) for i in range(INVOCATIONS)]
    tokens = [server.headers(f"dr-{i}") for i in range(CLIENTS)]

    def call(item: tuple[int, tuple[str, str]]) -> tuple[str, str, int, dict[str, object]]:
        index, (rid, patient_id) = item
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.get(
                f"/v1/patients/{patient_id}/summary", headers={**tokens[index % CLIENTS], "X-Request-ID": rid}
            )
        return rid, patient_id, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        results = list(pool.map(call, enumerate(work)))

    assert server.alive()
    for rid, patient_id, status, body in results:
        assert status == 200, body
        summary = body["result"]
        assert summary["demographics"]["id"] == patient_id  # type: ignore[index]
        assert summary["demographics"]["name"]["family"] == families[patient_id]  # type: ignore[index]
        assert body["request_id"] == rid

    log = server.open_audit()
    try:
        records = [r for r in log.records(limit=100_000) if r.event.request_id.startswith("conc-")]
    finally:
        log.close()
    assert sorted(r.event.request_id for r in records) == sorted(rid for rid, _ in work)
    assert all(r.event.outcome == "ok" for r in records)

    verified = _verify(server)
    assert verified.returncode == 0, verified.stderr

    victim = records[len(records) // 2].seq
    server.execute("UPDATE audit SET purpose = 'HRESCH' WHERE seq = ?", victim)
    broken = _verify(server)
    assert broken.returncode != 0
    assert f"record {victim}" in broken.stderr + broken.stdout
