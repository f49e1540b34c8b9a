"""Three server processes on one PostgreSQL database: 1,000 concurrent calls spread over the workers,
one audit record each, one chain that `wardfn audit verify` accepts."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.server import WARDFN, ServerProcess
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.components

# The check: three host processes, 1,000 invocations, one chain with no record missing.
CALLS = 1000


@pytest.fixture(scope="module")
def workers(
    built_functions: list[str], postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    url = postgres_server.create_database()
    try:
        process = ServerProcess(tmp_path_factory.mktemp("workers"), patients=20, database_url=url, WARDFN_WORKERS="3")
        yield process
        process.stop()
    finally:
        postgres_server.drop_database(url)


def test_workers_sharing_one_database_keep_one_audit_chain(workers: ServerProcess) -> None:
    store = workers.open_store()
    try:
        patient_ids = [p["id"] for p in store.list_patients(20)]
    finally:
        store.close()
    headers = workers.headers()

    def call(index: int) -> int:
        patient_id = patient_ids[index % len(patient_ids)]
        with httpx.Client(base_url=workers.url, timeout=60) as client:
            response = client.get(
                f"/v1/patients/{patient_id}/summary?purpose=HPAYMT",
                headers={**headers, "X-Request-ID": f"workers-{index:04d}"},
            )
        return response.status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(call, range(CALLS)))
    assert set(statuses) <= {200, 403}, statuses  # answered (a consent may refuse), never a 503

    log = workers.open_audit()
    try:
        records = log.records(limit=100_000)
    finally:
        log.close()
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert sorted(r.event.request_id for r in records if r.event.request_id.startswith("workers-")) == [
        f"workers-{i:04d}" for i in range(CALLS)
    ]
    verified = subprocess.run(
        [str(WARDFN), "audit", "verify"], env=workers.env, capture_output=True, text=True, timeout=120
    )
    assert verified.returncode == 0, verified.stderr
    # verify audits its own read first: one record more than the calls made.
    assert f"audit chain intact: {len(records) + 1} records verified" in verified.stdout
