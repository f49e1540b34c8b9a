"""Versioned schema migrations: ordered SQL per dialect, recorded in `schema_migrations`.

`wardfn db migrate` applies the pending ones; a host on PostgreSQL refuses to serve a database
that is not at the version it was built for. The embedded SQLite file is migrated by the host
itself when opened (a development convenience: `make serve` stays one command), and migration 1
upgrades any file the code before migrations made, which created its tables `IF NOT EXISTS`
and added the audit columns one by one.

To change the schema, append a Migration with the next version and SQL for both dialects;
never edit one that has shipped. Each is applied in one transaction, recorded with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from host.errors import ConfigurationError, StoreUnavailable
from host.store import partitions
from host.store.database import MIGRATE_LOCK, Connection, Database


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...] = field(repr=False)
    postgresql: tuple[str, ...] = field(repr=False)
    # Run after the SQLite statements: upgrades a file older than migrations, whose tables exist.
    sqlite_upgrade: Callable[[Connection], None] | None = field(default=None, repr=False)
    # Run after the PostgreSQL statements, for what depends on the rows found (migration 9's partitions).
    postgresql_upgrade: Callable[[Connection], None] | None = field(default=None, repr=False)


# The audit columns added after the table was first shipped (issue 3 and later), for SQLite files
# made before migrations: a trail made before them gains them (NULL / 0).
_LATE_AUDIT_COLUMNS = {
    "policy_revision": "TEXT",
    "input_hash": "TEXT",
    "break_glass": "INTEGER NOT NULL DEFAULT 0",
    "review": "INTEGER NOT NULL DEFAULT 0",
    "break_glass_reason": "TEXT",
    "function_version": "TEXT",
    "query": "TEXT",
}


def _add_late_audit_columns(conn: Connection) -> None:
    present = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
    for name, kind in _LATE_AUDIT_COLUMNS.items():
        if name not in present:
            conn.execute(f"ALTER TABLE audit ADD COLUMN {name} {kind}")


_AUDIT_COLUMNS = """
    ts TEXT NOT NULL,
    request_id TEXT NOT NULL,
    subject_id TEXT,
    role TEXT,
    function TEXT,
    patient_id TEXT,
    purpose TEXT,
    decision_id TEXT,
    allowed {small},
    reasons TEXT NOT NULL,
    outcome TEXT NOT NULL,
    latency_ms {real} NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    policy_revision TEXT,
    input_hash TEXT,
    break_glass {small} NOT NULL DEFAULT 0,
    review {small} NOT NULL DEFAULT 0,
    break_glass_reason TEXT,
    function_version TEXT,
    query TEXT
"""

INITIAL_SQLITE = (
    """CREATE TABLE IF NOT EXISTS resources (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        patient_id TEXT,
        -- nonce || AES-GCM ciphertext (a BLOB); TEXT only in files made before encryption.
        body BLOB NOT NULL,
        PRIMARY KEY (resource_type, id)
    )""",
    # (patient, type, id): every search is by patient and type, ordered by id. With only
    # (patient, type), SQLite preferred the primary key for the ORDER BY and scanned every
    # resource of the type.
    "DROP INDEX IF EXISTS resources_by_patient",
    "CREATE INDEX IF NOT EXISTS resources_by_patient_type_id ON resources (patient_id, resource_type, id)",
    # key: a blind index, hex HMAC-SHA256 of (kind, normalised key) under the blind-index key.
    "CREATE TABLE IF NOT EXISTS patient_index (patient_id TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS patient_index_by_key ON patient_index (kind, key)",
    "CREATE INDEX IF NOT EXISTS patient_index_by_patient ON patient_index (patient_id)",
    "CREATE TABLE IF NOT EXISTS keks (kek_id TEXT PRIMARY KEY, added_at TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS data_keys (
        owner TEXT NOT NULL, kek_id TEXT NOT NULL, wrapped BLOB NOT NULL, PRIMARY KEY (owner, kek_id)
    )""",
    "CREATE INDEX IF NOT EXISTS data_keys_by_kek ON data_keys (kek_id, owner)",
    "CREATE TABLE IF NOT EXISTS erasures (patient_id TEXT PRIMARY KEY, erased_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY,"
    + _AUDIT_COLUMNS.format(small="INTEGER", real="REAL")
    + ")",
)

INITIAL_POSTGRESQL = (
    """CREATE TABLE resources (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        patient_id TEXT,
        body BYTEA NOT NULL,
        PRIMARY KEY (resource_type, id)
    )""",
    "CREATE INDEX resources_by_patient_type_id ON resources (patient_id, resource_type, id)",
    "CREATE TABLE patient_index (patient_id TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL)",
    "CREATE INDEX patient_index_by_key ON patient_index (kind, key)",
    "CREATE INDEX patient_index_by_patient ON patient_index (patient_id)",
    "CREATE TABLE keks (kek_id TEXT PRIMARY KEY, added_at TEXT NOT NULL)",
    """CREATE TABLE data_keys (
        owner TEXT NOT NULL, kek_id TEXT NOT NULL, wrapped BYTEA NOT NULL, PRIMARY KEY (owner, kek_id)
    )""",
    "CREATE INDEX data_keys_by_kek ON data_keys (kek_id, owner)",
    "CREATE TABLE erasures (patient_id TEXT PRIMARY KEY, erased_at TEXT NOT NULL)",
    # DOUBLE PRECISION, not REAL (float4 in PostgreSQL): latency_ms is hashed, and must read back
    # exactly as written.
    "CREATE TABLE audit (seq BIGINT PRIMARY KEY,"
    + _AUDIT_COLUMNS.format(small="SMALLINT", real="DOUBLE PRECISION")
    + ")",
)

# The review queue (`wardfn audit review`) reads the flagged records in seq order.
AUDIT_FLAGGED = "CREATE INDEX {if_not_exists}audit_flagged ON audit (seq) WHERE review = 1"

AUDIT_RELAY = "CREATE TABLE IF NOT EXISTS audit_relay (id INTEGER PRIMARY KEY, sent_seq BIGINT NOT NULL)"

# One sealed index per (patient, type): nonce || AES-GCM ciphertext under the patient's data key.
SEARCH_INDEX = (
    "CREATE TABLE IF NOT EXISTS search_index (patient_id TEXT NOT NULL, resource_type TEXT NOT NULL, "
    "version INTEGER NOT NULL, sealed {blob} NOT NULL, PRIMARY KEY (patient_id, resource_type))"
)
# A row per index version built for every stored resource: opening a database with it costs one read.
SEARCH_INDEX_BUILDS = (
    "CREATE TABLE IF NOT EXISTS search_index_builds (version INTEGER PRIMARY KEY, built_at TEXT NOT NULL)"
)

# Many chains, one trail (issue 17): each writer process appends to a chain of its own, leased in
# `audit_chains`; `seq` orders the whole trail in commit order (on PostgreSQL from the sequence
# `audit_seq`, which must keep CACHE 1: see host/audit/trail.py). Records from before form the chain
# "" with n = seq.
AUDIT_CHAINS = (
    "CREATE TABLE IF NOT EXISTS audit_chains (chain TEXT PRIMARY KEY, writer TEXT NOT NULL, "
    "opened_at TEXT NOT NULL, lease_until {real} NOT NULL, closed_n BIGINT, closed_hash TEXT, closed_at TEXT)"
)
AUDIT_CHAIN_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS audit_chain_n ON audit (chain, n)"
# Every host's checkpointer looks for lapsed open chains each tick: the open ones are few, the closed
# ones one per process start, ever.
AUDIT_CHAINS_OPEN = "CREATE INDEX IF NOT EXISTS audit_chains_open ON audit_chains (lease_until) WHERE closed_n IS NULL"
# The chain from before chains, closed at its last record (a trail with no records has none).
AUDIT_LEGACY_CHAIN = (
    "INSERT INTO audit_chains (chain, writer, opened_at, lease_until, closed_n, closed_hash, closed_at) "
    "SELECT '', 'before chains', ts, 0, n, hash, ts FROM audit "
    "WHERE chain = '' AND n = (SELECT MAX(n) FROM audit WHERE chain = '') "
    "ON CONFLICT (chain) DO NOTHING"
)
_CHAIN_COLUMNS = {"chain": "TEXT NOT NULL DEFAULT ''", "n": "INTEGER"}


def _add_audit_chains(conn: Connection) -> None:
    # Written to be re-run: migration 1's upgrade path may meet a file that has the columns already.
    present = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
    for name, kind in _CHAIN_COLUMNS.items():
        if name not in present:
            conn.execute(f"ALTER TABLE audit ADD COLUMN {name} {kind}")
    conn.execute("UPDATE audit SET n = seq WHERE n IS NULL")
    conn.execute(AUDIT_CHAIN_INDEX)
    conn.execute(AUDIT_CHAINS.format(real="REAL"))
    conn.execute(AUDIT_CHAINS_OPEN)
    conn.execute(AUDIT_LEGACY_CHAIN)


AUDIT_CHAINS_POSTGRESQL = (
    "ALTER TABLE audit ADD COLUMN chain TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE audit ADD COLUMN n BIGINT",
    "UPDATE audit SET n = seq",
    "ALTER TABLE audit ALTER COLUMN n SET NOT NULL",
    AUDIT_CHAIN_INDEX,
    AUDIT_CHAINS.format(real="DOUBLE PRECISION"),
    AUDIT_CHAINS_OPEN,
    AUDIT_LEGACY_CHAIN,
    "CREATE SEQUENCE audit_seq CACHE 1",
    "SELECT setval('audit_seq', COALESCE((SELECT MAX(seq) FROM audit), 0) + 1, false)",
)

# The privacy office's readers (host/audit/trail.py `concerning`, `of_function`): a patient's access
# report and the review queue's dispositions, without a scan of the whole trail.
AUDIT_READER_INDEXES = (
    "CREATE INDEX IF NOT EXISTS audit_patient_seq ON audit (patient_id, seq)",
    "CREATE INDEX IF NOT EXISTS audit_searches_seq ON audit (seq) WHERE patient_id IS NULL AND query IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS audit_function_seq ON audit (function, seq)",
)

AUDIT_ORG_UNIT = "ALTER TABLE audit ADD COLUMN IF NOT EXISTS org_unit TEXT"


def _add_org_unit(conn: Connection) -> None:
    # SQLite has no ADD COLUMN IF NOT EXISTS; a file re-running its migrations may have the column.
    if "org_unit" not in {row[1] for row in conn.execute("PRAGMA table_info(audit)")}:
        conn.execute("ALTER TABLE audit ADD COLUMN org_unit TEXT")


# The search index's fingerprint (its AES-GCM nonce and tag) in a column of its own: read with the
# patient's key on every search, where taking it from the blob made SQLite load the whole blob (a few
# MB for a long history) once an invocation. Rows from before get it from their blob, once.
# The covering index answers it without the row: SQLite stores a column after a large blob past the
# blob's overflow pages.
SEARCH_INDEX_FINGERPRINT_POSTGRESQL = (
    "ALTER TABLE search_index ADD COLUMN IF NOT EXISTS fingerprint BYTEA",
    "UPDATE search_index SET fingerprint = substr(sealed, 1, 12) || substr(sealed, length(sealed) - 15, 16)",
    "CREATE INDEX IF NOT EXISTS search_index_fingerprint ON search_index "
    "(patient_id, resource_type, version, fingerprint)",
)
# (SQLite's || makes text of blobs: cast back, byte for byte.)
SEARCH_INDEX_FINGERPRINT_FILL_SQLITE = (
    "UPDATE search_index SET fingerprint = CAST(substr(sealed, 1, 12) || substr(sealed, length(sealed) - 15, 16) "
    "AS BLOB)"
)


def _add_fingerprint(conn: Connection) -> None:
    # SQLite has no ADD COLUMN IF NOT EXISTS; a file re-running its migrations may have the column.
    if "fingerprint" not in {row[1] for row in conn.execute("PRAGMA table_info(search_index)")}:
        conn.execute("ALTER TABLE search_index ADD COLUMN fingerprint BLOB")
    conn.execute(SEARCH_INDEX_FINGERPRINT_FILL_SQLITE)
    conn.execute(SEARCH_INDEX_FINGERPRINT_POSTGRESQL[2])


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", INITIAL_SQLITE, INITIAL_POSTGRESQL, sqlite_upgrade=_add_late_audit_columns),
    Migration(
        2,
        "audit_flagged_index",
        (AUDIT_FLAGGED.format(if_not_exists="IF NOT EXISTS "),),
        (AUDIT_FLAGGED.format(if_not_exists=""),),
    ),
    # The audit relay's durable cursor (host/audit/relay_cursor.py): one row, the seq the broker confirmed.
    Migration(3, "audit_relay_cursor", (AUDIT_RELAY,), (AUDIT_RELAY,)),
    # The sealed search index (host/store/search_index.py); the store builds it for existing rows at open.
    Migration(
        4,
        "search_index",
        (SEARCH_INDEX.format(blob="BLOB"), SEARCH_INDEX_BUILDS),
        (SEARCH_INDEX.format(blob="BYTEA"), SEARCH_INDEX_BUILDS),
    ),
    Migration(5, "audit_chains", (), AUDIT_CHAINS_POSTGRESQL, sqlite_upgrade=_add_audit_chains),
    Migration(6, "audit_reader_indexes", AUDIT_READER_INDEXES, AUDIT_READER_INDEXES),
    # The accessing subject's organisation unit (a token's `org_unit`), for the privacy office's reports.
    Migration(7, "audit_org_unit", (), (AUDIT_ORG_UNIT,), sqlite_upgrade=_add_org_unit),
    Migration(8, "search_index_fingerprint", (), SEARCH_INDEX_FINGERPRINT_POSTGRESQL, sqlite_upgrade=_add_fingerprint),
    # Retention (issue 17): archived chains' boundaries; on PostgreSQL the trail partitioned by month.
    Migration(
        9,
        "audit_retention",
        (partitions.AUDIT_ARCHIVED,),
        partitions.PARTITIONED,
        postgresql_upgrade=partitions.fill_partitioned,
    ),
)
LATEST = MIGRATIONS[-1].version

CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "applied_at TEXT NOT NULL)"
)


class SchemaOutOfDate(ConfigurationError):
    """The database's schema is not the version this host needs."""


def current_version(conn: Connection) -> int:
    """The highest migration applied (0 for a database never migrated)."""
    if conn.dialect == "sqlite":
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
    else:
        exists = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = 'schema_migrations' AND schemaname = current_schema()"
        )
    if exists.fetchone() is None:
        return 0
    (version,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(version)


def status(database: Database) -> tuple[int, list[Migration]]:
    """The database's schema version and the migrations it still needs."""
    with _translated(database, "read the schema version of"), database.connection() as conn:
        version = current_version(conn)
    return version, [m for m in MIGRATIONS if m.version > version]


def migrate(database: Database) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; returns those applied."""
    applied: list[Migration] = []
    with _translated(database, "migrate"), database.connection() as conn:
        for migration in MIGRATIONS:
            # Several hosts may start (or `wardfn db migrate` run) at once: the write lock makes
            # them take turns, and each re-reads the version once it holds it.
            with database.transaction(conn, MIGRATE_LOCK):
                conn.execute(CREATE_TABLE)
                version = current_version(conn)
                if version > LATEST:
                    raise _newer(database, version)
                if migration.version <= version:
                    continue
                statements = migration.sqlite if conn.dialect == "sqlite" else migration.postgresql
                for statement in statements:
                    conn.execute(statement)
                if conn.dialect == "sqlite" and migration.sqlite_upgrade is not None:
                    migration.sqlite_upgrade(conn)
                if conn.dialect == "postgresql" and migration.postgresql_upgrade is not None:
                    migration.postgresql_upgrade(conn)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, datetime.now(UTC).isoformat(timespec="seconds")),
                )
                applied.append(migration)
    return applied


def require_current(database: Database) -> None:
    """Refuse, with one line saying what to run, a database not at this host's schema version."""
    version, pending = status(database)
    if version > LATEST:
        raise _newer(database, version)
    if pending:
        raise SchemaOutOfDate(
            f"the database at {database.display} is at schema version {version}, this host needs {LATEST}: "
            "run `wardfn db migrate` (with the same WARDFN_DATABASE_URL) and start the host again"
        )


def prepare(database: Database) -> None:
    """Make the database usable by this host: SQLite is migrated in place, PostgreSQL must already be."""
    if database.dialect == "postgresql":
        require_current(database)
        return
    version, pending = status(database)
    if version > LATEST:
        raise _newer(database, version)
    if pending:  # read first: opening an up-to-date file takes no write lock
        migrate(database)


@contextmanager
def _translated(database: Database, action: str) -> Iterator[None]:
    try:
        yield
    except database.errors as exc:
        raise StoreUnavailable(
            f"could not {action} the database at {database.display} ({database.describe(exc)}); {database.advice(exc)}"
        ) from exc


def _newer(database: Database, version: int) -> SchemaOutOfDate:
    return SchemaOutOfDate(
        f"the database at {database.display} is at schema version {version}, newer than this host's {LATEST}: "
        "run a wardfn release that knows it"
    )
