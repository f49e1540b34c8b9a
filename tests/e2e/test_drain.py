"""Graceful termination, as Kubernetes does it: SIGTERM while calls are running; every call already
accepted gets its answer (and its audit record), then the host exits cleanly, within the grace
period even when a call would run far past it."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from host.store.resources import open_store
from tests.e2e.server import DATABASES, ServerProcess, on_each_database

pytestmark = pytest.mark.components

CALLS = 6
# A short grace period, and a call that would outlive it many times over.
GRACE_S = 3
SLEEP_S = 60


def _wait_until_running(server: ServerProcess, calls: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            if family.name == "wardfn_instantiate_duration_seconds":
                started = sum(s.value for s in family.samples if s.name.endswith("_count"))
                if started >= calls:
                    return
        time.sleep(0.002)
    raise AssertionError(f"{calls} calls did not start within {timeout} s")


@pytest.fixture(params=DATABASES)
def server(
    request: pytest.FixtureRequest, built_functions: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """On each database: on PostgreSQL the audit records of the drained calls go through the pool,
    which must outlive them."""
    # No prepared instances: each call instantiates when it starts, which /metrics counts, so the
    # test knows when every call is inside its sandbox before it sends the signal.
    yield from on_each_database(
        request,
        lambda url: ServerProcess(
            tmp_path_factory.mktemp("drain"), patients=10, database_url=url, WARDFN_PREPARED_INSTANCES="0"
        ),
    )


def test_sigterm_drains_in_flight_calls(server: ServerProcess) -> None:
    store = open_store(server.settings)
    try:
        patient_id = store.list_patients(1)[0]["id"]
    finally:
        store.close()
    headers = server.headers()

    ready = threading.Barrier(CALLS + 1)

    def call(index: int) -> str:
        body = {"patient_id": patient_id, "purpose": "TREAT", "args": {"mode": "loop"}}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            client.get("/healthz")  # the connection is open before the signal
            ready.wait()
            try:
                response = client.post(
                    "/v1/functions/hostile/invoke", json=body, headers={"X-Request-ID": f"drain-{index:04d}"}
                )
            except httpx.HTTPError as exc:
                return f"cut off: {type(exc).__name__}"
        return str(response.status_code)

    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        futures = [pool.submit(call, i) for i in range(CALLS)]
        ready.wait()
        _wait_until_running(server, CALLS)  # each call is now in its 200 ms endless loop
        server.process.terminate()
        outcomes = [f.result() for f in futures]
    # uvicorn re-raises the SIGTERM it caught once it has shut down: the exit status says "terminated".
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert outcomes == ["504"] * CALLS  # each ran to its deadline and was answered, none cut off
    log = server.open_audit()
    try:
        audited = [r for r in log.records(limit=1000) if r.event.request_id.startswith("drain-")]
    finally:
        log.close()
    assert len(audited) == CALLS


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def worker_processes(request: pytest.FixtureRequest) -> int:
    """One server process, or two under uvicorn's supervisor (which passes SIGTERM on to each)."""
    return int(request.param)


@pytest.fixture(params=DATABASES)
def sleeping_server(
    request: pytest.FixtureRequest,
    worker_processes: int,
    built_functions: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """A server whose hostile calls may block for a minute: a blocked call is waited for 60 s past
    the manifest's 200 ms deadline before it would be answered 504, far longer than the grace period."""
    yield from on_each_database(
        request,
        lambda url: ServerProcess(
            tmp_path_factory.mktemp("drain-sleep"),
            patients=10,
            database_url=url,
            WARDFN_WORKERS=str(worker_processes),
            WARDFN_SHUTDOWN_GRACE_S=str(GRACE_S),
            WARDFN_DEADLINE_MARGIN_MS=str(SLEEP_S * 1000),
            WARDFN_PREPARED_INSTANCES="0",
        ),
    )


def test_sigterm_answers_a_call_that_would_outlive_the_grace_period(sleeping_server: ServerProcess) -> None:
    server = sleeping_server
    store = open_store(server.settings)
    try:
        patient_id = store.list_patients(1)[0]["id"]
    finally:
        store.close()
    body = {"patient_id": patient_id, "purpose": "TREAT", "args": {"mode": "sleep", "seconds": SLEEP_S}}

    def call() -> httpx.Response | str:
        # The client would wait longer than the host is given to stop: only the host ends this call.
        with httpx.Client(base_url=server.url, headers=server.headers(), timeout=GRACE_S + 30) as client:
            try:
                return client.post("/v1/functions/hostile/invoke", json=body, headers={"X-Request-ID": "drain-sleep"})
            except httpx.HTTPError as exc:
                return f"cut off: {type(exc).__name__}"

    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(call)
        _wait_until_running(server, 1)  # inside its sandbox, blocked in a WASI sleep
        signalled = time.monotonic()
        server.process.terminate()
        response = answer.result()
        assert server.process.wait(timeout=GRACE_S + 10) in (0, -signal.SIGTERM)
    assert time.monotonic() - signalled < GRACE_S + 10
    assert isinstance(response, httpx.Response), response  # answered, not cut off
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "function_unavailable"
    assert "shutting down" in server.output()  # why, in the operators' log under the request id
    log = server.open_audit()
    try:
        audited = [r.event for r in log.records(limit=1000) if r.event.request_id == "drain-sleep"]
    finally:
        log.close()
    assert [(e.function, e.outcome) for e in audited] == [("hostile", "function_unavailable")]
