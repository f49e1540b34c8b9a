"""Resource bodies sealed under their patient's data key and bound to their row; patients' blind search keys."""

from __future__ import annotations

import json
from typing import Any

from host.errors import InvalidRequest, StoreUnavailable
from host.store import keyring
from host.store.database import Connection
from host.store.directory import patient_keys
from host.store.encryption import BlindIndex, FieldCipher, KeyProvider, KeyUnreadable


class Sealer:
    """Seals bodies under their patient's data key (made on first use), in the caller's transaction."""

    def __init__(self, conn: Connection, keys: KeyProvider, shared: FieldCipher) -> None:
        self._conn = conn
        self._keys = keys
        self._shared = shared
        self._ciphers: dict[str, FieldCipher] = {}

    def seal(self, resource_type: str, resource_id: str, patient_id: str | None, body: str) -> bytes:
        return self._cipher(patient_id).seal(body.encode(), _associated(resource_type, resource_id, patient_id))

    def cipher(self, patient_id: str) -> FieldCipher:
        """The patient's cipher (for what else is sealed under their key, such as their search index)."""
        return self._cipher(patient_id)

    def open(self, resource_type: str, resource_id: str, patient_id: str | None, body: Any) -> str:
        """A stored body of this row, opened (to compare a resource given again with what is stored)."""
        return open_body(self._cipher(patient_id), resource_type, resource_id, patient_id, body)

    def _cipher(self, patient_id: str | None) -> FieldCipher:
        if patient_id is None:
            return self._shared
        cipher = self._ciphers.get(patient_id)
        if cipher is None:
            if ":" in patient_id:
                raise InvalidRequest("a resource names a patient id with a colon: FHIR ids have none")
            if keyring.erased(self._conn, patient_id):
                raise InvalidRequest(
                    "a resource belongs to a patient who was erased: an erased patient's id is never reused"
                )
            key = keyring.data_key(self._conn, self._keys, patient_id, create=True)
            assert key is not None
            cipher = self._ciphers[patient_id] = FieldCipher(key)
        return cipher


def _associated(resource_type: str, resource_id: str, patient_id: str | None) -> bytes:
    """What a sealed body is bound to: its row. A body moved to another row does not open."""
    return json.dumps(["wardfn-resource-v1", resource_type, resource_id, patient_id]).encode()


def open_body(cipher: FieldCipher, resource_type: str, resource_id: str, patient_id: str | None, body: Any) -> str:
    if not isinstance(body, bytes):
        raise StoreUnavailable("the record store holds an unencrypted record: reopen it to encrypt it")
    try:
        return cipher.open(body, _associated(resource_type, resource_id, patient_id)).decode()
    except KeyUnreadable:
        # Names neither the patient nor the resource: that is patient data.
        raise StoreUnavailable(
            "a stored record failed its integrity check (altered, or moved from another row): "
            "restore the database from a backup"
        ) from None


def encrypt_plaintext(conn: Connection, sealer: Sealer, blind: BlindIndex) -> bool:
    """Encrypt, in place, the rows of a database made before encryption at rest; True if there were any."""
    rows = conn.execute(
        "SELECT resource_type, id, patient_id, body FROM resources WHERE typeof(body) = 'text'"
    ).fetchall()
    if not rows:
        return False
    conn.executemany(
        "UPDATE resources SET body = ? WHERE resource_type = ? AND id = ?",
        [(sealer.seal(t, i, p, body), t, i) for t, i, p, body in rows],
    )
    conn.execute("DELETE FROM patient_index")
    patients = [json.loads(body) for t, _, _, body in rows if t == "Patient"]
    index_patients(conn, patients, blind)
    return True


def index_patients(conn: Connection, patients: list[dict[str, Any]], blind: BlindIndex) -> None:
    """Replace the search keys of these patients, as blind indexes, in the caller's transaction."""
    for patient in patients:
        conn.execute("DELETE FROM patient_index WHERE patient_id = ?", (patient["id"],))
        conn.executemany(
            "INSERT INTO patient_index (patient_id, kind, key) VALUES (?, ?, ?)",
            [(patient["id"], kind, blind(kind, key)) for kind, key in sorted(patient_keys(patient))],
        )
