"""The AMQP boundary without a broker: URLs printed without passwords, and errors that say what to do."""

from __future__ import annotations

import pytest

from host.audit.broker import AmqpPublisher, Message, redacted
from host.errors import BrokerUnavailable, ConfigurationError
from tests.e2e.server import free_port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqps://relay:s3cret@broker:5671/%2F", "amqps://relay:***@broker:5671/%2F"),
        ("amqp://relay@broker/", "amqp://relay@broker/"),
        ("amqp://broker", "amqp://broker"),
        ("amqps://relay:p%40ss@broker:5671/vh", "amqps://relay:***@broker:5671/vh"),
        ("amqps://relay:s3cret@[broker:5671/vh", "(an unparseable URL)"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_a_closed_port_is_broker_unavailable_without_the_password() -> None:
    publisher = AmqpPublisher(f"amqp://relay:s3cret@127.0.0.1:{free_port()}/%2F", "wardfn.audit", timeout_s=2)

    with pytest.raises(BrokerUnavailable) as refused:
        publisher.publish(Message("audit.record", "1", b"{}"))

    assert "s3cret" not in str(refused.value)
    assert "relay:***@127.0.0.1" in str(refused.value)
    assert "check the broker is running" in str(refused.value)


def test_a_malformed_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as refused:
        AmqpPublisher("amqp://relay:s3cret@broker:notaport/", "wardfn.audit")

    assert "s3cret" not in str(refused.value)
