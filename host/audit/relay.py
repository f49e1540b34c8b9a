"""The audit relay: streams every audit record, in seq order, to the broker, at least once.

One cursor over every chain: `seq` is the trail's commit order, and `AuditLog.records` never reads
past a seq a running commit may still fill (host/audit/leases.py, `horizon`), so a record committed
late with a lower seq is not skipped. Each message names its chain and place in it (`chain`, `n`),
so a consumer can check every chain's links as it receives them.

The audit table is the outbox (each record is durable before anyone sees it) and the relay a
background thread beside the host's invocations, which never wait on it: it reads the records
after its durable cursor, publishes each with a publisher confirm, and moves the cursor only
past what the broker confirmed. A broker outage therefore loses nothing: the records wait in
the table (`wardfn audit status` shows the backlog) and the relay catches up once the broker is
back, retrying with capped exponential backoff. A record published but not confirmed before a
failure is sent again, so consumers drop duplicates by message id (the record's seq).

Several host processes share one database; only one relay may publish from it, or the cursor
would be moved twice. The leader holds the database's relay lock (an flock beside a SQLite
file, a session advisory lock in PostgreSQL); the others try again now and then, and take
over when the leader's process ends.

Logs are one-line JSON events with seqs and counts, never a record's content.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from host.audit.broker import RECORD_ROUTING_KEY, AmqpCheckpointSink, AmqpPublisher, Message, json_message
from host.audit.relay_cursor import RelayCursor
from host.audit.trail import AuditLog
from host.config import Settings
from host.errors import AuditUnavailable, BrokerUnavailable, ConfigurationError, WardfnError
from host.store.database import RELAY_LOCK, Database, SessionLock, open_database
from host.types import AuditRecord

log = logging.getLogger("wardfn.relay")

RETRY_FIRST_S = 0.1
LOCK_NAME = "audit-relay"


class Publisher(Protocol):
    """What the relay publishes through: AmqpPublisher, or a test's stand-in."""

    def publish(self, message: Message) -> None: ...

    def keepalive(self, seconds: float) -> None: ...

    def close(self) -> None: ...


def record_message(record: AuditRecord) -> Message:
    """An audit record as a message: its seq the message id, its hash in the body and a header."""
    document: dict[str, Any] = {
        "seq": record.seq,
        "ts": record.timestamp,
        "chain": record.chain,
        "n": record.n,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
        **dataclasses.asdict(record.event),
    }
    return json_message(
        RECORD_ROUTING_KEY,
        str(record.seq),
        document,
        seq=record.seq,
        request_id=record.event.request_id,
        hash=record.hash,
        chain=record.chain,
        n=record.n,
    )


class LeaderLock:
    """The database's relay lock (host.database.RELAY_LOCK): an flock beside a SQLite file, a session
    advisory lock in PostgreSQL. Either is dropped when the holder's process ends."""

    def __init__(self, connect: Callable[[], Database]) -> None:
        self._connect = connect
        self._db: Database | None = None
        self._lock: SessionLock | None = None

    def acquire(self) -> bool:
        """True if this holder now leads (or already did); False if another relay does or none can."""
        if self._lock is not None:
            return True
        try:
            if self._db is None:
                self._db = self._connect()
            self._lock = self._db.try_session_lock(RELAY_LOCK, LOCK_NAME)
        except WardfnError as exc:  # the database is unreachable (Unavailable), or was at open (Configuration)
            _event("relay_lock_unavailable", error=type(exc).__name__)
            return False
        return self._lock is not None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._db is not None:
            self._db.close()
            self._db = None


class AuditRelay:
    """The background thread that moves audit records to the broker; start() and stop() it."""

    def __init__(
        self,
        connect: Callable[[], Database],
        publisher: Publisher,
        batch: int = 256,
        poll_s: float = 0.2,
        retry_max_s: float = 10.0,
        leader_retry_s: float = 2.0,
        progress: Callable[[bool, int], None] | None = None,
    ) -> None:
        self._connect = connect
        self.publisher = publisher
        self.batch = batch
        self.poll_s = poll_s
        self.retry_max_s = retry_max_s
        self.leader_retry_s = leader_retry_s
        # Told (leading, backlog) as the relay goes: for metrics; must not raise.
        self._progress = progress or (lambda leading, backlog: None)
        self.published = 0  # messages confirmed by this relay, duplicates after a failure included
        self._lock = LeaderLock(connect)
        self._stop = threading.Event()
        self._drain_until = 0.0
        self._thread: threading.Thread | None = None

    @property
    def leader(self) -> bool:
        """True while this relay holds the database's leader lock."""
        return self._lock.held

    def start(self) -> None:
        """Run in a daemon thread: an exit never waits for a broker that does not answer."""
        self._thread = threading.Thread(target=self._run, name="wardfn-audit-relay", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 2.0) -> None:
        """Publish what can be published within `drain_s`, then stop; the rest waits for the next relay."""
        self._drain_until = time.monotonic() + drain_s
        self._stop.set()
        if self._thread is not None:
            # A publish blocked on a dead connection ends at the publisher's own timeout.
            self._thread.join(drain_s + 15)
            self._thread = None

    def _run(self) -> None:
        while not self._lock.acquire():
            if self._stop.wait(self.leader_retry_s):
                return
        try:
            _event("relay_leader")
            self._lead()
        except Exception as exc:  # the thread must not die silently: the backlog would grow unseen
            _event("relay_failed", error=type(exc).__name__)
            raise
        finally:
            self.publisher.close()
            self._lock.release()
            self._progress(False, 0)

    def _lead(self) -> None:
        reader = cursor = None
        failures = 0
        try:
            while True:
                stopping = self._stop.is_set()
                if stopping and time.monotonic() >= self._drain_until:
                    return
                try:
                    if reader is None:
                        reader = AuditLog(self._connect())
                    if cursor is None:
                        cursor = RelayCursor(self._connect())
                    self._progress(True, reader.head()[0] - cursor.sent_seq())
                    if not self._relay_batch(reader, cursor, stopping):
                        if stopping:
                            return  # drained
                        self._idle()
                    failures = 0
                # ConfigurationError: the database could not be reached to open it (it is back later).
                except (BrokerUnavailable, AuditUnavailable, ConfigurationError) as exc:
                    failures += 1
                    delay = min(self.retry_max_s, RETRY_FIRST_S * 2 ** min(failures - 1, 20))
                    _event(
                        "relay_retry", error=type(exc).__name__, detail=str(exc), failures=failures, retry_in_s=delay
                    )
                    if stopping:
                        return
                    self._stop.wait(delay)  # a stop during the wait still gets one drain attempt
        finally:
            if cursor is not None and reader is not None:
                try:
                    _event("relay_stopped", sent_seq=cursor.sent_seq(), head_seq=reader.head()[0])
                except AuditUnavailable:
                    _event("relay_stopped")
            if cursor is not None:
                cursor.close()
            if reader is not None:
                reader.close()

    def _idle(self) -> None:
        """Wait a poll interval, answering heartbeats if connected; a stop ends the wait."""
        started = time.monotonic()
        self.publisher.keepalive(self.poll_s)  # returns at once when not connected
        rest = self.poll_s - (time.monotonic() - started)
        if rest > 0:
            self._stop.wait(rest)

    def _relay_batch(self, reader: AuditLog, cursor: RelayCursor, stopping: bool) -> bool:
        """Publish the next batch after the cursor; False if there was nothing to publish."""
        sent = cursor.sent_seq()
        records = reader.records(self.batch, after_seq=sent)
        if not records:
            return False
        confirmed = sent
        try:
            for record in records:
                if stopping and time.monotonic() >= self._drain_until:
                    break
                self.publisher.publish(record_message(record))
                confirmed = record.seq
                self.published += 1
        finally:
            # Everything up to `confirmed` was acknowledged, even if a later publish failed.
            if confirmed > sent:
                if cursor.advance(sent, confirmed):
                    _event("relay_published", from_seq=sent + 1, to_seq=confirmed)
                else:
                    _event("relay_cursor_moved", expected=sent)
        return True


def _event(name: str, **fields: Any) -> None:
    log.info(json.dumps({"event": name, **fields}))


def open_relay(settings: Settings, progress: Callable[[bool, int], None] | None = None) -> AuditRelay | None:
    """The relay the settings ask for (WARDFN_AMQP_URL), not yet started; None when no broker is set."""
    url = settings.amqp
    if url is None:
        return None
    publisher = AmqpPublisher(url, settings.amqp_exchange, settings.amqp_ca_file)
    return AuditRelay(
        lambda: open_database(settings),
        publisher,
        batch=settings.amqp_batch,
        retry_max_s=settings.amqp_retry_max_s,
        progress=progress,
    )


def open_checkpoint_sink(settings: Settings) -> AmqpCheckpointSink | None:
    """A sink publishing signed checkpoints to the relay's exchange (`audit.checkpoint`); None without a broker."""
    url = settings.amqp
    if url is None:
        return None
    # A short timeout: the checkpointer asks each sink to return within a second or so.
    return AmqpCheckpointSink(url, settings.amqp_exchange, settings.amqp_ca_file, timeout_s=2.0)
