"""Audit checkpoints with the real server: it signs its chain's head while it runs and closes and signs
it as it stops, and `wardfn audit verify` holds the trail to them."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from host.audit.trail import AuditLog
from host.store.resources import open_store
from tests.e2e.server import WARDFN, ServerProcess

pytestmark = pytest.mark.components


def wardfn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WARDFN), *args], env=env, capture_output=True, text=True, timeout=120)


def checkpoints(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_server_checkpoints_the_last_record_as_it_stops_and_verify_holds_the_trail_to_it(
    built_functions: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # An interval longer than the test: the only checkpoints are the one at start and the one at stop.
    server = ServerProcess(
        tmp_path_factory.mktemp("checkpoints"), patients=10, WARDFN_AUDIT_CHECKPOINT_INTERVAL_S="3600"
    )
    path = server.settings.audit_checkpoint_path
    try:
        # A host that wrote nothing has no chain to sign: it signs an empty list, "a host started", once.
        [started] = checkpoints(path)
        assert started["heads"] == []
        store = open_store(server.settings)
        try:
            patient_ids = [p["id"] for p in store.list_patients(5)]
        finally:
            store.close()
        with httpx.Client(base_url=server.url, headers=server.headers(), timeout=30) as client:
            for patient_id in patient_ids:
                client.get(f"/v1/patients/{patient_id}/summary")
    finally:
        server.stop()
    # uvicorn re-raises the SIGTERM it caught once it has shut down: the exit status says "terminated".
    assert server.process.returncode in (0, -signal.SIGTERM), server.output()

    log = AuditLog(server.database)
    try:
        head = log.head()
        (chain,) = {r.chain for r in log.records()}
    finally:
        log.close()
    assert head[0] == len(patient_ids)
    newest = checkpoints(path)[-1]
    # The last record is covered once the server has stopped, and its chain signed closed.
    assert newest["heads"] == [{"chain": chain, "n": head[0], "hash": head[1], "closed": True}]
    assert set(newest) == {"heads", "ts", "key_id", "sig"}
    for patient_id in patient_ids:
        assert patient_id not in path.read_text()

    verified = wardfn(server.env, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert f"audit chains intact: {head[0] + 1} records in 2 chains verified" in verified.stdout

    with sqlite3.connect(server.database) as db:
        db.execute("DELETE FROM audit WHERE chain = ? AND n > ?", (chain, head[0] - 3))
    db.close()
    broken = wardfn(server.env, "audit", "verify")
    assert broken.returncode == 1
    assert f"covers its record {head[0]}: records were deleted" in broken.stderr
