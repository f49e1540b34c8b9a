"""The audit trail: many append-only, hash-chained chains, one per writer process, read as one.

Each record's hash is sha256 over the previous record's hash in its chain followed by the
canonical JSON of its other fields (host/audit/chain.py): changing, deleting or reordering a
stored record breaks its chain, and `verify()` says where; a deleted tail or a recomputed chain
needs the signed checkpoints (host/audit/checkpoints.py).

A writer (an AuditLog, one per host process) opens a chain of its own at its first append,
leased in `audit_chains` (host/audit/leases.py); every commit checks and renews the lease on that
row, which no other writer touches, so on PostgreSQL the append path takes no advisory lock and
waits on no lock another writer holds. `seq` orders the whole trail in commit order (SQLite:
MAX(seq)+1 under its single writer; PostgreSQL: the sequence `audit_seq`), and readers read only
up to `leases.horizon`. Order matters in `_commit_to_chain`: the write on the chain's row gives
the transaction its id before it takes its seqs, and the rows are written in a subtransaction,
whose id is taken after. See docs/audit.md#many-chains-one-trail.

`append` is durable when it returns, and any failure raises AuditUnavailable, so that a caller
who cannot record an access releases no data; after a failed commit the writer drops its chain
(the outcome may be unknown) and opens another. Group commit: threads appending at once share
one transaction, led by the first; each returns once the transaction holding its record is
durable, and a failed commit fails every record in it. Records hold the patient id but never a
token, a name or record content: AuditEvent has no field for them.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.audit import leases
from host.audit.chain import (
    COLUMNS,
    GENESIS_HASH,
    chain_hash,
    record_fields,
    record_from_row,
    stored_row,
)
from host.audit.turns import Turns
from host.config import Settings
from host.errors import AuditUnavailable
from host.store import migrations
from host.store.database import READY_TIMEOUT_S, Connection, Database, SqliteDatabase, open_database
from host.types import AuditEvent, AuditRecord, ChainHead, VerifyReport

BUSY_TIMEOUT_S = 5.0
# How long a chain stays its writer's without a commit or a renewal (the checkpointer renews it).
LEASE_S = 60.0

SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit"
# Stands, in a reader's parameters, for the highest seq no running commit can still fill (leases.horizon).
HORIZON: Any = object()
INSERT = f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


class _LeaseLost(Exception):
    """The writer's chain was closed, or its lease lapsed: open a new chain."""


@dataclass
class _Chain:
    """The chain this writer appends to, and its head as the writer last committed it."""

    chain: str
    n: int = 0
    hash: str = GENESIS_HASH
    opened: bool = False


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
    A log that only reads never opens a chain.
    """

    def __init__(
        self,
        database: Database | Path,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        max_batch: int = 256,
        lease_s: float = LEASE_S,
    ) -> None:
        self.path: Path | None = database if isinstance(database, Path) else getattr(database, "path", None)
        self._display = str(database) if isinstance(database, Path) else database.display
        self._busy_timeout_s = busy_timeout_s
        self._max_batch = max_batch
        self._lease_s = lease_s
        self._writer = f"{socket.gethostname()}:{os.getpid()}"
        self._chain: _Chain | None = None
        self._renewed_at = 0.0  # monotonic time the lease was last renewed (by a commit or `renew`)
        self.chains: list[str] = []  # every chain this log opened, oldest first (its checkpointer signs them)
        self._lock = threading.Lock()  # one commit at a time in this process
        self._queue_lock = threading.Condition(threading.Lock())  # guards the queue and the leader flag
        self._queue: list[_Pending] = []
        self._committing = False
        self._turns = Turns(self.path, busy_timeout_s)
        try:
            self._db = SqliteDatabase(database, busy_timeout_s) if isinstance(database, Path) else database
        except OSError as exc:
            raise self._unavailable("open", exc) from exc
        try:
            migrations.prepare(self._db)
        except self._db.errors as exc:
            self.close()
            raise self._unavailable("open", exc) from exc
        except BaseException:
            self.close()
            raise

    def append(self, event: AuditEvent) -> AuditRecord:
        """Add one record at the head of this writer's chain; it is on disk when this returns."""
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
            with self._lock:
                try:
                    self._commit_to_chain(batch)
                except _LeaseLost:
                    self._chain = None  # closed under us, or lapsed: a successor chain takes the batch
                    self._commit_to_chain(batch)
        except Exception as exc:  # the contract: recorded, or AuditUnavailable and nothing released
            self._chain = None  # the commit's outcome may be unknown: never guess the head, start afresh
            for item in batch:
                item.record, item.error = None, self._unavailable("write to", exc)
                item.error.__cause__ = exc

    def _commit_to_chain(self, batch: list[_Pending]) -> None:
        chain = self._chain or _Chain(secrets.token_hex(8))
        records: list[AuditRecord] = []
        # Pipelined on PostgreSQL: BEGIN, the settings, the lease and the seqs go out together, then
        # the rows and COMMIT: three round trips (with the pool's liveness check) where each statement
        # alone took ten. The server runs them in order, as sent.
        with (
            self._turns.turn(),
            self._db.connection() as conn,
            conn.pipeline(),
            self._db.transaction(conn, None),
        ):
            # First a write on the chain's own row: it gives the transaction its id before it takes
            # its seqs (the readers' horizon depends on that order).
            renewal = None
            if not chain.opened:
                leases.open_chain(conn, chain.chain, self._writer, self._lease_s)
            else:
                renewal = leases.send_renew(conn, chain.chain, self._lease_s)
            seqs = self._take_seqs(conn, len(batch))  # read: the renewal's answer has come with it
            if renewal is not None and not leases.renewed(renewal):
                raise _LeaseLost(chain.chain)
            n, prev_hash = chain.n, chain.hash
            rows = []
            for item, seq in zip(batch, seqs, strict=True):
                n += 1
                ts = leases.timestamp()
                event = item.event
                fields = record_fields(seq, ts, event, prev_hash, chain.chain, n)
                digest = chain_hash(fields)
                rows.append(stored_row(fields, event, digest))
                records.append(
                    AuditRecord(
                        seq=seq, timestamp=ts, event=event, prev_hash=prev_hash, hash=digest, chain=chain.chain, n=n
                    )
                )
                prev_hash = digest
            if conn.dialect == "sqlite":
                conn.executemany(INSERT, rows)
            else:
                # The rows are written in a subtransaction: its id, taken now, after the seqs, is above
                # that of every transaction that took a lower seq (the readers' horizon relies on it).
                conn.execute("SAVEPOINT audit_rows")
                conn.executemany(INSERT, rows)
                conn.execute("RELEASE SAVEPOINT audit_rows")
        if not chain.opened:
            self.chains.append(chain.chain)
        chain.opened, chain.n, chain.hash = True, n, prev_hash
        self._chain = chain
        self._renewed_at = time.monotonic()
        for item, record in zip(batch, records, strict=True):
            item.record = record

    @staticmethod
    def _take_seqs(conn: Connection, count: int) -> list[int]:
        if conn.dialect == "sqlite":  # the single writer: commit order is the order seqs are taken in
            (top,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()
            return list(range(int(top) + 1, int(top) + 1 + count))
        taken = conn.execute("SELECT nextval('audit_seq') FROM generate_series(1, ?)", (count,)).fetchall()
        return sorted(int(row[0]) for row in taken)

    def renew(self) -> None:
        """Renew this writer's lease if no commit did lately (the checkpointer's tick: an idle writer keeps it)."""
        chain = self._chain
        if chain is None or not chain.opened or time.monotonic() - self._renewed_at < self._lease_s / 4:
            return
        with self._lock:  # never beside this process's own append: both write the chain's row
            if self._chain is not chain:
                return
            try:
                with self._db.connection() as conn, self._db.transaction(conn, None):
                    if not leases.renew(conn, chain.chain, self._lease_s):
                        self._chain = None  # lapsed and closed: the next append opens a successor
                self._renewed_at = time.monotonic()
            except self._db.errors as exc:
                raise self._unavailable("renew a chain's lease in", exc) from exc

    def seal(self) -> None:
        """Close this writer's chain at its head (as it stops); a later append opens a new chain."""
        with self._lock:
            chain, self._chain = self._chain, None
            if chain is None or not chain.opened:
                return
            try:
                with self._db.connection() as conn, self._db.transaction(conn, None):
                    leases.close_at_head(conn, chain.chain)
            except self._db.errors as exc:
                raise self._unavailable("close a chain in", exc) from exc

    def close_lapsed(self) -> list[str]:
        """Close every chain whose writer's lease lapsed, at its head; the chains closed."""
        try:
            return leases.close_lapsed(self._db)
        except self._db.errors as exc:
            raise self._unavailable("close lapsed chains in", exc) from exc

    def verify(self) -> VerifyReport:
        """Recompute every chain (from its archived boundary, if any) and each close; report the first fault."""
        try:
            # A connection of its own, so a long check never holds up appends; its one read
            # transaction sees a single consistent snapshot of the trail.
            with self._db.fresh_connection() as conn, self._db.snapshot(conn):
                return leases.verify(conn, f"{SELECT} ORDER BY chain, n")
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc

    def archived(self) -> dict[str, tuple[int, str]]:
        """Each archived chain's boundary: (n, hash) of its last record archived (host/audit/retention.py)."""
        return {str(c): (int(n), str(h)) for c, n, h in self._one(leases.ARCHIVED, (), many=True)}

    def records(self, limit: int = 100, after_seq: int = 0) -> list[AuditRecord]:
        """Up to `limit` records with seq greater than `after_seq`, in seq (commit) order, oldest first.

        `after_seq` is a cursor over the whole trail: passing the last seq read returns what was
        committed after it, and never skips a record committed later with a lower seq (see `leases.horizon`).
        """
        return self._read(f"{SELECT} WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?", (after_seq, HORIZON, limit))

    def flagged(self, limit: int = 1000, after_seq: int = 0) -> list[AuditRecord]:
        """Up to `limit` records flagged for review (break-the-glass), with seq greater than `after_seq`."""
        return self._read(
            f"{SELECT} WHERE review = 1 AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?", (after_seq, HORIZON, limit)
        )

    def concerning(
        self, patient_id: str, since: str, until: str, limit: int = 1000, after_seq: int = 0
    ) -> list[AuditRecord]:
        """Up to `limit` records stamped in [since, until) (the records' own ISO timestamps) that name
        `patient_id`, or name no patient but hold a sealed query (a search may have matched them)."""
        return self._read(
            f"{SELECT} WHERE (patient_id = ? OR (patient_id IS NULL AND query IS NOT NULL))"
            " AND ts >= ? AND ts < ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (patient_id, since, until, after_seq, HORIZON, limit),
        )

    def of_function(self, function: str, limit: int = 1000, after_seq: int = 0) -> list[AuditRecord]:
        """Up to `limit` records of `function` (e.g. every review disposition), with seq greater than `after_seq`."""
        return self._read(
            f"{SELECT} WHERE function = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (function, after_seq, HORIZON, limit),
        )

    def head(self) -> tuple[int, str]:
        """The newest readable record's (seq, hash) over the whole trail, or (0, GENESIS_HASH) when empty."""
        try:
            with self._db.connection() as conn, self._db.snapshot(conn):
                horizon = leases.horizon(conn)
                row = conn.execute(
                    "SELECT seq, hash FROM audit WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (horizon,)
                ).fetchone()
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def hash_at(self, seq: int) -> str | None:
        """The stored hash of record `seq` (GENESIS_HASH for 0), or None if there is no such record."""
        row = None if seq == 0 else self._one("SELECT hash FROM audit WHERE seq = ?", (seq,))
        return GENESIS_HASH if seq == 0 else str(row[0]) if row else None

    def chain_hash_at(self, chain: str, n: int) -> str | None:
        """The hash of record `n` of `chain` (GENESIS_HASH for 0; kept for an archived boundary), or None."""
        row = None if n == 0 else self._one(leases.HASH_AT, (chain, n, chain, n))
        return GENESIS_HASH if n == 0 else str(row[0]) if row else None

    def chain_heads(self, chains: list[str] | None = None) -> list[ChainHead]:
        """The head of each of `chains` (every chain with a record, or closed, when None): what a checkpoint signs."""
        try:
            with self._db.connection() as conn, self._db.snapshot(conn):
                return leases.chain_heads(conn, chains)
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc

    @property
    def db(self) -> Database:
        """The database this log appends to (for maintenance: partitions, archives)."""
        return self._db

    def healthy(self) -> bool:
        """True if the audit table answers a trivial query (for readiness checks); never raises."""
        try:
            self._one("SELECT 1 FROM audit LIMIT 1", (), READY_TIMEOUT_S)
        except AuditUnavailable:
            return False
        return True

    def close(self) -> None:
        """Close this writer's chain and the database. Appending afterwards raises AuditUnavailable."""
        try:
            self.seal()
        except AuditUnavailable:
            pass  # the chain lapses and another host's checkpointer closes it
        with self._lock:
            self._db.close()
            self._turns.close()

    def _one(self, sql: str, params: tuple[Any, ...], timeout: float | None = None, many: bool = False) -> Any:
        try:
            with self._db.connection(timeout) as conn:
                rows = conn.execute(sql, params)
                return rows.fetchall() if many else rows.fetchone()
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[AuditRecord]:
        """Records read in one snapshot, HORIZON in `params` standing for the readers' horizon in it."""
        try:
            with self._db.connection() as conn, self._db.snapshot(conn):
                horizon = leases.horizon(conn) if HORIZON in params else None
                rows = conn.execute(sql, tuple(horizon if p is HORIZON else p for p in params)).fetchall()
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc
        return [record_from_row(row) for row in rows]

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
    # The checkpointer renews an idle writer's lease each interval: the lease outlasts several.
    return AuditLog(open_database(settings), lease_s=max(LEASE_S, 4 * settings.audit_checkpoint_interval_s))
