"""The audit table's monthly partitions on PostgreSQL (migration 9): made ahead of time, listed, dropped.

`audit` is partitioned by range of `ts` (the record's own ISO timestamp, collation "C", so that
text order is time order), one partition a month named `audit_pYYYYMM`, bounds `'YYYY-MM'` to the
next month, plus `audit_default` for a row no month holds (a host whose clock is far off): an
insert never fails for lack of a partition. `ensure_ahead` makes this month's and the next
AHEAD_MONTHS' partitions; the host calls it at start and every hour, `wardfn db migrate` too.

A partition is made as a plain table and then attached: attaching takes no lock that an insert
into another partition waits for (CREATE TABLE ... PARTITION OF would lock the whole table). Rows
that reached the default partition for the month are moved into it first. SQLite has no
partitions: every function here does nothing there.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from host.store.database import Connection, Database

AHEAD_MONTHS = 3
MAINTENANCE_LOCK_TIMEOUT = "1s"
DEFAULT = "audit_default"
MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_NAME = re.compile(r"^audit_p(\d{4})(\d{2})$")
PARTITIONS = (
    "SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = 'audit'::regclass ORDER BY c.relname"
)


# Retention (issue 17): records archived behind a signed checkpoint leave the table; each chain's
# last archived record stays here, vouched for by the archive's signed checkpoint, so that what
# remains still verifies (host/audit/retention.py).
AUDIT_ARCHIVED = (
    "CREATE TABLE IF NOT EXISTS audit_archived (chain TEXT PRIMARY KEY, n BIGINT NOT NULL, hash TEXT NOT NULL, "
    "before TEXT NOT NULL, archived_at TEXT NOT NULL)"
)
# PostgreSQL: the audit table becomes partitioned by month of `ts` (host/store/partitions.py), its rows
# copied over. `ts` takes collation "C", so that text order is time order whatever the database's
# collation. The primary key must hold the partition key: (seq, ts); seq stays unique by its sequence.
# (chain, n) can no longer be a unique index for the same reason: verify names a duplicate.
PARTITIONED = (
    "ALTER TABLE audit RENAME TO audit_unpartitioned",
    "ALTER INDEX audit_pkey RENAME TO audit_unpartitioned_pkey",
    """CREATE TABLE audit (
        seq BIGINT NOT NULL,
        ts TEXT COLLATE "C" NOT NULL,
        request_id TEXT NOT NULL,
        subject_id TEXT,
        role TEXT,
        function TEXT,
        patient_id TEXT,
        purpose TEXT,
        decision_id TEXT,
        allowed SMALLINT,
        reasons TEXT NOT NULL,
        outcome TEXT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        policy_revision TEXT,
        input_hash TEXT,
        break_glass SMALLINT NOT NULL DEFAULT 0,
        review SMALLINT NOT NULL DEFAULT 0,
        break_glass_reason TEXT,
        function_version TEXT,
        query TEXT,
        chain TEXT NOT NULL DEFAULT '',
        n BIGINT NOT NULL,
        org_unit TEXT,
        PRIMARY KEY (seq, ts)
    ) PARTITION BY RANGE (ts)""",
    f"CREATE TABLE {DEFAULT} PARTITION OF audit DEFAULT",
    AUDIT_ARCHIVED,
)
_PARTITIONED_COLUMNS = (
    "seq, ts, request_id, subject_id, role, function, patient_id, purpose, decision_id, allowed, reasons, outcome, "
    "latency_ms, prev_hash, hash, policy_revision, input_hash, break_glass, review, break_glass_reason, "
    "function_version, query, chain, n, org_unit"
)
PARTITIONED_AFTER = (
    f"INSERT INTO audit ({_PARTITIONED_COLUMNS}) SELECT {_PARTITIONED_COLUMNS} FROM audit_unpartitioned",
    "DROP TABLE audit_unpartitioned",
    # The indexes the table had (migrations 2, 5 and 6), made again on the partitioned table.
    "CREATE INDEX audit_flagged ON audit (seq) WHERE review = 1",
    "CREATE INDEX audit_chain_n ON audit (chain, n)",
    "CREATE INDEX audit_patient_seq ON audit (patient_id, seq)",
    "CREATE INDEX audit_searches_seq ON audit (seq) WHERE patient_id IS NULL AND query IS NOT NULL",
    "CREATE INDEX audit_function_seq ON audit (function, seq)",
)


def fill_partitioned(conn: Connection) -> None:
    """Migration 9, after PARTITIONED: a partition for every month the trail has records in, and the months
    ahead; then the rows, and the indexes."""
    (oldest,) = conn.execute("SELECT MIN(ts) FROM audit_unpartitioned").fetchone()
    first, last = ahead()
    oldest_month = month_of(oldest) if oldest else first
    ensure(conn, min(first, oldest_month) if MONTH.match(oldest_month) else first, last)
    for statement in PARTITIONED_AFTER:
        conn.execute(statement)


def month_of(ts: str) -> str:
    """'YYYY-MM' of an ISO timestamp (or of a month)."""
    return ts[:7]


def next_month(month: str) -> str:
    year, number = int(month[:4]), int(month[5:7])
    return f"{year + number // 12:04d}-{number % 12 + 1:02d}"


def partition_name(month: str) -> str:
    return f"audit_p{month[:4]}{month[5:7]}"


def months(first: str, last: str) -> list[str]:
    """Every month from `first` to `last`, both included."""
    found, month = [], first
    while month <= last:
        found.append(month)
        month = next_month(month)
    return found


def this_month(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m")


def partitioned(conn: Connection) -> bool:
    """True if the audit table is partitioned (PostgreSQL after migration 9)."""
    if conn.dialect != "postgresql":
        return False
    row = conn.execute("SELECT relkind FROM pg_catalog.pg_class WHERE oid = 'audit'::regclass").fetchone()
    return bool(row and row[0] == "p")


def monthly(conn: Connection) -> list[str]:
    """The months that have a partition, oldest first."""
    names = [str(name) for (name,) in conn.execute(PARTITIONS).fetchall()]
    return [f"{m.group(1)}-{m.group(2)}" for m in map(_NAME.match, names) if m]


def create(conn: Connection, month: str) -> None:
    """Make and attach the partition of `month` (in the caller's transaction), moving in its rows from
    the default partition."""
    name, low, high = partition_name(month), month, next_month(month)
    conn.execute(f"CREATE TABLE {name} (LIKE audit INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    strays = f"FROM {DEFAULT} WHERE ts >= ? AND ts < ?"
    if conn.execute(f"SELECT 1 {strays} LIMIT 1", (low, high)).fetchone() is not None:
        conn.execute(f"INSERT INTO {name} SELECT * {strays}", (low, high))
        conn.execute(f"DELETE {strays}", (low, high))
    conn.execute(f"ALTER TABLE audit ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}')")


def ensure(conn: Connection, first: str, last: str) -> list[str]:
    """Make every missing month's partition from `first` to `last` (in the caller's transaction); the months made."""
    if not (MONTH.match(first) and MONTH.match(last)):  # never SQL from anything but a month
        raise ValueError("partition bounds must be months, YYYY-MM")
    if not partitioned(conn):
        return []
    present = set(monthly(conn))
    made = [month for month in months(first, last) if month not in present]
    for month in made:
        create(conn, month)
    return made


def ahead(now: datetime | None = None) -> tuple[str, str]:
    """This month and the last month that must already have a partition."""
    first = this_month(now)
    last = first
    for _ in range(AHEAD_MONTHS):
        last = next_month(last)
    return first, last


def drop_before(conn: Connection, before: str) -> list[str]:
    """Drop every month's partition wholly before `before`, and delete the default partition's rows
    from before it (in the caller's transaction, which must hold the table's lock); the months dropped."""
    dropped = [month for month in monthly(conn) if next_month(month) <= before]
    for month in dropped:
        conn.execute(f"DROP TABLE {partition_name(month)}")
    conn.execute(f"DELETE FROM {DEFAULT} WHERE ts < ?", (before,))
    return dropped


def keep_ahead(database: Database, now: datetime | None = None) -> list[str]:
    """Make this month's and the next AHEAD_MONTHS' partitions if any is missing; the months made.
    Reads the catalogue only, in the common case that all are there."""
    if database.dialect != "postgresql":
        return []
    first, last = ahead(now)
    with database.connection() as conn:
        if not partitioned(conn) or set(months(first, last)) <= set(monthly(conn)):
            return []
        with database.transaction(conn, None):
            # Attaching locks the default partition, which every reader of the whole table holds too: wait
            # for them at most a second (readers queue behind meanwhile); the next hourly try comes soon enough.
            conn.execute(f"SET LOCAL lock_timeout = '{MAINTENANCE_LOCK_TIMEOUT}'")
            return ensure(conn, first, last)
