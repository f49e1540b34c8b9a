"""Fail closed: with the policy engine, the audit trail or the database unable to answer, no patient data
leaves; when the database returns, the host serves again without a restart."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from host.assembly import Host, open_host
from host.auth import issue_dev_token
from host.data.synthetic import seed_store
from host.errors import PolicyUnavailable
from host.http.app import create_app
from host.types import Decision
from tests.conftest import settings_for
from tests.e2e.server import WARDFN, ServerProcess, free_port
from tests.postgres_server import SUPERUSER, PostgresServer

pytestmark = pytest.mark.components


class DownPolicyEngine:
    """A policy engine that cannot answer, as a sidecar that is down would."""

    revision = "down"

    def __init__(self, failure: Exception) -> None:
        self.failure = failure

    def decide(self, policy_input: dict[str, Any]) -> Decision:
        raise self.failure

    def healthy(self) -> bool:
        return False

    def close(self) -> None:
        pass


class InProcessServer:
    """The real app on a loopback port, served by uvicorn in a thread, over a host the test assembled."""

    def __init__(self, host: Host) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        config = uvicorn.Config(create_app(host.settings, host), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(
    params=[PolicyUnavailable("sidecar unreachable"), RuntimeError("engine crashed"), TimeoutError()],
    ids=["unavailable", "crashed", "timed-out"],
)
def host_without_policy(request: pytest.FixtureRequest, built_functions: list[str], tmp_path: Path) -> Iterator[Host]:
    """A host whose policy engine fails as `request.param` says, given to it in place of the real one."""
    built = open_host(settings_for(tmp_path / "wardfn.db"), policy=DownPolicyEngine(request.param))
    try:
        seed_store(built.store, 5, 7)
        yield built
    finally:
        built.close()


def test_policy_engine_that_cannot_answer_means_503_and_no_data(host_without_policy: Host) -> None:
    host = host_without_policy
    patient_id = host.store.list_patients(1)[0]["id"]
    token = issue_dev_token(host.settings, "dr-grey", "authorized_medical_staff")
    server = InProcessServer(host)
    try:
        response = httpx.get(
            f"{server.url}/v1/patients/{patient_id}/summary", headers={"Authorization": f"Bearer {token}"}
        )
        ready = httpx.get(f"{server.url}/readyz")
    finally:
        server.stop()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "policy_unavailable"
    assert "result" not in response.json() and patient_id not in response.text
    assert ready.status_code == 503
    [record] = host.audit.records(limit=10)
    assert record.event.outcome == "policy_unavailable" and record.event.allowed is None


def test_audit_that_cannot_be_written_means_503_and_no_data(built_functions: list[str], tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, patients=5)
    try:
        headers = server.headers()
        patient_id = _first_patient(server.database)
        assert httpx.get(f"{server.url}/v1/patients/{patient_id}/summary", headers=headers).status_code == 200
        with sqlite3.connect(server.database) as db:
            db.execute("ALTER TABLE audit RENAME TO audit_hidden")
        db.close()
        response = httpx.get(f"{server.url}/v1/patients/{patient_id}/summary", headers=headers)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "audit_unavailable"
        assert "result" not in response.json() and patient_id not in response.text
        with sqlite3.connect(server.database) as db:
            db.execute("ALTER TABLE audit_hidden RENAME TO audit")
        db.close()
        assert httpx.get(f"{server.url}/v1/patients/{patient_id}/summary", headers=headers).status_code == 200
        assert server.alive()
    finally:
        server.stop()


PASSWORD = "db-Pa55word-never-shown"


@pytest.fixture()
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own: stopping it must not disturb the session's cluster."""
    server = PostgresServer()
    yield server
    server.stop()


def test_postgresql_lost_while_serving_means_503_then_recovery_without_a_restart(
    built_functions: list[str], tmp_path: Path, own_postgres: PostgresServer
) -> None:
    # The cluster trusts loopback, so the password is never checked: it is there to be kept out of sight.
    url = own_postgres.create_database().replace(f"//{SUPERUSER}@", f"//{SUPERUSER}:{PASSWORD}@")
    server = ServerProcess(tmp_path, patients=5, database_url=url)
    try:
        store = server.open_store()
        try:
            patient_id = store.list_patients(1)[0]["id"]
        finally:
            store.close()
        summary = f"{server.url}/v1/patients/{patient_id}/summary"

        def call(label: str, role: str = "authorized_medical_staff") -> tuple[str, httpx.Response]:
            rid = f"{label}-{uuid.uuid4().hex[:12]}"
            headers = {**server.headers("dr-grey", role), "X-Request-ID": rid}
            return rid, httpx.get(summary, headers=headers, timeout=30)

        answered: list[str] = []
        for label, role, status in [("before", "authorized_medical_staff", 200), ("denied", "nurse", 403)]:
            rid, response = call(label, role)
            assert response.status_code == status, response.text
            answered.append(rid)

        own_postgres.halt("fast")
        lost: list[str] = []
        for _ in range(3):
            rid, response = call("outage")
            lost.append(rid)
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] in ("store_unavailable", "audit_unavailable")
            assert "result" not in response.json() and patient_id not in response.text
            assert PASSWORD not in response.text
            # The database's address is for the operators' log, not for API callers.
            assert f":{own_postgres.port}" not in response.text and "retry shortly" in error["message"]
        ready = httpx.get(f"{server.url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"] is False and ready.json()["checks"]["audit"] is False
        assert server.alive()

        own_postgres.start()
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the host did not become ready again after PostgreSQL returned"
            time.sleep(0.2)
        for _ in range(3):
            rid, response = call("after")
            assert response.status_code == 200, response.text
            assert response.json()["result"]
            answered.append(rid)
        assert server.alive()
    finally:
        server.stop()
    output = server.output()
    assert PASSWORD not in output
    # The outage is in the log as JSON lines, like every other event.
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    detailed = {e["request_id"] for e in events if e.get("event") in ("store_unavailable", "audit_unavailable")}
    assert set(lost) <= detailed  # each 503's detail is logged under its request id
    pool_events = [json.loads(line) for line in output.splitlines() if '"database_pool"' in line]
    assert any("Connection refused" in event["message"] for event in pool_events)
    assert not [line for line in output.splitlines() if "connection" in line.lower() and not line.startswith("{")]

    done = subprocess.run([str(WARDFN), "audit", "verify"], env=server.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    audit = server.open_audit()
    try:
        assert audit.verify().ok
        records = audit.records(limit=1000)
    finally:
        audit.close()
    invocations = [r for r in records if r.event.outcome != "read"]  # not `wardfn audit verify`'s own
    # One record for each call that was answered, none for a call that was not.
    assert sorted(r.event.request_id for r in invocations) == sorted(answered)
    assert not set(lost) & {r.event.request_id for r in records}
    assert [r.event.outcome for r in records if r.event.outcome == "read"] == ["read"]


def test_sqlite_file_moved_away_while_serving_means_503_until_it_is_put_back(
    built_functions: list[str], tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path, patients=5)
    try:
        headers = server.headers()
        patient_id = _first_patient(server.database)
        summary = f"{server.url}/v1/patients/{patient_id}/summary"
        assert httpx.get(summary, headers=headers).status_code == 200
        server.database.rename(tmp_path / "moved.db")
        response = httpx.get(summary, headers=headers)
        assert response.status_code == 503
        assert "result" not in response.json() and patient_id not in response.text
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["store"] is False
        (tmp_path / "moved.db").rename(server.database)
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        assert httpx.get(summary, headers=headers).status_code == 200
        assert server.alive()
    finally:
        server.stop()
    audit = server.open_audit()
    try:
        assert audit.verify().ok
        assert [r.event.outcome for r in audit.records()] == ["ok", "ok"]
    finally:
        audit.close()


def _first_patient(database: Path) -> str:
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT id FROM resources WHERE resource_type = 'Patient' ORDER BY id LIMIT 1").fetchone()
    db.close()
    return str(row[0])
