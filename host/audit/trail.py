"""The audit trail: an append-only, hash-chained table of every invocation attempt.

Each record's hash is sha256 over the previous record's hash followed by the canonical JSON
of all the record's other fields, its sequence number included. Changing, deleting or
reordering a stored record therefore breaks the chain, and `verify()` says where. Deleting
the newest records leaves a shorter chain that still verifies: detecting that needs the
latest hash kept somewhere else.

`append` is durable when it returns (SQLite synchronous=FULL; PostgreSQL synchronous_commit
on), and any failure raises AuditUnavailable, so that a caller who cannot record an access
releases no data. Several processes may append to the same database: each commit reads the
chain's head inside its own write transaction, which is serialised (SQLite's `BEGIN IMMEDIATE`
write lock; PostgreSQL's `pg_advisory_xact_lock(AUDIT_LOCK)`, taken before the head is read),
so there is one chain.

Group commit: the fsync behind a durable commit costs milliseconds, and one commit per
record made every concurrent caller queue behind every other's fsync. Threads appending at
the same time now share one transaction: the first becomes the leader and commits every
record queued so far in one go; the others wait for that commit, and each returns only once
the transaction holding its record is durable. A failed commit fails every record in it.

Between processes on one SQLite file (the server's workers share it), SQLite's busy handler would make
the loser of a race for the write lock sleep for whole milliseconds, growing, before trying
again; commits are instead taken in turn through an advisory file lock beside the database,
polled at a fine grain. SQLite's own lock still decides: the file lock only saves the sleeps.

Records hold the patient id (that is what an audit trail is for) but never a token, a name
or record content: AuditEvent has no field for them.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from host.audit.chain import (
    COLUMNS,
    GENESIS_HASH,
    canonical_json,
    chain_hash,
    check_chain,
    flag_column,
    record_fields,
    record_from_row,
)
from host.config import Settings
from host.errors import AuditUnavailable
from host.store import migrations
from host.store.database import AUDIT_LOCK, READY_TIMEOUT_S, Database, SqliteDatabase, open_database
from host.types import AuditEvent, AuditRecord, VerifyReport

BUSY_TIMEOUT_S = 5.0

SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit"
INSERT = f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


class _Pending:
    """One record waiting for the commit that makes it durable."""

    __slots__ = ("event", "record", "error", "done")

    def __init__(self, event: AuditEvent) -> None:
        self.event = event
        self.record: AuditRecord | None = None
        self.error: AuditUnavailable | None = None
        self.done = False

    def result(self) -> AuditRecord:
        if self.record is None:
            raise self.error or AuditUnavailable("the audit record could not be written")
        return self.record


class AuditLog:
    """The audit table, shared by every thread and process that opens the same database.

    Given a path, the log opens that SQLite file; given a Database, it owns it (closes it on close).
    """

    def __init__(self, database: Database | Path, busy_timeout_s: float = BUSY_TIMEOUT_S, max_batch: int = 256) -> None:
        self.path: Path | None = database if isinstance(database, Path) else getattr(database, "path", None)
        self._display = str(database) if isinstance(database, Path) else database.display
        self._busy_timeout_s = busy_timeout_s
        self._max_batch = max_batch
        self._lock = threading.Lock()  # one commit at a time in this process
        self._queue_lock = threading.Condition(threading.Lock())  # guards the queue and the leader flag
        self._queue: list[_Pending] = []
        self._committing = False
        self._turn_fd: int | None = None
        try:
            self._db = SqliteDatabase(database, busy_timeout_s) if isinstance(database, Path) else database
        except OSError as exc:
            raise self._unavailable("open", exc) from exc
        self._turn_fd = _open_turn_file(self.path) if self.path is not None else None
        try:
            migrations.prepare(self._db)
        except self._db.errors as exc:
            self.close()
            raise self._unavailable("open", exc) from exc
        except BaseException:
            self.close()
            raise

    def append(self, event: AuditEvent) -> AuditRecord:
        """Add one record at the head of the chain; it is on disk when this returns."""
        pending = _Pending(event)
        with self._queue_lock:
            self._queue.append(pending)
        while True:
            with self._queue_lock:
                while not pending.done and self._committing:
                    self._queue_lock.wait()
                if pending.done:
                    return pending.result()
                # No commit is running and ours is not yet written: lead the next one.
                self._committing = True
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                self._commit(batch)
            finally:
                with self._queue_lock:
                    for item in batch:
                        item.done = True
                    self._committing = False
                    self._queue_lock.notify_all()

    def _commit(self, batch: list[_Pending]) -> None:
        """Write `batch` in one durable transaction, or fail every record in it."""
        try:
            with self._lock, self._turn(), self._db.connection() as conn, self._db.transaction(conn, AUDIT_LOCK):
                head = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev_hash = (head[0], head[1]) if head else (0, GENESIS_HASH)
                rows = []
                for item in batch:
                    seq += 1
                    ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    event = item.event
                    fields = record_fields(seq, ts, event, prev_hash)
                    digest = chain_hash(fields)
                    row = {
                        **fields,
                        "allowed": flag_column(event.allowed),
                        "reasons": canonical_json(list(event.reasons)),
                        "policy_revision": event.policy_revision,
                        "input_hash": event.input_hash,
                        "break_glass": int(event.break_glass),
                        "review": int(event.review),
                        "break_glass_reason": event.break_glass_reason,
                        "function_version": event.function_version,
                        "query": event.query,
                    }
                    rows.append([*(row[c] for c in COLUMNS[:-1]), digest])
                    item.record = AuditRecord(seq=seq, timestamp=ts, event=event, prev_hash=prev_hash, hash=digest)
                    prev_hash = digest
                conn.executemany(INSERT, rows)
        except Exception as exc:  # the contract: recorded, or AuditUnavailable and nothing released
            for item in batch:
                item.record, item.error = None, self._unavailable("write to", exc)
                item.error.__cause__ = exc

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn to commit, among the processes appending to the same file."""
        fd = self._turn_fd
        if fd is None:
            yield
            return
        deadline = time.monotonic() + self._busy_timeout_s
        locked = False
        while not locked:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break  # let SQLite's own lock and busy timeout decide
                time.sleep(0.0002)
            except OSError:
                break
        try:
            yield
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def verify(self) -> VerifyReport:
        """Recompute the whole chain in order; report the first record that does not hold."""
        try:
            # A connection of its own, so a long check never holds up appends; its one read
            # transaction sees a single consistent snapshot of the chain.
            with self._db.fresh_connection() as conn, self._db.snapshot(conn):
                return check_chain(iter(conn.execute(f"{SELECT} ORDER BY seq")))
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc

    def records(self, limit: int = 100, after_seq: int = 0) -> list[AuditRecord]:
        """Up to `limit` records with seq greater than `after_seq`, oldest first."""
        return self._read(f"{SELECT} WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))

    def flagged(self, limit: int = 1000, after_seq: int = 0) -> list[AuditRecord]:
        """Up to `limit` records flagged for review (break-the-glass), with seq greater than `after_seq`."""
        return self._read(f"{SELECT} WHERE review = 1 AND seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))

    def concerning(
        self, patient_id: str, since: str, until: str, limit: int = 1000, after_seq: int = 0
    ) -> list[AuditRecord]:
        """Up to `limit` records stamped in [since, until) (the records' own ISO timestamps) that name
        `patient_id`, or name no patient but hold a sealed query (a search may have matched them)."""
        return self._read(
            f"{SELECT} WHERE (patient_id = ? OR (patient_id IS NULL AND query IS NOT NULL))"
            " AND ts >= ? AND ts < ? AND seq > ? ORDER BY seq LIMIT ?",
            (patient_id, since, until, after_seq, limit),
        )

    def of_function(self, function: str, limit: int = 1000, after_seq: int = 0) -> list[AuditRecord]:
        """Up to `limit` records of `function` (e.g. every review disposition), with seq greater than `after_seq`."""
        return self._read(f"{SELECT} WHERE function = ? AND seq > ? ORDER BY seq LIMIT ?", (function, after_seq, limit))

    def head(self) -> tuple[int, str]:
        """The newest record's (seq, hash), or (0, GENESIS_HASH) for an empty trail: what a checkpoint signs."""
        row = self._one("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", ())
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def hash_at(self, seq: int) -> str | None:
        """The stored hash of record `seq` (GENESIS_HASH for 0), or None if there is no such record."""
        if seq == 0:
            return GENESIS_HASH
        row = self._one("SELECT hash FROM audit WHERE seq = ?", (seq,))
        return str(row[0]) if row else None

    def healthy(self) -> bool:
        """True if the audit table answers a trivial query (for readiness checks); never raises."""
        try:
            self._one("SELECT 1 FROM audit LIMIT 1", (), READY_TIMEOUT_S)
        except AuditUnavailable:
            return False
        return True

    def close(self) -> None:
        """Close the database. Appending afterwards raises AuditUnavailable."""
        with self._lock:
            self._db.close()
            self._close_turn_file()

    def _one(self, sql: str, params: tuple[Any, ...], timeout: float | None = None) -> Any:
        try:
            with self._db.connection(timeout) as conn:
                return conn.execute(sql, params).fetchone()
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[AuditRecord]:
        try:
            with self._db.connection() as conn:
                rows = conn.execute(sql, params).fetchall()
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc
        return [record_from_row(row) for row in rows]

    def _close_turn_file(self) -> None:
        if self._turn_fd is not None:
            os.close(self._turn_fd)
            self._turn_fd = None

    def _unavailable(self, action: str, exc: BaseException) -> AuditUnavailable:
        db: Database | None = getattr(self, "_db", None)
        described = db.describe(exc) if db is not None else f"{type(exc).__name__}: {exc}"
        hint = db.advice(exc) if db is not None else "check the file is writable and the disk not full"
        return AuditUnavailable(
            f"could not {action} the audit trail at {self._display} ({described}); "
            f"no data is released until it can be written: {hint}"
        )


def open_audit(settings: Settings) -> AuditLog:
    """The audit trail in the database the settings name (PostgreSQL must be migrated already)."""
    return AuditLog(open_database(settings))


def _open_turn_file(path: Path) -> int | None:
    """The advisory lock file beside the database; None (no lock, only SQLite's) if it cannot be made."""
    try:
        return os.open(path.with_name(path.name + ".audit-turn"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
