"""The database behind the store and the audit trail: an embedded SQLite file, or PostgreSQL.

This module alone knows the drivers. It connects (a sqlite3 connection per thread; a psycopg
pool), hides the dialect differences the services meet (placeholders, write transactions,
post-erasure clean-up) and names the driver errors a service must translate. Services write
their SQL once, with `?` placeholders and syntax both engines accept (`ON CONFLICT`, `INTERSECT`).

`WARDFN_DATABASE_URL=postgresql://...` selects PostgreSQL; unset, the SQLite file at
`WARDFN_DATABASE` (or `WARDFN_HOME/wardfn.db`). A URL's password never leaves this module: every
message names the database by `display`, which redacts it.

Long because it is the one driver module: both engines' connections, transactions, locks and
error translation sit side by side so that no other module imports sqlite3 or psycopg, and a
difference between the two is visible in one file.
"""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from host.errors import ConfigurationError, Unavailable

if TYPE_CHECKING:
    # Imported where PostgreSQL is opened, not here: a host (or a tool) on SQLite never pays for
    # the driver's import (about 100 ms of every process start).
    import psycopg

    from host.config import Settings

Dialect = Literal["sqlite", "postgresql"]
BUSY_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5
# How long a call waits for a pooled PostgreSQL connection. Short: with the server down the pool
# has none to give, and a caller should get its 503 in seconds, not after its own client gave up.
CHECKOUT_TIMEOUT_S = 2.0
# The readiness probe's wait: a probe must answer well inside its own timeout (a second or two).
READY_TIMEOUT_S = 1.0
# How long the pool keeps retrying one lost connection (backing off) before giving the slot up; a
# later checkout then connects afresh at once. Short, so that when the server returns after a long
# outage the host is serving again within seconds, not after a backoff grown to minutes.
RECONNECT_TIMEOUT_S = 5.0
POOL_SIZE = 10
# Keys of pg_advisory_xact_lock: each serialises one kind of write among every host on the database.
# Arbitrary constants, fixed forever, so that hosts of different versions take the same locks.
STORE_WRITE_LOCK = 0x77617264_0001
AUDIT_LOCK = 0x77617264_0002  # taken by audit appends before issue 17 (one chain); no longer on the append path
MIGRATE_LOCK = 0x77617264_0003
# Held for a session, not a transaction: the one audit relay that may publish from this database.
RELAY_LOCK = 0x77617264_0004


class SessionLock(Protocol):
    """An exclusive lock held until released or until its holder's process (or connection) ends."""

    def release(self) -> None: ...


class DatabaseClosed(Exception):
    """Raised when a closed database is used (the host is shutting down)."""


class DatabaseFileLost(OSError):
    """The SQLite file was removed or replaced while the host had it open."""


class Rows(Protocol):
    """What a statement returns, in either driver."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection:
    """One driver connection, taking SQL written with `?` placeholders."""

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw = raw
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        if self.dialect == "sqlite":
            return self.raw.execute(sql, params)  # type: ignore[no-any-return]
        return self.raw.execute(_pg_sql(sql), params)  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.dialect == "sqlite":
            self.raw.executemany(sql, rows)
            return
        with self.raw.cursor() as cursor:
            cursor.executemany(_pg_sql(sql), list(rows))

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """PostgreSQL's pipeline mode: the statements go out together, in order, without a round trip
        each; a statement's result is waited for when it is read (a `rowcount` once a later result has
        been read, or the block has ended). SQLite runs each statement as it comes."""
        if self.dialect == "sqlite":
            yield
            return
        with self.raw.pipeline():
            yield


@functools.lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    # Our SQL holds no literal `?` or `%`: placeholders are the only ones.
    return sql.replace("%", "%%").replace("?", "%s")


class Database(Protocol):
    """A database the store and the audit trail can share the code of."""

    dialect: Dialect
    display: str  # for messages: the file's path, or the URL without its password
    hint: str  # what to check when it cannot be reached
    errors: tuple[type[BaseException], ...]  # driver errors, to be translated by the caller

    def connection(self, timeout: float | None = None) -> Any: ...  # a context manager yielding a Connection

    def fresh_connection(self) -> Any: ...  # the same, never shared with other calls

    def snapshot(self, conn: Connection) -> Any: ...  # a read-only transaction seeing one state

    def transaction(self, conn: Connection, lock: int | None) -> Any: ...  # a write transaction, serialised by `lock`

    def purge_deleted(self, conn: Connection, table: str) -> None: ...

    def describe(self, exc: BaseException) -> str: ...  # a driver error as one line: no values, no password

    def advice(self, exc: BaseException) -> str: ...  # what to do about a driver error

    def try_session_lock(self, key: int, name: str) -> SessionLock | None: ...  # None: another holds it

    def close(self) -> None: ...


class SqliteDatabase:
    """The embedded file: a connection per thread, WAL mode, synchronous=FULL, secure_delete."""

    dialect: Dialect = "sqlite"
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, DatabaseClosed)

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.display = str(path)
        self.hint = "check that the file and its directory exist and are readable and writable, and the disk not full"
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file first opened
        path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Connection]:
        # `timeout` is for pooled connections: a file is opened at once or not at all.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(shared=True)
            self._local.conn = conn
        else:
            self._check_file()
        yield Connection(conn, "sqlite")

    @contextmanager
    def fresh_connection(self) -> Iterator[Connection]:
        """A connection of its own, closed afterwards (a long read that must not hold up others)."""
        conn = self._connect(shared=False)
        try:
            yield Connection(conn, "sqlite")
        finally:
            conn.close()

    @contextmanager
    def snapshot(self, conn: Connection) -> Iterator[None]:
        conn.raw.execute("BEGIN")
        try:
            yield
        finally:
            conn.raw.execute("COMMIT")

    @contextmanager
    def transaction(self, conn: Connection, lock: int | None) -> Iterator[None]:
        # SQLite has one writer at a time: BEGIN IMMEDIATE takes the write lock up front, so a
        # transaction never fails half-way for want of it. `lock` is PostgreSQL's business.
        conn.raw.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.raw.execute("COMMIT")
        except BaseException:
            if conn.raw.in_transaction:
                conn.raw.execute("ROLLBACK")
            raise

    def purge_deleted(self, conn: Connection, table: str) -> None:
        # secure_delete zeroed the deleted bytes in the new pages; the checkpoint moves them into
        # the file and empties the WAL, which still held the old pages.
        conn.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def describe(self, exc: BaseException) -> str:
        # sqlite3 messages name tables and constraints, never bound values.
        return f"{type(exc).__name__}: {exc}"

    def advice(self, exc: BaseException) -> str:
        if isinstance(exc, DatabaseFileLost):
            return "put the file back where it was, or restart the host to open the file now there"
        return self.hint

    def try_session_lock(self, key: int, name: str) -> SessionLock | None:
        """An flock on `<file>.<name>` beside the database: the OS drops it when the holder dies."""
        try:
            fd = os.open(self.path.with_name(f"{self.path.name}.{name}"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise Unavailable(f"cannot take the {name} lock beside {self.display} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return _FileLock(fd)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def _connect(self, shared: bool) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise DatabaseClosed("the database is closed")
            if self._identity is not None:
                self._check_file()  # before connecting, which would make a new, empty file there
            # Autocommit mode: transactions are begun explicitly. check_same_thread=False only so
            # that close() may close it from another thread; each thread uses its own.
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # Durable when COMMIT returns (the audit trail's promise).
                conn.execute("PRAGMA synchronous=FULL")
                # Deleted content (an erased patient's key) is overwritten, not left in free pages.
                conn.execute("PRAGMA secure_delete=ON")
            except sqlite3.Error:
                conn.close()
                raise
            if self._identity is None:
                stat = os.stat(self.path)
                self._identity = (stat.st_dev, stat.st_ino)
            if shared:
                self._connections.append(conn)
        return conn

    def _check_file(self) -> None:
        """Refuse to go on with a file that is no longer the one at `path`.

        An open SQLite connection goes on reading and writing its file after the file is deleted or
        renamed away: audit records would be durable only in an orphan no one will read. The
        database has no server to lose, but its file can be lost this way. One stat per call.
        """
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise DatabaseFileLost("the file was removed while the host had it open") from None
        if (stat.st_dev, stat.st_ino) != self._identity:
            raise DatabaseFileLost("the file was replaced while the host had it open")


class PostgresDatabase:
    """PostgreSQL through a psycopg connection pool; autocommit, transactions explicit."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, pool_size: int = POOL_SIZE, lock_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        import psycopg
        import psycopg_pool

        self.errors: tuple[type[BaseException], ...] = (
            psycopg.Error,
            psycopg_pool.PoolTimeout,
            OSError,
            DatabaseClosed,
        )
        self.display = redact(url)
        self._url = url
        self._lock_timeout_ms = max(1, int(lock_timeout_s * 1000))
        self._secret = _password(url)
        self.hint = (
            "check that PostgreSQL is running and reachable there, that the database exists, "
            "and that WARDFN_DATABASE_URL's user, password and sslmode are right"
        )
        # One connection first, to fail at start with the server's own reason (the pool would
        # only time out), then the pool.
        try:
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
        except psycopg.Error as exc:
            raise ConfigurationError(
                f"cannot connect to the database at {self.display} ({self.describe(exc)}): {self.hint}"
            ) from None
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S, **_liveness_defaults(url)},
            timeout=CHECKOUT_TIMEOUT_S,
            reconnect_timeout=RECONNECT_TIMEOUT_S,
            open=True,
            name="wardfn",
        )

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Connection]:
        """A pooled connection known to answer, returned to the pool afterwards (replaced if it broke)."""
        if self._pool.closed:
            raise DatabaseClosed("the database is closed")
        raw = self._checkout(CHECKOUT_TIMEOUT_S if timeout is None else timeout)
        try:
            with raw:  # as the pool's own connection(): roll back on error, then give it back
                yield Connection(raw, "postgresql")
        finally:
            self._pool.putconn(raw)

    def _checkout(self, timeout: float) -> psycopg.Connection[Any]:
        """A connection from the pool that has just answered an empty query.

        Idle connections do not notice the server going away: after PostgreSQL restarts, every one
        in the pool is dead, and the first statement on each would fail. Each checkout therefore
        checks its connection (one round trip); on the first dead one, every idle connection is
        checked and the dead replaced, then one fresh checkout is tried. The pool's own `check=`
        option is not used: it sleeps a backoff (a second, then two...) after each dead connection.
        """
        import psycopg
        import psycopg_pool

        deadline = time.monotonic() + timeout
        raw = self._pool.getconn(timeout)
        try:
            psycopg_pool.ConnectionPool.check_connection(raw)
            return raw
        except psycopg.Error:
            self._pool.putconn(raw)  # broken, so closed: the pool discards it and connects anew
        # Whatever killed one idle connection (a restart, a dropped network) killed the others.
        self._pool.check()
        raw = self._pool.getconn(max(0.001, deadline - time.monotonic()))
        try:
            psycopg_pool.ConnectionPool.check_connection(raw)
        except BaseException:
            self._pool.putconn(raw)
            raise
        return raw

    fresh_connection = connection

    @contextmanager
    def snapshot(self, conn: Connection) -> Iterator[None]:
        with conn.raw.transaction():
            conn.raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    @contextmanager
    def transaction(self, conn: Connection, lock: int | None) -> Iterator[None]:
        with conn.raw.transaction():
            # Waiting for longer fails (fail closed), as SQLite's busy timeout does.
            conn.raw.execute(f"SET LOCAL lock_timeout = {self._lock_timeout_ms}")
            if lock is not None:
                # Writers of one kind (store writes, migrations) take turns among every host on the
                # database, as SQLite's single writer does: read-then-insert stays consistent. Audit
                # appends pass None: each writer has a chain of its own (host/audit/trail.py).
                conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            # Durable when COMMIT returns, whatever the server's default.
            conn.raw.execute("SET LOCAL synchronous_commit = on")
            yield

    def purge_deleted(self, conn: Connection, table: str) -> None:
        # Deleted rows stay in the table's pages until vacuumed; VACUUM frees them now. (Copies can
        # remain in WAL segments until they are recycled: the wrapped key is useless without the KEK.)
        conn.raw.execute(f"VACUUM {table}")

    def close(self) -> None:
        self._pool.close()

    def try_session_lock(self, key: int, name: str) -> SessionLock | None:
        """pg_try_advisory_lock on a connection of its own, outside the pool: the server drops the
        lock when that connection ends, as when its holder's process dies."""
        import psycopg

        try:
            conninfo = psycopg.conninfo.make_conninfo(self._url, **_liveness_defaults(self._url))
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            raise Unavailable(f"cannot take the {name} lock at {self.display} ({self.describe(exc)})") from None
        try:
            (taken,) = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() or (False,)
        except psycopg.Error as exc:
            conn.close()
            raise Unavailable(f"cannot take the {name} lock at {self.display} ({self.describe(exc)})") from None
        if not taken:
            conn.close()
            return None
        return _ConnectionLock(conn)

    def describe(self, exc: BaseException) -> str:
        """A driver error as words fit for a log: no bound values, no password."""
        import psycopg

        if isinstance(exc, psycopg.Error):
            sqlstate = exc.sqlstate or ""
            # Data and integrity errors (classes 22, 23) quote the values involved: patient data.
            if sqlstate[:2] in ("22", "23"):
                return f"{type(exc).__name__}, SQLSTATE {sqlstate}"
            text = (exc.diag.message_primary if exc.sqlstate else None) or str(exc)
        else:
            text = str(exc)
        text = " ".join(text.split())
        if self._secret:
            text = text.replace(self._secret, "***")
        return f"{type(exc).__name__}: {text}"

    def advice(self, exc: BaseException) -> str:
        """What to do about a driver error: only a lost or refused connection means the server is away."""
        import psycopg

        sqlstate = (exc.sqlstate if isinstance(exc, psycopg.Error) else None) or ""
        if sqlstate[:2] in ("22", "23"):
            return (
                "the database refused the data (a data or integrity error) and the transaction was rolled back: "
                "check with `wardfn db status` that the schema matches this host, then report the request id"
            )
        if sqlstate[:2] == "40" or sqlstate == "55P03":
            return "the database was busy (a lock wait or a conflict) and the transaction was rolled back: retry"
        if sqlstate[:2] == "53":
            return "the database server is out of a resource: check its disk space, memory and max_connections"
        return self.hint


class _FileLock:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


class _ConnectionLock:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def release(self) -> None:
        self._conn.close()  # the session ends and the server releases its advisory locks


def open_database(settings: Settings) -> Database:
    """The database the settings name: PostgreSQL at WARDFN_DATABASE_URL, else the SQLite file."""
    if settings.database_url is not None and settings.database_url.get_secret_value():
        return PostgresDatabase(settings.database_url.get_secret_value(), settings.database_pool_size)
    return SqliteDatabase(settings.database_path)


# TCP liveness for connections to a server that vanishes without closing them (power loss, a
# partition): without these, a query on such a connection waits for the kernel's retransmission
# timeout, about 15 minutes, instead of failing in seconds. A URL that sets any of them wins.
LIVENESS_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",  # ms: unacknowledged data for longer ends the connection
}


def _liveness_defaults(url: str) -> dict[str, str]:
    given = {key for key, _ in parse_qsl(urlsplit(url).query)}
    return {key: value for key, value in LIVENESS_DEFAULTS.items() if key not in given}


def redact(url: str) -> str:
    """The URL with its password (in the authority or as a `password` parameter) replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostport}"
    query = urlencode(
        [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*/",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _password(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for key, value in parse_qsl(parts.query):
        if key == "password" and value:
            return value
    return None
