"""The audit relay against a real RabbitMQ node: order, ids, confirms before the cursor, outages, one leader."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from host.audit.broker import AmqpCheckpointSink, AmqpPublisher, Message
from host.audit.relay import AuditRelay
from host.audit.relay_cursor import RelayCursor
from host.errors import BrokerUnavailable
from host.types import AuditEvent
from tests.backends import Backend
from tests.rabbitmq_server import Consumer, RabbitMQServer, Received
from tests.tcp_proxy import TcpProxy


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        request_id=f"relay-{i:05d}",
        subject_id="dr-grey",
        role="authorized_medical_staff",
        function="patient_lookup",
        patient_id=f"patient-{i % 7}",
        purpose="TREAT",
        decision_id=f"decision-{i}",
        allowed=True,
        reasons=(),
        outcome="ok",
        latency_ms=1.5,
    )


def _append(database: Backend, count: int, start: int = 0) -> list[str]:
    """Append `count` records; their hashes, in seq order."""
    log = database.audit()
    try:
        return [log.append(_event(start + i)).hash for i in range(count)]
    finally:
        log.close()


def _head(database: Backend) -> int:
    log = database.audit()
    try:
        return log.head()[0]
    finally:
        log.close()


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def _ids(received: list[Received]) -> list[int]:
    return [int(m.message_id) for m in received]


@pytest.fixture
def exchange() -> str:
    return f"wardfn.test.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def consumer(rabbitmq: RabbitMQServer, exchange: str) -> Iterator[Consumer]:
    consumer = Consumer(rabbitmq.url, exchange, f"{exchange}.q")
    yield consumer
    consumer.close()


@pytest.fixture
def cursor(backend: Backend) -> Iterator[RelayCursor]:
    backend.audit().close()  # a SQLite file is migrated when its trail is first opened
    cursor = RelayCursor(backend.database())
    yield cursor
    cursor.close()


def _relay(database: Backend, publisher: object, **options: float) -> AuditRelay:
    relay = AuditRelay(database.database, publisher, poll_s=0.05, retry_max_s=0.5, leader_retry_s=0.1, **options)  # type: ignore[arg-type]
    relay.start()
    return relay


def test_records_reach_a_bound_queue_in_order_with_their_ids_and_hashes(
    backend: Backend, rabbitmq: RabbitMQServer, exchange: str, consumer: Consumer, cursor: RelayCursor
) -> None:
    database = backend
    hashes = _append(database, 40)
    relay = _relay(database, AmqpPublisher(rabbitmq.url, exchange))
    try:
        hashes += _append(database, 30, start=40)  # appended while the relay runs
        received = consumer.drain(lambda r: len(r) >= 70)
        _wait(lambda: cursor.sent_seq() == 70, "the cursor reaches the head")
    finally:
        relay.stop()
    assert _ids(received) == list(range(1, 71))
    for message, digest in zip(received, hashes, strict=True):
        document = message.json()
        assert message.routing_key == "audit.record"
        assert document["hash"] == message.headers["hash"] == digest
        assert document["seq"] == int(message.message_id)
        assert message.headers["request_id"] == document["request_id"] == f"relay-{document['seq'] - 1:05d}"
    assert _head(database) == 70


class FailingAfter:
    """A transport that passes `good` messages to the real publisher, then fails while `down` is set."""

    def __init__(self, inner: AmqpPublisher, good: int) -> None:
        self.inner, self.good, self.down, self.failures = inner, good, True, 0

    def publish(self, message: Message) -> None:
        if self.down and int(message.message_id) > self.good:
            self.failures += 1
            raise BrokerUnavailable("test: the broker took nothing")
        self.inner.publish(message)

    def keepalive(self, seconds: float) -> None:
        self.inner.keepalive(seconds)

    def close(self) -> None:
        self.inner.close()


def test_the_cursor_moves_only_past_confirmed_messages(
    backend: Backend, rabbitmq: RabbitMQServer, exchange: str, consumer: Consumer, cursor: RelayCursor
) -> None:
    database = backend
    _append(database, 20)
    publisher = FailingAfter(AmqpPublisher(rabbitmq.url, exchange), good=7)
    relay = _relay(database, publisher)
    try:
        _wait(lambda: publisher.failures >= 2, "the relay retries after a failed publish")
        assert cursor.sent_seq() == 7  # seq 8 was never confirmed, so the cursor stops before it
        assert _ids(consumer.drain(lambda r: len(r) >= 7)) == list(range(1, 8))
        publisher.down = False
        _wait(lambda: cursor.sent_seq() == 20, "the relay catches up")
    finally:
        relay.stop()
    assert _ids(consumer.drain(lambda r: len(r) >= 20)) == list(range(1, 21))


def test_an_unreachable_broker_loses_nothing(
    backend: Backend, rabbitmq: RabbitMQServer, exchange: str, consumer: Consumer, cursor: RelayCursor
) -> None:
    database = backend
    proxy = TcpProxy(rabbitmq.port)
    relay = _relay(database, AmqpPublisher(f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", exchange, timeout_s=2))
    try:
        _append(database, 10)
        _wait(lambda: cursor.sent_seq() == 10, "the first records are sent")
        proxy.cut()
        _append(database, 50, start=10)
        assert _head(database) - cursor.sent_seq() > 0  # the backlog waits in the audit table
        proxy.resume()
        _wait(lambda: cursor.sent_seq() == 60, "the relay catches up once the broker is back")
    finally:
        relay.stop()
        proxy.cut()
    received = consumer.drain(lambda r: set(_ids(r)) >= set(range(1, 61)))
    assert sorted(set(_ids(received))) == list(range(1, 61))


def test_two_relays_on_one_database_publish_once_and_the_second_takes_over(
    backend: Backend, rabbitmq: RabbitMQServer, exchange: str, consumer: Consumer, cursor: RelayCursor
) -> None:
    database = backend
    relays = [_relay(database, AmqpPublisher(rabbitmq.url, exchange)) for _ in range(2)]
    try:
        _append(database, 100)
        _wait(lambda: cursor.sent_seq() == 100, "the cursor reaches the head")
        assert sorted(r.published for r in relays) == [0, 100]
        assert [r.leader for r in relays].count(True) == 1
        leader, standby = relays if relays[0].leader else relays[::-1]
        leader.stop()
        _append(database, 10, start=100)
        _wait(lambda: cursor.sent_seq() == 110, "the standby takes over")
        assert standby.leader and standby.published == 10
    finally:
        for relay in relays:
            relay.stop()
    consumer.drain(lambda r: len(r) >= 110)
    assert _ids(consumer.settle()) == list(range(1, 111))  # each once: nothing was published twice


def test_amqps_verifies_the_broker_certificate(
    backend: Backend, rabbitmq: RabbitMQServer, exchange: str, consumer: Consumer, cursor: RelayCursor
) -> None:
    assert rabbitmq.tls_url is not None and rabbitmq.tls_ca is not None
    database = backend
    _append(database, 3)
    untrusted = AmqpPublisher(rabbitmq.tls_url, exchange)  # the test CA is not in the system's store
    with pytest.raises(BrokerUnavailable) as refused:
        untrusted.publish(Message("audit.record", "0", b"{}"))
    assert "guest:guest" not in str(refused.value)
    relay = _relay(database, AmqpPublisher(rabbitmq.tls_url, exchange, ca_file=rabbitmq.tls_ca))
    try:
        _wait(lambda: cursor.sent_seq() == 3, "the records are sent over TLS")
    finally:
        relay.stop()
    assert _ids(consumer.drain(lambda r: len(r) >= 3)) == [1, 2, 3]


def test_a_checkpoint_is_published_confirmed_with_its_own_routing_key(
    rabbitmq: RabbitMQServer, exchange: str, consumer: Consumer
) -> None:
    sink = AmqpCheckpointSink(rabbitmq.url, exchange)
    checkpoint = {"head_seq": 42, "head_hash": "ab" * 32, "signature": "c2lnbmVk"}
    try:
        sink.publish(checkpoint)
        sink.publish(checkpoint)  # a retry: the same message id, for the consumer to drop
    finally:
        sink.close()
    received = consumer.drain(lambda r: len(r) >= 2)
    assert {m.routing_key for m in received} == {"audit.checkpoint"}
    assert received[0].message_id == received[1].message_id
    assert received[0].json() == checkpoint


def test_stop_drains_the_backlog_it_can_before_returning(
    backend: Backend, rabbitmq: RabbitMQServer, exchange: str, consumer: Consumer, cursor: RelayCursor
) -> None:
    database = backend
    _append(database, 50)
    relay = _relay(database, AmqpPublisher(rabbitmq.url, exchange))
    relay.stop(drain_s=60)  # as Host.close does, with a deadline generous enough for any machine

    assert cursor.sent_seq() == 50
    assert _ids(consumer.drain(lambda r: len(r) >= 50)) == list(range(1, 51))


def test_stop_with_the_broker_unreachable_leaves_the_backlog_for_the_next_relay(
    backend: Backend, rabbitmq: RabbitMQServer, exchange: str, consumer: Consumer, cursor: RelayCursor
) -> None:
    database = backend
    _append(database, 5)
    proxy = TcpProxy(rabbitmq.port)
    proxy.cut()
    relay = _relay(database, AmqpPublisher(f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", exchange, timeout_s=2))
    relay.stop(drain_s=0.5)
    assert not relay.leader and cursor.sent_seq() == 0

    proxy.resume()
    successor = _relay(database, AmqpPublisher(f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", exchange))
    try:
        _wait(lambda: cursor.sent_seq() == 5, "the next relay sends the backlog")
    finally:
        successor.stop()
        proxy.cut()
    assert _ids(consumer.drain(lambda r: len(r) >= 5)) == [1, 2, 3, 4, 5]
