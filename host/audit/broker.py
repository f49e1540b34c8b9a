"""Publishing to RabbitMQ with publisher confirms: the only module that knows pika.

A message counts as sent only when the broker has confirmed it (basic.ack in confirm mode),
which for a persistent message routed to a durable queue means the broker has written it to
disk. pika's errors, and the socket's, become BrokerUnavailable here, at one place.

One message is in flight at a time (BlockingChannel waits for each confirm): measured at about
1,200 confirmed messages a second into a durable queue on loopback, ten times the host's
full-path throughput, so pipelining confirms (which pika's blocking API does not offer) was not
worth a second, callback-driven client.

`amqps://` URLs get TLS with certificate and host name verification (the system's trust store,
or the CA file given); the password in a URL is never printed: see `redacted`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

# pika ships inline hints but no py.typed: mypy sees Any (ignore_missing_imports), kept to this module.
import pika
import pika.exceptions

from host.errors import BrokerUnavailable, ConfigurationError

EXCHANGE_TYPE = "topic"
RECORD_ROUTING_KEY = "audit.record"
CHECKPOINT_ROUTING_KEY = "audit.checkpoint"
PERSISTENT = 2  # AMQP delivery mode: written to disk by the broker when routed to a durable queue


@dataclass(frozen=True)
class Message:
    """One message to publish: `message_id` lets consumers drop the duplicates a retry may send."""

    routing_key: str
    message_id: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)


def redacted(url: str) -> str:
    """The URL with any password replaced by `***`, fit for logs and error messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # e.g. a malformed IPv6 host: show nothing of it rather than the password
        return "(an unparseable URL)"
    if password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def json_message(routing_key: str, message_id: str, document: Mapping[str, Any], **headers: Any) -> Message:
    """A message whose body is `document` as compact JSON."""
    body = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return Message(routing_key, message_id, body, headers)


class AmqpPublisher:
    """One connection and confirm-mode channel to the broker, opened on first use and after a failure."""

    def __init__(
        self, url: str, exchange: str, ca_file: Path | None = None, timeout_s: float = 10.0, heartbeat_s: int = 30
    ) -> None:
        # pika logs every failed connection at length (a traceback, with parameters); the relay
        # logs each failure once, as one JSON line, so pika's own are kept for the critical.
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        self.exchange = exchange
        self.broker = redacted(url)
        self._parameters = _parameters(url, ca_file, timeout_s, heartbeat_s)
        self._connection: Any = None
        self._channel: Any = None

    def publish(self, message: Message) -> None:
        """Publish one persistent message; returns once the broker confirmed it, else raises BrokerUnavailable."""
        channel = self._open()
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type="application/json",
            message_id=message.message_id,
            headers=dict(message.headers),
        )
        try:
            # In confirm mode, BlockingChannel.basic_publish returns only after the broker's ack.
            channel.basic_publish(self.exchange, message.routing_key, message.body, properties)
        except pika.exceptions.NackError as exc:
            self.close()
            raise BrokerUnavailable(
                f"the broker at {self.broker} refused a message (nack); it will be retried"
            ) from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise _unavailable(self.broker, "publish to", exc) from exc

    def keepalive(self, seconds: float) -> None:
        """Wait up to `seconds` while answering the broker's heartbeats (idle connections must, or be dropped)."""
        if self._connection is None:
            return
        try:
            self._connection.process_data_events(time_limit=seconds)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise _unavailable(self.broker, "keep the connection to", exc) from exc

    def close(self) -> None:
        """Close the connection if open; never raises (the broker may be gone already)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                pass

    def _open(self) -> Any:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.close()
        try:
            connection = pika.BlockingConnection(self._parameters)
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise _unavailable(self.broker, "connect to", exc) from exc
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.exchange_declare(self.exchange, exchange_type=EXCHANGE_TYPE, durable=True)
        except (pika.exceptions.AMQPError, OSError) as exc:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                pass
            raise _unavailable(self.broker, "open a channel on", exc) from exc
        self._connection, self._channel = connection, channel
        return channel


def _parameters(url: str, ca_file: Path | None, timeout_s: float, heartbeat_s: int) -> Any:
    try:
        parameters = pika.URLParameters(url)
    except (ValueError, pika.exceptions.AMQPError) as exc:
        raise ConfigurationError(
            f"WARDFN_AMQP_URL is not a usable AMQP URL ({redacted(url)}): {type(exc).__name__}"
        ) from exc
    if urlsplit(url).scheme == "amqps":
        # pika's own amqps default leaves out the server name, so the certificate's host would go unchecked.
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        parameters.ssl_options = pika.SSLOptions(context, server_hostname=parameters.host)
    parameters.socket_timeout = timeout_s
    parameters.stack_timeout = timeout_s
    parameters.blocked_connection_timeout = timeout_s
    parameters.heartbeat = heartbeat_s
    parameters.connection_attempts = 1
    return parameters


def _unavailable(broker: str, action: str, exc: BaseException) -> BrokerUnavailable:
    # The type name only: pika's messages can repeat connection parameters.
    return BrokerUnavailable(
        f"could not {action} the broker at {broker} ({type(exc).__name__}); "
        "the relay retries with backoff: check the broker is running and WARDFN_AMQP_URL"
    )


class SupportsAsJson(Protocol):
    def as_json(self) -> Mapping[str, Any]: ...


class AmqpCheckpointSink:
    """Publishes signed audit checkpoints, confirmed, with routing key `audit.checkpoint` (a CheckpointSink).

    A connection of its own: a pika connection belongs to one thread, and the relay's to the relay's.
    The message id is the document's sha256, so a checkpoint published twice is dropped as a duplicate.
    """

    def __init__(self, url: str, exchange: str, ca_file: Path | None = None, timeout_s: float = 10.0) -> None:
        self._publisher = AmqpPublisher(url, exchange, ca_file, timeout_s)
        self._lock = threading.Lock()

    def publish(self, checkpoint: Mapping[str, Any] | SupportsAsJson) -> None:
        """Publish one checkpoint document; returns once the broker confirmed it, else raises BrokerUnavailable."""
        document = checkpoint if isinstance(checkpoint, Mapping) else checkpoint.as_json()
        message = json_message(CHECKPOINT_ROUTING_KEY, "", document)
        digest = hashlib.sha256(message.body).hexdigest()
        with self._lock:
            self._publisher.publish(Message(CHECKPOINT_ROUTING_KEY, f"checkpoint-{digest}", message.body))

    def close(self) -> None:
        with self._lock:
            self._publisher.close()
