"""A database's key tables: the KEKs it knows by id, and every data key wrapped under them.

`data_keys` holds one row per (owner, KEK): the owner is a patient id, or a reserved name
(with a colon, which FHIR ids never have) for the store's own keys: the blind-index key
and the shared key of resources that belong to no patient. An owner normally has one row;
during a KEK rotation it has one under each KEK, so hosts on either key read everything.

Every function here runs inside the caller's transaction on the caller's connection. The tables
are made by host.migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime

from host.errors import ConfigurationError, StoreUnavailable
from host.store.database import Connection
from host.store.encryption import KeyProvider, KeyUnreadable, new_data_key

BLIND_INDEX_OWNER = "wardfn:blind-index"
SHARED_OWNER = "wardfn:shared"


def known_keks(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT kek_id FROM keks ORDER BY added_at, kek_id")]


def check_kek(conn: Connection, provider: KeyProvider, where: str) -> None:
    """Register the KEK of a new database, or refuse one this database's keys are not wrapped under."""
    known = known_keks(conn)
    if not known:
        if conn.execute("SELECT 1 FROM data_keys LIMIT 1").fetchone() is not None:
            raise ConfigurationError(
                f"{where} holds data keys but no key-encryption key ids: the key tables are damaged"
            )
        _register(conn, provider.kek_id)
        return
    if provider.kek_id not in known:
        raise ConfigurationError(
            f"wrong key-encryption key for {where}: this key's id is {provider.kek_id}, the database's data keys are "
            f"wrapped under {', '.join(known)}; set WARDFN_KEK or WARDFN_KEK_FILE to that key (refusing to start "
            "rather than serve unreadable records)"
        )


def data_key(conn: Connection, provider: KeyProvider, owner: str, create: bool) -> bytes | None:
    """The owner's data key unwrapped; made and stored if `create` and the owner has none; else None."""
    row = conn.execute(
        "SELECT wrapped FROM data_keys WHERE owner = ? AND kek_id = ?", (owner, provider.kek_id)
    ).fetchone()
    if row is not None:
        return unwrap(provider, row[0], owner)
    if not create:
        return None
    if conn.execute("SELECT 1 FROM data_keys WHERE owner = ? LIMIT 1", (owner,)).fetchone() is not None:
        # A second key would orphan what the first one sealed.
        raise StoreUnavailable(
            f"a data key is wrapped only under another key-encryption key than this host's ({provider.kek_id}): "
            "finish the rotation with `wardfn keys rotate`, or run this host with the key it names"
        )
    key = new_data_key()
    conn.execute(
        "INSERT INTO data_keys (owner, kek_id, wrapped) VALUES (?, ?, ?)",
        (owner, provider.kek_id, provider.wrap(key, owner)),
    )
    return key


def unwrap(provider: KeyProvider, wrapped: bytes, owner: str) -> bytes:
    try:
        return provider.unwrap(wrapped, owner)
    except KeyUnreadable:
        raise StoreUnavailable(
            f"a data key stored under key-encryption key {provider.kek_id} does not unwrap with it: "
            "the key tables were altered or rows moved; restore them from a backup"
        ) from None


def rewrap(conn: Connection, source: KeyProvider, target: KeyProvider, limit: int) -> int:
    """Wrap up to `limit` data keys held under `source` but not yet under `target` under `target` too."""
    _register(conn, target.kek_id)
    rows = conn.execute(
        "SELECT o.owner, o.wrapped FROM data_keys o WHERE o.kek_id = ? AND NOT EXISTS "
        "(SELECT 1 FROM data_keys n WHERE n.owner = o.owner AND n.kek_id = ?) LIMIT ?",
        (source.kek_id, target.kek_id, limit),
    ).fetchall()
    conn.executemany(
        "INSERT INTO data_keys (owner, kek_id, wrapped) VALUES (?, ?, ?)",
        [(owner, target.kek_id, target.wrap(unwrap(source, wrapped, owner), owner)) for owner, wrapped in rows],
    )
    return len(rows)


def forget_kek(conn: Connection, kek_id: str) -> int:
    """Delete every wrapping under `kek_id` and the id itself; refuses if some key would be lost."""
    (orphans,) = conn.execute(
        "SELECT COUNT(*) FROM data_keys o WHERE o.kek_id = ? AND NOT EXISTS "
        "(SELECT 1 FROM data_keys n WHERE n.owner = o.owner AND n.kek_id != o.kek_id)",
        (kek_id,),
    ).fetchone()
    if orphans:
        raise ConfigurationError(
            f"{orphans} data keys are wrapped only under key-encryption key {kek_id}: rotate them first"
        )
    deleted = conn.execute("DELETE FROM data_keys WHERE kek_id = ?", (kek_id,)).rowcount
    conn.execute("DELETE FROM keks WHERE kek_id = ?", (kek_id,))
    return int(deleted)


def erase(conn: Connection, patient_id: str) -> int:
    """Destroy a patient's data key (every wrapping) and mark them erased; returns wrappings deleted."""
    deleted = conn.execute("DELETE FROM data_keys WHERE owner = ?", (patient_id,)).rowcount
    conn.execute(
        "INSERT INTO erasures (patient_id, erased_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (patient_id, datetime.now(UTC).isoformat(timespec="seconds")),
    )
    return int(deleted)


def erased(conn: Connection, patient_id: str) -> bool:
    return conn.execute("SELECT 1 FROM erasures WHERE patient_id = ?", (patient_id,)).fetchone() is not None


def counts(conn: Connection) -> dict[str, int]:
    """Data keys wrapped under each known KEK id (0 for an id with none)."""
    found = dict(conn.execute("SELECT kek_id, COUNT(*) FROM data_keys GROUP BY kek_id").fetchall())
    return {kek_id: int(found.get(kek_id, 0)) for kek_id in known_keks(conn)}


def _register(conn: Connection, kek_id: str) -> None:
    conn.execute(
        "INSERT INTO keks (kek_id, added_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (kek_id, datetime.now(UTC).isoformat(timespec="microseconds")),
    )
