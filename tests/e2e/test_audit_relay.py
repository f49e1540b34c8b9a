"""The audit relay in the real server: the broker goes away during 500 invocations, and no record is lost.

The server reaches RabbitMQ through a loopback proxy the test cuts and restores. After recovery
the consumer has every record id, once each after dropping duplicates by message id, and
`wardfn audit status` showed the backlog during the outage and none after.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from host.audit.checkpoints import load_verification_key, signature_holds
from host.audit.trail import AuditLog
from host.types import ChainHead, Checkpoint
from tests.e2e.conftest import Patients
from tests.e2e.server import WARDFN, ServerProcess
from tests.rabbitmq_server import Consumer, RabbitMQServer, Received
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.components

CLIENTS = 32
INVOCATIONS = 500


@pytest.fixture(scope="module")
def exchange() -> str:
    return f"wardfn.e2e.{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def consumer(rabbitmq: RabbitMQServer, exchange: str) -> Iterator[Consumer]:
    consumer = Consumer(rabbitmq.url, exchange, f"{exchange}.q")  # bound before the server publishes anything
    yield consumer
    consumer.close()


@pytest.fixture(scope="module")
def proxy(rabbitmq: RabbitMQServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(rabbitmq.port)
    yield proxy
    proxy.cut()


@pytest.fixture(scope="module")
def server(
    built_functions: list[str],
    tmp_path_factory: pytest.TempPathFactory,
    proxy: TcpProxy,
    exchange: str,
    consumer: Consumer,
) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("relay-server"),
        WARDFN_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F",
        WARDFN_AMQP_EXCHANGE=exchange,
        WARDFN_AMQP_RETRY_MAX_S="1",
    )
    yield process
    process.stop()


def _status(server: ServerProcess) -> dict[str, Any]:
    done = subprocess.run(
        [str(WARDFN), "audit", "status", "--json"], env=server.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def _gauge(server: ServerProcess, name: str) -> float:
    """One unlabelled gauge from the server's /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    values = [float(line.split()[1]) for line in text.splitlines() if line.startswith(f"{name} ")]
    assert len(values) == 1, f"{name} is not exported once"
    return values[0]


def _records(received: list[Received]) -> list[Received]:
    return [m for m in received if m.routing_key == "audit.record"]


def _checkpoint_of(message: Received, digest: str) -> Checkpoint | None:
    """The checkpoint `message` carries if it signs, as a closed chain's head, the record whose hash is `digest`."""
    if message.routing_key != "audit.checkpoint":
        return None
    document = message.json()
    heads = tuple(ChainHead(**head) for head in document["heads"])
    if not any(head.hash == digest and head.closed for head in heads):
        return None
    return Checkpoint(heads, document["ts"], document["key_id"], document["sig"])


def _wait(condition: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def test_a_broker_outage_during_500_invocations_loses_no_record(
    server: ServerProcess, patients: Patients, consumer: Consumer, proxy: TcpProxy
) -> None:
    tokens = [server.headers(f"dr-{i}") for i in range(CLIENTS)]
    finished = 0
    counting = threading.Lock()

    def call(index: int) -> tuple[str, int]:
        nonlocal finished
        rid = f"relay-{index:04d}"
        patient_id = patients.consenting[index % len(patients.consenting)]
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.get(
                f"/v1/patients/{patient_id}/summary", headers={**tokens[index % CLIENTS], "X-Request-ID": rid}
            )
        with counting:
            finished += 1
        return rid, response.status_code

    # The relay is connected and streaming before the outage.
    assert call(9999)[1] == 200
    consumer.drain(lambda r: len(_records(r)) >= 1)
    assert _status(server)["relay_configured"] is True

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [pool.submit(call, i) for i in range(INVOCATIONS)]
        _wait(lambda: finished >= 1 + 100, "100 invocations")
        proxy.cut()
        _wait(lambda: finished >= 1 + 400, "400 invocations")
        during = _status(server)
        _wait(lambda: _gauge(server, "wardfn_audit_relay_backlog") > 0, "the backlog shows in /metrics")
        proxy.resume()
        results = [f.result() for f in futures]

    assert server.alive()
    assert [status for _, status in results] == [200] * INVOCATIONS  # the outage failed no invocation
    assert during["backlog"] > 0, during

    _wait(lambda: _status(server)["backlog"] == 0, "the relay catches up")
    _wait(lambda: _gauge(server, "wardfn_audit_relay_backlog") == 0, "/metrics shows the backlog drained")
    assert _gauge(server, "wardfn_audit_relay_leader") == 1  # one process: its relay leads
    after = _status(server)
    head = after["head_seq"]
    assert after["sent_seq"] == head

    consumer.drain(lambda r: {int(m.message_id) for m in _records(r)} >= set(range(1, head + 1)))
    received = _records(consumer.settle())
    unique = {int(m.message_id): m for m in received}  # what a consumer keeps after dropping duplicates
    assert sorted(unique) == list(range(1, head + 1))

    log = AuditLog(Path(server.database))
    try:
        records = log.records(limit=head)
    finally:
        log.close()
    assert [(r.seq, r.hash) for r in records] == [(seq, unique[seq].json()["hash"]) for seq in range(1, head + 1)]
    request_ids = {m.json()["request_id"] for m in unique.values()}
    assert {rid for rid, _ in results} <= request_ids

    # A graceful stop closes the relay with the host (Host.close), the cursor at the head.
    server.stop()
    relay_lines = [line for line in server.output().splitlines() if '"event": "relay_' in line]
    stopped = [json.loads(line) for line in relay_lines if '"relay_stopped"' in line]
    assert stopped == [{"event": "relay_stopped", "sent_seq": head, "head_seq": head}], relay_lines[-5:]
    assert any('"relay_retry"' in line for line in relay_lines)
    # The relay's log lines are counts and seqs: no patient appears in them.
    assert not [line for line in relay_lines if any(pid in line for pid in patients.consenting)]

    # The checkpoint the host signed as it stopped went to the stream too, on its own routing key.
    last = records[-1].hash
    checkpoints = consumer.drain(lambda r: any(_checkpoint_of(m, last) for m in r))
    final = next(c for c in (_checkpoint_of(m, last) for m in checkpoints) if c is not None)
    public_key = load_verification_key(server.settings)
    assert public_key is not None and signature_holds(final, public_key)
    (signed,) = [h for h in final.heads if h.hash == last]
    assert (signed.chain, signed.n, signed.closed) == (records[-1].chain, records[-1].n, True)
