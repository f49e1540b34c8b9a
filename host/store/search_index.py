"""The search index: one sealed blob per (patient, resource type), kept in step with the resources.

Each blob is an `Index` (host.search.params: every resource's id, its date ranges and its
tokens) sealed with AES-256-GCM under the patient's own data key, bound to its (patient, type)
row. The database holds no clinical date, code or status in clear, and erasing the patient's key
shreds their index with their records. A search opens one blob, filters it in memory, and then
decrypts only the resources it selected. What it leaks: per patient and type, the blob's size
(about 60 to 100 bytes a resource) and when it was last rewritten; docs/data.md has the rest.

The index is written in the same transaction as the resources (`update`), built for databases
made before it at open (`build_pending`), and read by `run`. Types outside the table of search
parameters have no index: a search on them can only count, project and sort by id.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import orjson

from host.errors import StoreUnavailable
from host.search.columns import Columns
from host.search.params import INDEX_VERSION, SEARCH_PARAMETERS, Index
from host.search.query import SearchQuery
from host.store.database import Connection
from host.store.encryption import FieldCipher, KeyUnreadable
from host.store.sealing import open_body

# Ids asked for in one statement: under SQLite's oldest limit on bound parameters (999).
FETCH_CHUNK = 500
# Build (patient, type) indexes in transactions of this many, so serving hosts wait little.
BUILD_BATCH = 200

# Opened indexes kept across invocations, per store: about 4 bytes held per byte of index opened
# (ids, date columns, token sets and sort orders), so a few of the largest charts' Observations.
INDEX_CACHE_BYTES = 32 * 1024 * 1024
CipherFor = Callable[[str], FieldCipher]
# (resource type, id, patient, JSON body), as the store writes its rows.
Row = tuple[str, str, str | None, str]


def _associated(patient_id: str, resource_type: str) -> bytes:
    return json.dumps(["wardfn-search-index-v1", patient_id, resource_type]).encode()


def seal(cipher: FieldCipher, index: Index, patient_id: str) -> bytes:
    return cipher.seal(index.to_bytes(), _associated(patient_id, index.resource_type))


def open_index(cipher: FieldCipher, patient_id: str, resource_type: str, sealed: bytes) -> bytes:
    try:
        return cipher.open(bytes(sealed), _associated(patient_id, resource_type))
    except KeyUnreadable:
        # Names neither the patient nor the type: that is patient data.
        raise StoreUnavailable(
            "a stored search index failed its integrity check (altered, or moved from another row): "
            "restore the database from a backup"
        ) from None


def update(conn: Connection, cipher_for: CipherFor, rows: Sequence[Row]) -> None:
    """Index these freshly written rows, in the caller's transaction (after the rows are written)."""
    touched: dict[tuple[str, str], list[dict[str, object]]] = defaultdict(list)
    for resource_type, _, patient_id, body in rows:
        if patient_id is not None and resource_type in SEARCH_PARAMETERS:
            touched[patient_id, resource_type].append(orjson.loads(body))
    for (patient_id, resource_type), resources in touched.items():
        cipher = cipher_for(patient_id)
        stored = conn.execute(
            "SELECT version, sealed FROM search_index WHERE patient_id = ? AND resource_type = ?",
            (patient_id, resource_type),
        ).fetchone()
        if stored is not None and stored[0] == INDEX_VERSION:
            index = Index.from_bytes(resource_type, open_index(cipher, patient_id, resource_type, stored[1]))
        else:
            # No index yet (or one of another version): made from what is stored, the new rows included.
            fresh = {str(r["id"]) for r in resources}
            index = _from_rows(conn, cipher, patient_id, resource_type, skip=fresh)
        for resource in resources:
            index.add(resource)
        _store(conn, cipher, index, patient_id)


def build_pending(conn: Connection, cipher_for: CipherFor, limit: int = BUILD_BATCH) -> int:
    """Index up to `limit` (patient, type) pairs that have resources and no current index; returns how many."""
    types = sorted(SEARCH_PARAMETERS)
    pending = conn.execute(
        "SELECT DISTINCT r.patient_id, r.resource_type FROM resources r "
        f"WHERE r.resource_type IN ({','.join('?' * len(types))}) AND r.patient_id IS NOT NULL "
        "AND r.patient_id NOT IN (SELECT patient_id FROM erasures) "
        "AND NOT EXISTS (SELECT 1 FROM search_index s WHERE s.patient_id = r.patient_id "
        "AND s.resource_type = r.resource_type AND s.version = ?) "
        "ORDER BY 1, 2 LIMIT ?",
        (*types, INDEX_VERSION, limit),
    ).fetchall()
    for patient_id, resource_type in pending:
        cipher = cipher_for(patient_id)
        _store(conn, cipher, _from_rows(conn, cipher, patient_id, resource_type, skip=set()), patient_id)
    return len(pending)


def built(conn: Connection) -> bool:
    """True once this version's index has been built for every stored resource."""
    return conn.execute("SELECT 1 FROM search_index_builds WHERE version = ?", (INDEX_VERSION,)).fetchone() is not None


def mark_built(conn: Connection) -> None:
    conn.execute(
        "INSERT INTO search_index_builds (version, built_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (INDEX_VERSION, datetime.now(UTC).isoformat(timespec="seconds")),
    )


def erase(conn: Connection, patient_id: str) -> None:
    """Delete a patient's indexes (their key is destroyed too: this only saves the space and the sizes)."""
    conn.execute("DELETE FROM search_index WHERE patient_id = ?", (patient_id,))


# The patient's data key as wrapped under this host's KEK, and their index of the type if any.
# The index's version and fingerprint (its AES-GCM nonce and tag: a new one each time it is sealed,
# and no one without the key can alter the blob and keep the tag), not the blob itself: the
# fingerprint has a column of its own, written with the blob, since reading it from the blob loads
# all of it.
# SQLite is told to read them from the covering index of migration 8: it would otherwise read the
# row, and reach a column stored after the blob by walking the blob's overflow pages.
KEY_AND_INDEX_SQL = (
    "SELECT k.wrapped, s.version, s.fingerprint "
    "FROM data_keys k LEFT JOIN search_index s{indexed_by} ON s.patient_id = k.owner AND s.resource_type = ? "
    "WHERE k.owner = ? AND k.kek_id = ?"
)
KEY_AND_INDEX = {
    "sqlite": KEY_AND_INDEX_SQL.format(indexed_by=" INDEXED BY search_index_fingerprint"),
    "postgresql": KEY_AND_INDEX_SQL.format(indexed_by=""),
}
SEALED_SQL = "SELECT sealed FROM search_index WHERE patient_id = ? AND resource_type = ?"
ANY_RESOURCE_SQL = "SELECT 1 FROM resources WHERE patient_id = ? LIMIT 1"


class IndexCache:
    """Opened indexes, least recently used first out past `max_bytes`, keyed by (patient, type, the
    sealed blob's fingerprint): a rewritten, erased or altered index is never answered from here.

    It saves decrypting and parsing an index again, never a decision: every search still reads the
    patient's key and index row, and is still asked only within the invocation's scope."""

    def __init__(self, max_bytes: int = INDEX_CACHE_BYTES) -> None:
        self._max = max_bytes
        self._held = 0
        self._kept: OrderedDict[tuple[str, str, bytes], tuple[Columns, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, bytes]) -> Columns | None:
        with self._lock:
            found = self._kept.get(key)
            if found is None:
                return None
            self._kept.move_to_end(key)
            return found[0]

    def put(self, key: tuple[str, str, bytes], columns: Columns, size: int) -> None:
        cost = 4 * size
        if cost > self._max:
            return
        with self._lock:
            if key in self._kept:
                return
            self._kept[key] = (columns, cost)
            self._held += cost
            while self._held > self._max:
                _, (_, freed) = self._kept.popitem(last=False)
                self._held -= freed

    def forget(self, patient_id: str) -> None:
        """Drop every index kept for `patient_id` (an erased patient's plaintext leaves memory with their key)."""
        with self._lock:
            for key in [k for k in self._kept if k[0] == patient_id]:
                self._held -= self._kept.pop(key)[1]


# Indexes a search opened, kept for the searches that follow in the same invocation (a summary asks
# one Observation index twenty-odd questions): (patient, type) -> (their cipher, the opened columns).
Opened = dict[tuple[str, str], tuple[FieldCipher, Columns]]


def query(
    conn: Connection,
    kek_id: str,
    open_key: Callable[[bytes | None], FieldCipher | None],
    patient_id: str,
    wanted: SearchQuery,
    opened: Opened | None = None,
    cache: IndexCache | None = None,
) -> list[str]:
    """The bodies `wanted` selects among the patient's resources of its type, in its order, projected.

    `open_key` turns the patient's wrapped data key (None: none under this host's KEK) into their
    cipher, None for an erased patient, or raises. `opened`, if given, keeps what this search opens for
    the next ones and answers from what an earlier one opened: it must not outlive one invocation.
    `cache` keeps opened indexes across invocations, checked against the row's fingerprint each time.
    """
    resource_type = wanted.resource_type
    if opened is not None and wanted.indexed and (patient_id, resource_type) in opened:
        kept, ready = opened[(patient_id, resource_type)]
        ids = wanted.select(ready)
        return [wanted.project(body) for body in _fetch(conn, kept, patient_id, resource_type, ids)]
    row = conn.execute(KEY_AND_INDEX[conn.dialect], (resource_type, patient_id, kek_id)).fetchone()
    if row is None and conn.execute(ANY_RESOURCE_SQL, (patient_id,)).fetchone() is None:
        return []  # no such patient: nothing to find, as for a whole-type search
    cipher = open_key(row[0] if row is not None else None)
    if cipher is None:
        return []
    version, fingerprint = (row[1], row[2]) if row is not None else (None, None)
    if not wanted.indexed:
        ids = [
            rid
            for (rid,) in conn.execute(
                "SELECT id FROM resources WHERE patient_id = ? AND resource_type = ? ORDER BY id",
                (patient_id, resource_type),
            )
        ]
        ids = wanted.page(ids)
    elif version is None:
        return []  # the index is written with the resources: none means none of this type
    else:
        key = (patient_id, resource_type, bytes(fingerprint or b""))
        if fingerprint is None:
            cache = None  # no fingerprint to tell this index from the next: opened, never kept
        columns = cache.get(key) if cache is not None and version == INDEX_VERSION else None
        if columns is None:
            fresh = _open(conn, cipher, patient_id, resource_type, version, key, cache)
            if fresh is None:
                return []  # rewritten to nothing between the two reads
            columns = fresh
        if opened is not None:
            opened[(patient_id, resource_type)] = (cipher, columns)
        ids = wanted.select(columns)
    return [wanted.project(body) for body in _fetch(conn, cipher, patient_id, resource_type, ids)]


def _open(
    conn: Connection,
    cipher: FieldCipher,
    patient_id: str,
    resource_type: str,
    version: int,
    key: tuple[str, str, bytes],
    cache: IndexCache | None,
) -> Columns | None:
    if version != INDEX_VERSION:
        # Written by a host of another version: evaluated from the resources themselves, never kept.
        return Columns(_from_rows(conn, cipher, patient_id, resource_type, skip=set()).to_bytes())
    row = conn.execute(SEALED_SQL, (patient_id, resource_type)).fetchone()
    if row is None:
        return None
    sealed = bytes(row[0])
    if fingerprint_of(sealed) != key[2]:
        cache = None  # rewritten between the two reads: opened, answered from, not kept under the old fingerprint
    data = open_index(cipher, patient_id, resource_type, sealed)
    columns = Columns(data)
    if cache is not None:
        cache.put(key, columns, len(data))
    return columns


def _fetch(conn: Connection, cipher: FieldCipher, patient_id: str, resource_type: str, ids: list[str]) -> list[str]:
    """Decrypt only these resources, in this order; an id no longer the patient's is left out."""
    found: dict[str, str] = {}
    for start in range(0, len(ids), FETCH_CHUNK):
        chunk = ids[start : start + FETCH_CHUNK]
        for rid, body in conn.execute(
            f"SELECT id, body FROM resources WHERE patient_id = ? AND resource_type = ? "
            f"AND id IN ({','.join('?' * len(chunk))})",
            (patient_id, resource_type, *chunk),
        ):
            found[rid] = open_body(cipher, resource_type, rid, patient_id, body)
    return [found[rid] for rid in ids if rid in found]


def _from_rows(
    conn: Connection, cipher: FieldCipher, patient_id: str, resource_type: str, skip: Iterable[str]
) -> Index:
    skipped = set(skip)
    index = Index(resource_type)
    for rid, body in conn.execute(
        "SELECT id, body FROM resources WHERE patient_id = ? AND resource_type = ? ORDER BY id",
        (patient_id, resource_type),
    ):
        if rid not in skipped:
            index.add(orjson.loads(open_body(cipher, resource_type, rid, patient_id, body)))
    return index


def _store(conn: Connection, cipher: FieldCipher, index: Index, patient_id: str) -> None:
    sealed = seal(cipher, index, patient_id)
    conn.execute(
        "INSERT INTO search_index (patient_id, resource_type, version, sealed, fingerprint) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (patient_id, resource_type) DO UPDATE SET version = excluded.version, sealed = excluded.sealed, "
        "fingerprint = excluded.fingerprint",
        (patient_id, index.resource_type, INDEX_VERSION, sealed, fingerprint_of(sealed)),
    )


def fingerprint_of(sealed: bytes) -> bytes:
    """A sealed index's nonce and tag: new each time it is sealed, bound to its content by the key."""
    return sealed[:12] + sealed[-16:]
