"""A private RabbitMQ node for tests: Debian's rabbitmq-server, in a temporary directory, on loopback.

The scripts are the ones `make rabbitmq` installs (/usr/lib/rabbitmq/bin), or those in
$WARDFN_RABBITMQ_BIN. The node has its own name, ports, data, logs and Erlang cookie, so it
never meets a system broker or another test run's. Without RabbitMQ the tests that need it
fail, saying how to get it: they are never skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from tests.e2e.server import free_port

FALLBACK_DIRS = (Path("/usr/lib/rabbitmq/bin"), Path("/usr/sbin"))


def rabbitmq_bin() -> Path:
    """The directory holding rabbitmq-server and rabbitmqctl."""
    given = os.environ.get("WARDFN_RABBITMQ_BIN")
    for directory in [Path(given)] if given else FALLBACK_DIRS:
        if os.access(directory / "rabbitmq-server", os.X_OK):
            return directory
    pytest.fail(
        "no rabbitmq-server found (looked in "
        f"{given or ', '.join(str(d) for d in FALLBACK_DIRS)}): run `make rabbitmq` (installs Debian's "
        "rabbitmq-server) or set WARDFN_RABBITMQ_BIN to the directory holding rabbitmq-server"
    )


class RabbitMQServer:
    """A broker node on a free loopback port; `url` is its AMQP URL (user guest, loopback only)."""

    def __init__(self, workdir: Path, tls: TlsFiles | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.tls_port = free_port() if tls is not None else None
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.tls_url = f"amqps://guest:guest@localhost:{self.tls_port}/%2F" if tls is not None else None
        self.tls_ca = tls.ca if tls is not None else None
        home = workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        config = workdir / "rabbitmq.conf"
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "log.console = false",
            "log.file.level = warning",
        ]
        if tls is not None:
            lines += [
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {tls.ca}",
                f"ssl_options.certfile = {tls.cert}",
                f"ssl_options.keyfile = {tls.key}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        config.write_text("\n".join(lines) + "\n")
        plugins = workdir / "enabled_plugins"
        plugins.write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(home),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": f"wardfn-{os.getpid()}-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        }
        self.log_path = workdir / "rabbitmq-server.out"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(rabbitmq_bin() / "rabbitmq-server")], env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> None:
        # Every refused attempt while the node boots would log a traceback into a failing test's report.
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.process.returncode}:\n{self.output()}")
            try:
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
                return
            except pika.exceptions.AMQPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"rabbitmq-server did not accept AMQP within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        logs = sorted((self.workdir / "log").glob("*.log")) if (self.workdir / "log").is_dir() else []
        return "\n".join([self.log_path.read_text(errors="replace"), *(p.read_text(errors="replace") for p in logs)])

    def stop(self) -> None:
        # The start script traps SIGTERM and stops the node gracefully before it exits.
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.workdir / "mnesia", ignore_errors=True)


class TlsFiles:
    """A throwaway CA and a server certificate for `localhost`, as PEM files under `directory`."""

    def __init__(self, directory: Path) -> None:
        from tests.tls import write_ca_and_server_cert

        self.ca, self.cert, self.key = write_ca_and_server_cert(directory, "localhost")


class Consumer:
    """A durable queue bound to every audit message of `exchange`, read with a real pika client."""

    def __init__(self, url: str, exchange: str, queue: str) -> None:
        self.queue = queue
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self._channel = self._connection.channel()
        # Declared as the relay declares it, so either may come first.
        self._channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        self._channel.queue_declare(queue, durable=True)
        self._channel.queue_bind(queue, exchange, routing_key="audit.#")
        self.received: list[Received] = []

    def drain(self, until: Callable[[list[Received]], bool], timeout: float = 120) -> list[Received]:
        """Read messages until `until(received)` holds; fail the test at the deadline."""
        deadline = time.monotonic() + timeout
        while not until(self.received):
            if time.monotonic() >= deadline:
                pytest.fail(f"the queue {self.queue} had {len(self.received)} messages after {timeout} s")
            method, properties, body = self._channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                self._connection.sleep(0.05)
                continue
            self.received.append(Received(method.routing_key, properties.message_id, properties.headers or {}, body))
        return self.received

    def settle(self, quiet_s: float = 0.5) -> list[Received]:
        """Read until the queue has stayed empty for `quiet_s`: what arrives late (a duplicate) is seen."""
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < quiet_until:
            method, properties, body = self._channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                self._connection.sleep(0.05)
                continue
            self.received.append(Received(method.routing_key, properties.message_id, properties.headers or {}, body))
            quiet_until = time.monotonic() + quiet_s
        return self.received

    def close(self) -> None:
        if self._connection.is_open:
            self._connection.close()


@dataclass(frozen=True)
class Received:
    routing_key: str
    message_id: str
    headers: dict[str, Any]
    body: bytes

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document
