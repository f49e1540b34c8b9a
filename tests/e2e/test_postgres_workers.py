"""Three server processes on one PostgreSQL database: 1,000 concurrent calls spread over the workers,
one audit record each, a chain per process, the trail `wardfn audit verify` accepts, and no writer ever
waiting on another: no advisory lock, no lock wait (pg_locks and pg_stat_activity, sampled meanwhile)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from host.store.database import RELAY_LOCK, STORE_WRITE_LOCK
from tests.e2e.server import WARDFN, ServerProcess
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.components

# The check: three host processes, 1,000 invocations, no record missing.
CALLS = 1000


class LockWatch:
    """Samples, on a connection of its own, the advisory locks held and the sessions waiting on a lock.

    A wait on a heavyweight lock (wait_event_type 'Lock': a row, a relation, a transaction id, an
    advisory lock) is what one writer serialised behind another looks like. Two advisory locks are off
    the append path and allowed: the relay's session lock (no broker here anyway), and the store's
    write lock, which a worker still starting takes once as it opens the store (the fixture waits for
    the first worker to answer, not for all three).
    """

    def __init__(self, url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True)
        self.samples = 0
        self.advisory: set[tuple[object, ...]] = set()
        self.waits: set[tuple[object, ...]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        # pg_locks shows a 64-bit advisory key as classid (high 32 bits) and objid (low 32 bits).
        allowed = [key & 0xFFFFFFFF for key in (RELAY_LOCK, STORE_WRITE_LOCK)]
        while not self._stop.wait(0.005):
            for row in self._conn.execute(
                "SELECT l.classid, l.objid, l.mode, l.granted, left(a.query, 80) FROM pg_locks l "
                "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.objid <> ALL(%s::bigint[])",
                (allowed,),
            ):
                self.advisory.add(tuple(row))
            for row in self._conn.execute(
                "SELECT wait_event_type, wait_event, left(query, 60) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ):
                self.waits.add(tuple(row))
            self.samples += 1


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

    assert workers.database_url is not None
    with LockWatch(workers.database_url) as watch, ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(call, range(CALLS)))
    assert set(statuses) <= {200, 403}, statuses  # answered (a consent may refuse), never a 503
    assert watch.samples > 10, "the watch must have looked while the writers ran"
    assert watch.advisory == set(), "an advisory lock was taken while the hosts appended"
    assert watch.waits == set(), "a session waited on a lock another held while the hosts appended"

    log = workers.open_audit()
    try:
        records = log.records(limit=100_000)
    finally:
        log.close()
    assert [r.seq for r in records] == sorted({r.seq for r in records})  # one trail, in seq order, no repeats
    assert len({r.chain for r in records}) >= 3  # a chain per server process at least
    assert sorted(r.event.request_id for r in records if r.event.request_id.startswith("workers-")) == [
        f"workers-{i:04d}" for i in range(CALLS)
    ]
    verified = subprocess.run(
        [str(WARDFN), "audit", "verify"], env=workers.env, capture_output=True, text=True, timeout=120
    )
    assert verified.returncode == 0, verified.stderr
    # verify audits its own read first: one record more than the calls made.
    assert f"audit chains intact: {len(records) + 1} records in" in verified.stdout
