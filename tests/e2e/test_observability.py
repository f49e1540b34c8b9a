"""/metrics after real traffic: the histograms move. The logs of a load of invocations over patients with
names: one JSON object a line, with function and outcome, and no name, identifier or record content."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from host.store.consent import consented
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.components


@pytest.fixture(scope="module")
def cold_server(built_functions: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # No prepared instances: every invocation instantiates on the request path, a measured cold start.
    process = ServerProcess(tmp_path_factory.mktemp("observability"), patients=40, WARDFN_PREPARED_INSTANCES="0")
    yield process
    process.stop()


def _samples(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _patients(server: ServerProcess) -> tuple[list[str], list[str], list[str]]:
    """Consenting ids, refusing ids, and every given and family name."""
    store = server.open_store()
    try:
        ids = [p["id"] for p in store.list_patients(1000)]
        names: set[str] = set()
        refusing = []
        for pid in ids:
            patient = json.loads(store.search(pid, "Patient")[0])
            for name in patient["name"]:
                names.add(name["family"])
                names.update(name.get("given", []))
            if not consented([json.loads(c) for c in store.search(pid, "Consent")], "TREAT"):
                refusing.append(pid)
    finally:
        store.close()
    return [p for p in ids if p not in refusing], refusing, sorted(names)


def test_histograms_move_and_logs_hold_no_patient_data(cold_server: ServerProcess) -> None:
    consenting, refusing, names = _patients(cold_server)
    assert consenting and refusing and names
    before = _samples(cold_server)
    headers = cold_server.headers()
    ok = 0
    with httpx.Client(base_url=cold_server.url, timeout=30, headers=headers) as client:
        for _ in range(3):
            for pid in consenting:
                response = client.get(f"/v1/patients/{pid}/summary")
                assert response.status_code == 200
                ok += 1
            for pid in refusing:
                assert client.get(f"/v1/patients/{pid}/summary").status_code == 403
        # Patient data in places a careless host would log: the function name and the arguments.
        family = names[0]
        assert client.post(f"/v1/functions/{family}/invoke", json={"patient_id": consenting[0]}).status_code == 404
        # patient_lookup's schema takes no arguments: refused (422), and the refusal names no value.
        body = {"patient_id": consenting[0], "purpose": "TREAT", "args": {"note": " ".join(names[:5])}}
        refused = client.post("/v1/functions/patient_lookup/invoke", json=body)
        assert refused.status_code == 422 and names[0] not in refused.text
    after = _samples(cold_server)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("wardfn_invocation_duration_seconds_count", function="patient_lookup", outcome="ok") == ok
    assert moved("wardfn_invocation_duration_seconds_sum", function="patient_lookup", outcome="ok") > 0
    assert moved(
        "wardfn_invocation_duration_seconds_count", function="patient_lookup", outcome="policy_denied"
    ) == 3 * len(refusing)
    assert moved("wardfn_invocation_duration_seconds_count", function="unknown", outcome="function_not_found") == 1
    assert moved("wardfn_invocation_duration_seconds_bucket", function="patient_lookup", outcome="ok", le="+Inf") == ok
    assert moved("wardfn_cold_start_duration_seconds_count", function="patient_lookup") == ok
    assert moved("wardfn_instantiate_duration_seconds_count", function="patient_lookup") == ok
    assert moved("wardfn_policy_decisions_total", result="allow") == ok
    assert moved("wardfn_policy_decisions_total", result="deny") == 3 * len(refusing)
    assert moved("wardfn_policy_decision_duration_seconds_count", result="allow") == ok
    # Every attempt is audited: the allowed, the denied, the unknown function and the refused arguments.
    assert moved("wardfn_audit_write_duration_seconds_count") == ok + 3 * len(refusing) + 2
    assert _value(after, "wardfn_audit_backlog") == 0
    assert _value(after, "wardfn_policy_engine_up") == 1
    assert _value(after, "wardfn_instance_pool_target", function="patient_lookup") == 0
    assert _value(after, "wardfn_component_load_duration_seconds_count", function="patient_lookup") == 1
    metrics_text = httpx.get(f"{cold_server.url}/metrics", timeout=10).text
    assert family not in metrics_text and consenting[0] not in metrics_text

    output = cold_server.output()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    invocations = [line for line in lines if line.get("route", "").startswith("/v1/")]
    assert len(invocations) >= ok
    assert all({"request_id", "latency_ms", "status"} <= set(line) for line in invocations)
    assert (
        sum(1 for line in invocations if line.get("function") == "patient_lookup" and line.get("outcome") == "ok") == ok
    )
    assert any(line.get("outcome") == "policy_denied" for line in invocations)
    assert not any("function" in line for line in invocations if line.get("outcome") == "function_not_found")
    for patient_id in consenting + refusing:
        assert patient_id not in output
    for name in names:
        assert not re.search(rf"\b{re.escape(name)}\b", output), "a patient's name reached the logs"
