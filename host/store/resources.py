"""The store of FHIR-shaped resources: one table, indexed by patient, encrypted at rest.

Each resource is kept as the JSON it was added as, sealed with AES-256-GCM under its
patient's data key (resources of no patient: under the store's shared key), with its type,
id and patient as associated data so a sealed body cannot be moved to another row. Data
keys are stored wrapped by the key-encryption key (see host.encryption and host.keyring).
Search keys are blind indexes: HMACs of the normalised keys, never the names themselves.
Functions read whole resources by (patient, type), nothing finer, and see plaintext: the
store decrypts in search().

Erasure destroys a patient's data key: their sealed rows stay, unreadable, and the store
answers as if the patient had never been stored.

The database is the embedded SQLite file or PostgreSQL (host.database): the SQL here is
written once for both. The store is used from the web server's thread pool; each thread
holds a connection only for one call (SQLite: its own; PostgreSQL: one from the pool).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.errors import InvalidRequest, StoreUnavailable, WardfnError
from host.search.query import parse_query
from host.store import keyring, migrations, search_index
from host.store.consent import consented, directives
from host.store.database import (
    READY_TIMEOUT_S,
    STORE_WRITE_LOCK,
    Connection,
    Database,
    DatabaseClosed,
    SqliteDatabase,
    open_database,
)
from host.store.directory import display_name, minimal_match
from host.store.encryption import BlindIndex, FieldCipher, KeyProvider, KeyUnreadable, kek_from_settings
from host.store.facts import FACTS_SQL, care_team_of, facts_from_rows
from host.store.rows import ResourceRows
from host.store.sealing import Sealer, encrypt_plaintext, index_patients, open_body
from host.store.upsert import Written, upsert
from host.types import DirectoryQuery, PatientFacts

if TYPE_CHECKING:
    from host.config import Settings

REWRAP_BATCH = 500
# One patient's resources of one type, with the patient's data key as wrapped under this host's KEK.
SEARCH_SQL = (
    "SELECT r.id, r.body, k.wrapped FROM resources r "
    "LEFT JOIN data_keys k ON k.owner = r.patient_id AND k.kek_id = ? "
    "WHERE r.patient_id = ? AND r.resource_type = ? ORDER BY r.id"
)
CIPHER_CACHE = 4096


SEALED_TEXT_PREFIX = "sealed:v1:"


class ResourceStore:
    """FHIR resources in SQLite or PostgreSQL, encrypted at rest, safe to share between threads.

    Given a path, the store opens that SQLite file; given a Database, it owns it (closes it on close).
    """

    def __init__(self, database: Database | Path, keys: KeyProvider) -> None:
        self._keys = keys
        # Unwrapped data keys, keyed by the wrapped bytes read with the row: a key erased or
        # re-wrapped in the database is simply never looked up again.
        self._cipher = functools.lru_cache(maxsize=CIPHER_CACHE)(self._unwrap_cipher)
        self._indexes = search_index.IndexCache()
        self._display = str(database)
        self._path = database if isinstance(database, Path) else getattr(database, "path", None)
        self._db: Database | None = None
        try:
            with self._translate("create"):
                self._db = SqliteDatabase(database) if isinstance(database, Path) else database
                self._display = self._db.display
                migrations.prepare(self._db)
            with self._use("create") as conn:
                with self._write(conn):
                    keyring.check_kek(conn, keys, self._display)
                    blind_key = keyring.data_key(conn, keys, keyring.BLIND_INDEX_OWNER, create=True)
                    shared_key = keyring.data_key(conn, keys, keyring.SHARED_OWNER, create=True)
                    assert blind_key is not None and shared_key is not None
                    self._blind = BlindIndex(blind_key)
                    self._shared = FieldCipher(shared_key)
                    # Only SQLite files predate encryption at rest.
                    upgraded = conn.dialect == "sqlite" and encrypt_plaintext(conn, self._sealer(conn), self._blind)
                if upgraded:
                    # Purge the plaintext pages the upgrade freed, from the WAL and the file.
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    conn.execute("VACUUM")
                self._build_search_index(conn)
        except WardfnError:
            self.close()
            raise

    @property
    def database(self) -> Database:
        """The database the store reads and writes."""
        if self._db is None:
            raise StoreUnavailable("the record store is closed: the host is shutting down, retry later")
        return self._db

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None on PostgreSQL."""
        return self._path

    @property
    def kek_id(self) -> str:
        """The id of the key-encryption key this store unwraps data keys with."""
        return self._keys.kek_id

    def add_resources(self, resources: Iterable[dict[str, Any]]) -> int:
        """Add (or replace, by type and id) resources in one transaction; returns how many were given."""
        return self.upsert_resources(resources).resources.total

    def upsert_resources(self, resources: Iterable[dict[str, Any]]) -> Written:
        """Add resources in one transaction, writing only those new or changed (by type and id); says
        how many resources and patients were new, updated and unchanged."""
        rows = ResourceRows(resources)
        with self._use("write to") as conn:
            with self._write(conn):
                sealer = self._sealer(conn)
                written, patients, plain = upsert(conn, sealer, rows)
                index_patients(conn, patients, self._blind)
                search_index.update(conn, sealer.cipher, plain)
        return written

    def search(self, patient_id: str, resource_type: str) -> list[str]:
        """The JSON bodies of one patient's resources of one type ("Patient": the patient itself)."""
        with self._use("read") as conn:
            return self._search(conn, patient_id, resource_type)

    def query(self, patient_id: str, resource_type: str, params: Sequence[tuple[str, str]]) -> list[str]:
        """One patient's resources of one type that match FHIR search parameters (host.search.query),
        decrypting only those; InvalidRequest for a parameter or value it does not support."""
        return self.query_session()(patient_id, resource_type, params)

    def query_session(self) -> Callable[[str, str, Sequence[tuple[str, str]]], list[str]]:
        """`query` for one invocation: an index it opens stays open for the invocation's next searches
        (decrypted and parsed once, not once a search). Drop it when the invocation ends."""
        opened: search_index.Opened = {}

        def query(patient_id: str, resource_type: str, params: Sequence[tuple[str, str]]) -> list[str]:
            wanted = parse_query(resource_type, params)
            with self._use("read") as conn:
                open_key = functools.partial(self._patient_cipher, conn, patient_id)
                return search_index.query(conn, self.kek_id, open_key, patient_id, wanted, opened, self._indexes)

        return query

    def patient_exists(self, patient_id: str) -> bool:
        """True if a Patient resource with this id is stored (and not erased)."""
        with self._use("read") as conn:
            row = conn.execute(
                "SELECT 1 FROM resources WHERE resource_type = 'Patient' AND id = ? "
                "AND id NOT IN (SELECT patient_id FROM erasures)",
                (patient_id,),
            ).fetchone()
        return row is not None

    def consent_for(self, patient_id: str, purpose: str) -> bool:
        """True if the patient's Consent resources allow `purpose` (see host.consent)."""
        consents = [json.loads(body) for body in self.search(patient_id, "Consent")]
        return consented(consents, purpose)

    def consent_directives(self, patient_id: str) -> list[dict[str, Any]]:
        """The patient's consent directives for the policy input (see host.consent.directives)."""
        return directives([json.loads(body) for body in self.search(patient_id, "Consent")])

    def care_team(self, patient_id: str) -> list[str]:
        """The practitioner ids on the patient's active CareTeams, sorted, without repeats."""
        return care_team_of(self.search(patient_id, "CareTeam"))

    def patient_facts(self, patient_id: str) -> PatientFacts:
        """Whether the patient exists, their care team and consent directives: `patient_exists`,
        `care_team` and `consent_directives` in one query (an erased patient: does not exist)."""
        with self._use("read") as conn:
            rows = conn.execute(FACTS_SQL, (self.kek_id, patient_id)).fetchall()
            cipher = self._patient_cipher(conn, patient_id, rows[0][3]) if rows else None
        return facts_from_rows(patient_id, rows, cipher)

    def list_patients(self, limit: int) -> list[dict[str, str]]:
        """Up to `limit` patients as {"id", "name"}, ordered by id, names decrypted. For development only."""
        with self._use("read") as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM resources WHERE resource_type = 'Patient' "
                    "AND id NOT IN (SELECT patient_id FROM erasures) ORDER BY id LIMIT ?",
                    (limit,),
                )
            ]
            patients = [(pid, body) for pid in ids for body in self._search(conn, pid, "Patient")]
        return [{"id": patient_id, "name": display_name(json.loads(body))} for patient_id, body in patients]

    def count_patients(self) -> int:
        """How many Patient resources are stored (erased patients not counted)."""
        with self._use("read") as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM resources WHERE resource_type = 'Patient' "
                "AND id NOT IN (SELECT patient_id FROM erasures)"
            ).fetchone()
        return int(count)

    def directory_search(self, query: DirectoryQuery, limit: int) -> list[dict[str, str | None]]:
        """At most `limit` patients matching every criterion of `query`, as minimal fields only."""
        pairs = query.keys()
        if not pairs:
            return []
        # The blind index of a key depends on its kind, so each criterion matches any of its
        # kinds' HMACs; (kind, key) is indexed.
        clauses = " INTERSECT ".join(
            f"SELECT patient_id FROM patient_index WHERE kind IN ({','.join('?' * len(kinds))}) "
            f"AND key IN ({','.join('?' * len(kinds))})"
            for kinds, _ in pairs
        )
        params: list[Any] = [
            value for kinds, key in pairs for value in (*kinds, *(self._blind(kind, key) for kind in kinds))
        ]
        with self._use("read") as conn:
            ids = [row[0] for row in conn.execute(f"{clauses} ORDER BY 1 LIMIT ?", [*params, limit])]
            bodies = [body for pid in ids for body in self._search(conn, pid, "Patient")]
        return [minimal_match(json.loads(body)) for body in bodies]

    def erase_patient(self, patient_id: str) -> bool:
        """Crypto-shred a patient: destroy their data key and search keys. False if no such patient."""
        if ":" in patient_id:
            raise InvalidRequest("a patient id has no colon: that name belongs to one of the store's own keys")
        with self._use("erase in") as conn:
            with self._write(conn):
                stored = conn.execute(
                    "SELECT 1 FROM resources WHERE patient_id = ? UNION ALL SELECT 1 FROM data_keys WHERE owner = ? "
                    "LIMIT 1",
                    (patient_id, patient_id),
                ).fetchone()
                if stored is None or keyring.erased(conn, patient_id):
                    return False
                keyring.erase(conn, patient_id)
                conn.execute("DELETE FROM patient_index WHERE patient_id = ?", (patient_id,))
                search_index.erase(conn, patient_id)
            self.database.purge_deleted(conn, "data_keys")
        self._indexes.forget(patient_id)
        return True

    def rotate_kek(self, new: KeyProvider, batch: int = REWRAP_BATCH) -> int:
        """Wrap every data key under `new` as well, in small transactions; returns how many were wrapped.

        Hosts keep serving throughout, on either key. Run `retire_kek` once every host runs on `new`.
        """
        if new.kek_id == self.kek_id:
            raise InvalidRequest(f"the new key-encryption key is the current one ({self.kek_id}): give a new key")
        return self._rewrap_all(self._keys, new, batch, retire=False)

    def retire_kek(self, old: KeyProvider, batch: int = REWRAP_BATCH) -> int:
        """Wrap under this store's KEK any key still only under `old`, then delete every `old` wrapping."""
        if old.kek_id == self.kek_id:
            raise InvalidRequest(
                f"key-encryption key {old.kek_id} is the one this host runs on: set WARDFN_KEK to the new key first"
            )
        with self._use("read") as conn:
            known = keyring.known_keks(conn)
        if old.kek_id not in known:
            raise InvalidRequest(f"key-encryption key {old.kek_id} is not one {self._display} knows")
        return self._rewrap_all(old, self._keys, batch, retire=True)

    def kek_status(self) -> dict[str, int]:
        """Data keys wrapped under each key-encryption key id the database knows."""
        with self._use("read") as conn:
            return keyring.counts(conn)

    def seal_text(self, text: str, purpose: str) -> str:
        """`text` sealed under the store's shared key, bound to `purpose`: for identifying text kept
        outside the resources table, such as a search's query in its audit record."""
        return SEALED_TEXT_PREFIX + base64.b64encode(self._shared.seal(text.encode(), purpose.encode())).decode()

    def open_text(self, sealed: str, purpose: str) -> str:
        """The text `seal_text` sealed; StoreUnavailable if it was not sealed here for this purpose."""
        try:
            raw = base64.b64decode(sealed.removeprefix(SEALED_TEXT_PREFIX), validate=True)
            return self._shared.open(raw, purpose.encode()).decode()
        except (ValueError, KeyUnreadable):
            raise StoreUnavailable("a sealed text could not be opened with this store's keys") from None

    def healthy(self) -> bool:
        """True if the store answers a trivial query (for readiness checks); never raises."""
        try:
            with self._use("read", READY_TIMEOUT_S) as conn:
                conn.execute("SELECT 1 FROM resources LIMIT 1").fetchall()
        except StoreUnavailable:
            return False
        return True

    def close(self) -> None:
        """Close every thread's connection. The store cannot be used afterwards."""
        database, self._db = self._db, None
        if database is not None:
            database.close()

    def _search(self, conn: Connection, patient_id: str, resource_type: str) -> list[str]:
        rows = conn.execute(SEARCH_SQL, (self.kek_id, patient_id, resource_type)).fetchall()
        if not rows:
            return []
        cipher = self._patient_cipher(conn, patient_id, rows[0][2])
        if cipher is None:
            return []
        return [open_body(cipher, resource_type, rid, patient_id, body) for rid, body, _ in rows]

    def _patient_cipher(self, conn: Connection, patient_id: str, wrapped: bytes | None) -> FieldCipher | None:
        """The patient's cipher from their key wrapped under this host's KEK; None if they were erased."""
        if wrapped is None:
            if keyring.erased(conn, patient_id):
                return None
            raise StoreUnavailable(
                f"a patient's data key is not wrapped under this host's key-encryption key ({self.kek_id}): "
                "it was retired; restart the host with the current WARDFN_KEK"
            )
        return self._cipher(patient_id, wrapped)

    def _build_search_index(self, conn: Connection) -> None:
        """Index, in small transactions, what was stored before the search index (host.store.search_index)."""
        while not search_index.built(conn):  # read first: opening an indexed database takes no write lock
            with self._write(conn):
                if search_index.build_pending(conn, self._sealer(conn).cipher) < search_index.BUILD_BATCH:
                    search_index.mark_built(conn)

    def _unwrap_cipher(self, owner: str, wrapped: bytes) -> FieldCipher:
        return FieldCipher(keyring.unwrap(self._keys, wrapped, owner))

    def _sealer(self, conn: Connection) -> Sealer:
        return Sealer(conn, self._keys, self._shared)

    def _rewrap_all(self, source: KeyProvider, target: KeyProvider, batch: int, retire: bool) -> int:
        total = 0
        with self._use("re-wrap keys in") as conn:
            while True:
                # Small transactions: the hosts serving from this database wait for the write lock
                # at most one batch long.
                with self._write(conn):
                    done = keyring.rewrap(conn, source, target, batch)
                    total += done
                    if done < batch:
                        if retire:
                            keyring.forget_kek(conn, source.kek_id)
                        break
            if retire:
                self.database.purge_deleted(conn, "data_keys")
        return total

    @contextmanager
    def _use(self, action: str, timeout: float | None = None) -> Iterator[Connection]:
        """A connection for one call, with driver errors translated."""
        with self._translate(action), self.database.connection(timeout) as conn:
            yield conn

    def _write(self, conn: Connection) -> Any:
        """A write transaction, serialised with every other host's writes to this database."""
        return self.database.transaction(conn, STORE_WRITE_LOCK)

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        try:
            yield
        except DatabaseClosed:
            raise StoreUnavailable("the record store is closed: the host is shutting down, retry later") from None
        except Exception as exc:
            database = self._db
            if database is None and not isinstance(exc, OSError):
                raise
            if database is not None and not isinstance(exc, database.errors):
                raise
            # Driver messages are reduced to words with no bound values: no patient data.
            described = database.describe(exc) if database is not None else f"{type(exc).__name__}: {exc}"
            hint = database.advice(exc) if database is not None else "check that the directory is writable"
            raise StoreUnavailable(
                f"could not {action} the record store at {self._display} ({described}); {hint}"
            ) from exc


def open_store(settings: Settings) -> ResourceStore:
    """The store the settings name, with the key-encryption key they name; refuses a wrong KEK.

    On PostgreSQL, refuses an unreachable or unmigrated database with one line saying what to do.
    """
    return ResourceStore(open_database(settings), kek_from_settings(settings))
