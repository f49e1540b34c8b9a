"""Adding resources that may already be stored: each compared with its stored body, only the changed written.

Bodies are sealed with a fresh nonce, so the ciphertexts of one resource never match: a stored
body is opened (under its patient's key, in the caller's transaction) and compared as JSON with
the new one. What is unchanged is not written, so re-importing a bundle that nothing changed
writes nothing, and says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from host.store.database import Connection
from host.store.rows import ResourceRows
from host.store.sealing import Sealer

# Rows looked up at once: an OR of this many pairs stays well inside SQLite's expression depth (1000).
LOOKUP_BATCH = 200
UPSERT_SQL = (
    "INSERT INTO resources (resource_type, id, patient_id, body) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (resource_type, id) DO UPDATE SET patient_id = excluded.patient_id, body = excluded.body"
)

Row = tuple[str, str, str | None, str]


@dataclass
class Tally:
    """How many were new, updated (stored, and different) and unchanged."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        return self.new + self.updated + self.unchanged

    def add(self, other: Tally) -> None:
        self.new += other.new
        self.updated += other.updated
        self.unchanged += other.unchanged


@dataclass
class Written:
    """What adding resources did: to the resources, and to the patients (a Patient resource given) among them.

    A patient is new when their Patient resource was not stored; updated when it, or any of their
    resources given with it, was new or changed; else unchanged."""

    resources: Tally = field(default_factory=Tally)
    patients: Tally = field(default_factory=Tally)

    @property
    def changed(self) -> bool:
        return self.resources.new + self.resources.updated > 0

    def add(self, other: Written) -> None:
        self.resources.add(other.resources)
        self.patients.add(other.patients)


def upsert(conn: Connection, sealer: Sealer, rows: ResourceRows) -> tuple[Written, list[dict[str, Any]], list[Row]]:
    """Write the new and changed rows, in the caller's transaction; returns what was done, the
    Patient resources written (their search keys need indexing again), and the rows written (in
    plain: the search index takes them)."""
    given = _last_of_each(rows)
    stored = dict(_stored(conn, list(given)))
    written = Written()
    changed: dict[tuple[str, str], str] = {}  # (type, id) -> "new" or "updated"
    for key, (resource_type, resource_id, patient_id, body) in given.items():
        before = stored.get(key)
        if before is None:
            changed[key] = "new"
        elif before[0] != patient_id or not _same(sealer.open(resource_type, resource_id, patient_id, before[1]), body):
            changed[key] = "updated"
    written.resources = Tally(
        new=sum(1 for kind in changed.values() if kind == "new"),
        updated=sum(1 for kind in changed.values() if kind == "updated"),
        unchanged=len(given) - len(changed),
    )
    touched = {given[key][2] for key in changed}
    for key in given:
        if key[0] != "Patient":
            continue
        if changed.get(key) == "new":
            written.patients.new += 1
        elif key in changed or key[1] in touched:
            written.patients.updated += 1
        else:
            written.patients.unchanged += 1
    plain = [given[key] for key in changed]
    sealed = [(t, i, p, sealer.seal(t, i, p, body)) for (t, i, p, body) in plain]
    if sealed:
        conn.executemany(UPSERT_SQL, sealed)
    patients = [r for r in rows.patients if ("Patient", r["id"]) in changed]
    return written, patients, plain


def _last_of_each(rows: Iterable[Row]) -> dict[tuple[str, str], Row]:
    """The rows by (type, id); a resource given twice counts once, as its last version."""
    given: dict[tuple[str, str], Row] = {}
    for row in rows:
        given.pop((row[0], row[1]), None)
        given[(row[0], row[1])] = row
    return given


def _stored(conn: Connection, keys: list[tuple[str, str]]) -> Iterator[tuple[tuple[str, str], tuple[str | None, Any]]]:
    """The stored (patient, sealed body) of each of these (type, id) that is stored."""
    for start in range(0, len(keys), LOOKUP_BATCH):
        batch = keys[start : start + LOOKUP_BATCH]
        wanted = " OR ".join(["(resource_type = ? AND id = ?)"] * len(batch))
        params = [value for key in batch for value in key]
        for resource_type, resource_id, patient_id, body in conn.execute(
            f"SELECT resource_type, id, patient_id, body FROM resources WHERE {wanted}", params
        ):
            yield (resource_type, resource_id), (patient_id, body)


def _same(stored: str, new: str) -> bool:
    return stored == new or json.loads(stored) == json.loads(new)
