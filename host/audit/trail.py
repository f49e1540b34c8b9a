"""The audit trail: many append-only, hash-chained chains, one per writer process, read as one.

Each record's hash is sha256 over the previous record's hash in its chain followed by the
canonical JSON of the record's other fields (host/audit/chain.py). Changing, deleting or
reordering a stored record therefore breaks its chain, and `verify()` says where. Deleting a
chain's newest records leaves a shorter chain that still verifies: the signed checkpoints
(host/audit/checkpoints.py) catch that.

Many chains, one trail (issue 17). A writer (an AuditLog, one per host process) opens a chain of
its own at its first append: a row in `audit_chains` with a lease. Every commit renews the lease
on that row, which no other writer touches, and fails if the lease lapsed or the chain was
closed: the writer then opens a new chain and writes there. A chain is closed by its writer as it
stops (`seal`), or by any host's checkpointer once its lease lapsed (`close_lapsed`), and the
close is signed in the next checkpoint. On PostgreSQL the append path therefore takes no
advisory lock and no row lock another writer holds; concurrent commits meet only in
PostgreSQL's own group commit. SQLite has one writer at a time whatever we do (BEGIN IMMEDIATE),
so there the chains only keep the layout the same.

`seq` orders the whole trail in commit order: SQLite's single writer takes MAX(seq)+1;
PostgreSQL takes it from the sequence `audit_seq` (CACHE 1: values rise in time across sessions),
which is not a lock: concurrent nextval calls never wait on one another's transactions. Two
PostgreSQL commits may end in the other order than they took their seqs, so a reader must not
read past a seq a running transaction may still fill. Each append assigns its transaction id
first, then takes its seqs, then stores in each row `settled_xid`, the next transaction id as
its own snapshot saw it. Every seq below a row's was taken by a transaction whose id is below
that row's `settled_xid`; so once the reader's snapshot shows every transaction below it ended,
nothing below that row can still appear. Readers read up to the highest such row (`_horizon`),
a few milliseconds behind the newest commit; a long transaction holding a transaction id on the
same database holds readers (never writers) back until it ends.

`append` is durable when it returns (SQLite synchronous=FULL; PostgreSQL synchronous_commit
on), and any failure raises AuditUnavailable, so that a caller who cannot record an access
releases no data. After a failed commit the writer drops its chain (the commit's outcome may be
unknown) and opens another at its next append; the dropped chain lapses and is closed.

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
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from host.audit.chain import (
    COLUMNS,
    GENESIS_HASH,
    canonical_json,
    chain_hash,
    check_chains,
    describe_chain,
    flag_column,
    record_fields,
    record_from_row,
)
from host.config import Settings
from host.errors import AuditUnavailable
from host.store import migrations
from host.store.database import READY_TIMEOUT_S, Connection, Database, SqliteDatabase, open_database
from host.types import AuditEvent, AuditRecord, ChainHead, VerifyReport

BUSY_TIMEOUT_S = 5.0
# How long a chain stays its writer's without a commit or a renewal (the checkpointer renews it).
LEASE_S = 60.0

SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit"
INSERT = f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
INSERT_SETTLED = (
    f"INSERT INTO audit ({', '.join(COLUMNS)}, settled_xid) VALUES ({', '.join('?' * len(COLUMNS))}, "
    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
)
OPEN_CHAIN = "INSERT INTO audit_chains (chain, writer, opened_at, lease_until) VALUES (?, ?, ?, ?)"
# The lease check and renewal, in the append's own transaction: a writer whose lease lapsed, or whose
# chain was closed, writes nothing.
RENEW = "UPDATE audit_chains SET lease_until = ? WHERE chain = ? AND closed_n IS NULL AND lease_until >= ?"
CHAIN_HEAD = "SELECT n, hash FROM audit WHERE chain = ? ORDER BY n DESC LIMIT 1"
CLOSE = "UPDATE audit_chains SET closed_n = ?, closed_hash = ?, closed_at = ? WHERE chain = ? AND closed_n IS NULL"


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

    @property
    def dialect(self) -> str:
        return self._db.dialect

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
        with self._turn(), self._db.connection() as conn, self._db.transaction(conn, None):
            now = time.time()
            # First a write on the chain's own row: it gives the transaction its id before it takes
            # its seqs (the readers' horizon depends on that order).
            if not chain.opened:
                conn.execute(OPEN_CHAIN, (chain.chain, self._writer, _timestamp(), now + self._lease_s))
            elif conn.execute(RENEW, (now + self._lease_s, chain.chain, now)).rowcount != 1:
                raise _LeaseLost(chain.chain)
            seqs = self._take_seqs(conn, len(batch))
            n, prev_hash = chain.n, chain.hash
            rows = []
            for item, seq in zip(batch, seqs, strict=True):
                n += 1
                ts = _timestamp()
                event = item.event
                fields = record_fields(seq, ts, event, prev_hash, chain.chain, n)
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
                records.append(
                    AuditRecord(
                        seq=seq, timestamp=ts, event=event, prev_hash=prev_hash, hash=digest, chain=chain.chain, n=n
                    )
                )
                prev_hash = digest
            conn.executemany(INSERT if conn.dialect == "sqlite" else INSERT_SETTLED, rows)
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
        """Renew this writer's lease on its chain if no commit renewed it lately (the checkpointer's tick,
        so that an idle writer keeps its chain). Under load the appends renew it and this does nothing."""
        chain = self._chain
        if chain is None or not chain.opened or time.monotonic() - self._renewed_at < self._lease_s / 4:
            return
        with self._lock:  # never beside this process's own append: both write the chain's row
            if self._chain is not chain:
                return
            try:
                with self._db.connection() as conn, self._db.transaction(conn, None):
                    now = time.time()
                    if conn.execute(RENEW, (now + self._lease_s, chain.chain, now)).rowcount != 1:
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
                    head = conn.execute(CHAIN_HEAD, (chain.chain,)).fetchone()
                    n, digest = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
                    conn.execute(CLOSE, (n, digest, _timestamp(), chain.chain))
            except self._db.errors as exc:
                raise self._unavailable("close a chain in", exc) from exc

    def close_lapsed(self) -> list[str]:
        """Close every chain whose writer's lease lapsed, at its head; the chains closed."""
        closed = []
        try:
            with self._db.connection() as conn:
                now = time.time()
                lapsed = conn.execute(
                    "SELECT chain FROM audit_chains WHERE closed_n IS NULL AND lease_until < ? ORDER BY chain", (now,)
                ).fetchall()
                for (chain,) in lapsed:
                    with self._db.transaction(conn, None):
                        # Take the chain's row first: a writer renewing in the meantime wins, and keeps it.
                        mine = conn.execute(
                            "UPDATE audit_chains SET lease_until = lease_until "
                            "WHERE chain = ? AND closed_n IS NULL AND lease_until < ?",
                            (chain, now),
                        ).rowcount
                        if mine != 1:
                            continue
                        head = conn.execute(CHAIN_HEAD, (chain,)).fetchone()
                        n, digest = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
                        conn.execute(CLOSE, (n, digest, _timestamp(), chain))
                    closed.append(str(chain))
        except self._db.errors as exc:
            raise self._unavailable("close lapsed chains in", exc) from exc
        return closed

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
        """Recompute every chain in order, and each closed chain's close; report the first record that does not hold."""
        try:
            # A connection of its own, so a long check never holds up appends; its one read
            # transaction sees a single consistent snapshot of the trail.
            with self._db.fresh_connection() as conn, self._db.snapshot(conn):
                heads: dict[str, tuple[int, int, str]] = {}

                def rows() -> Iterator[tuple[Any, ...]]:
                    for row in conn.execute(f"{SELECT} ORDER BY chain, n"):
                        heads[row[COLUMNS.index("chain")]] = (row[COLUMNS.index("n")], row[0], row[-1])
                        yield row

                report = check_chains(rows())
                if not report.ok:
                    return report
                closes = conn.execute(
                    "SELECT chain, closed_n, closed_hash FROM audit_chains WHERE closed_n IS NOT NULL ORDER BY chain"
                ).fetchall()
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc
        for chain, closed_n, closed_hash in closes:
            n, seq, digest = heads.get(chain, (0, None, GENESIS_HASH))
            if (n, digest) != (closed_n, closed_hash):
                problem = (
                    f"{describe_chain(chain)} was closed at its record {closed_n} but now ends at its record {n}: "
                    + ("records were added after it closed" if n > closed_n else "records were deleted or rewritten")
                )
                return VerifyReport(
                    ok=False, checked=report.checked, first_bad_seq=seq, problem=problem, chains=report.chains
                )
        return report

    def records(self, limit: int = 100, after_seq: int = 0) -> list[AuditRecord]:
        """Up to `limit` records with seq greater than `after_seq`, in seq (commit) order, oldest first.

        `after_seq` is a cursor over the whole trail: passing the last seq read returns what was
        committed after it, and never skips a record committed later with a lower seq (see `_horizon`).
        """
        return self._read_settled(f"{SELECT} WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?", after_seq, limit)

    def flagged(self, limit: int = 1000, after_seq: int = 0) -> list[AuditRecord]:
        """Up to `limit` records flagged for review (break-the-glass), with seq greater than `after_seq`."""
        return self._read_settled(
            f"{SELECT} WHERE review = 1 AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?", after_seq, limit
        )

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
        """The newest readable record's (seq, hash) over the whole trail, or (0, GENESIS_HASH) when empty."""
        try:
            with self._db.connection() as conn, self._db.snapshot(conn):
                horizon = _horizon(conn)
                row = conn.execute(
                    "SELECT seq, hash FROM audit WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (horizon,)
                ).fetchone()
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def hash_at(self, seq: int) -> str | None:
        """The stored hash of record `seq` (GENESIS_HASH for 0), or None if there is no such record."""
        if seq == 0:
            return GENESIS_HASH
        row = self._one("SELECT hash FROM audit WHERE seq = ?", (seq,))
        return str(row[0]) if row else None

    def chain_hash_at(self, chain: str, n: int) -> str | None:
        """The stored hash of record `n` of `chain` (GENESIS_HASH for 0), or None if there is no such record."""
        if n == 0:
            return GENESIS_HASH
        row = self._one("SELECT hash FROM audit WHERE chain = ? AND n = ?", (chain, n))
        return str(row[0]) if row else None

    def chain_heads(self, chains: list[str] | None = None) -> list[ChainHead]:
        """The head of each of `chains` (every chain with a record, or closed, when None): what a checkpoint signs."""
        try:
            with self._db.connection() as conn, self._db.snapshot(conn):
                if chains is None:
                    chains = [
                        str(r[0])
                        for r in conn.execute(
                            "SELECT chain FROM audit_chains UNION SELECT DISTINCT chain FROM audit ORDER BY 1"
                        )
                    ]
                heads = []
                for chain in chains:
                    head = conn.execute(CHAIN_HEAD, (chain,)).fetchone()
                    closed = conn.execute("SELECT closed_n FROM audit_chains WHERE chain = ?", (chain,)).fetchone()
                    n, digest = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
                    heads.append(ChainHead(chain, n, digest, closed=bool(closed and closed[0] is not None)))
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc
        return heads

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
            self._close_turn_file()

    def _one(self, sql: str, params: tuple[Any, ...], timeout: float | None = None) -> Any:
        try:
            with self._db.connection(timeout) as conn:
                return conn.execute(sql, params).fetchone()
        except self._db.errors as exc:
            raise self._unavailable("read", exc) from exc

    def _read_settled(self, sql: str, after_seq: int, limit: int) -> list[AuditRecord]:
        try:
            with self._db.connection() as conn, self._db.snapshot(conn):
                rows = conn.execute(sql, (after_seq, _horizon(conn), limit)).fetchall()
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
    # The checkpointer renews an idle writer's lease each interval: the lease outlasts several.
    return AuditLog(open_database(settings), lease_s=max(LEASE_S, 4 * settings.audit_checkpoint_interval_s))


def _horizon(conn: Connection) -> int:
    """The highest seq up to which no running transaction can still add a record (in this snapshot).

    PostgreSQL: the highest row whose `settled_xid` is at or below the snapshot's oldest running
    transaction id (every transaction below that ended); SQLite's single writer commits in seq order.
    """
    if conn.dialect == "sqlite":
        return 2**62
    (xmin,) = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
    row = conn.execute(
        "SELECT seq FROM audit WHERE settled_xid <= ? ORDER BY seq DESC LIMIT 1", (int(xmin),)
    ).fetchone()
    return int(row[0]) if row else 0


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _open_turn_file(path: Path) -> int | None:
    """The advisory lock file beside the database; None (no lock, only SQLite's) if it cannot be made."""
    try:
        return os.open(path.with_name(path.name + ".audit-turn"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
