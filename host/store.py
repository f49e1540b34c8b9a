"""The embedded store of FHIR-shaped resources: one SQLite table, indexed by patient.

Each resource is kept as the JSON text it was added as, under its type and id, with the
patient it belongs to. Functions read whole resources by (patient, type), nothing finer.

The store is used from the web server's thread pool. Every thread gets its own connection
(a sqlite3 connection must not run two statements at once) and the file is in WAL mode,
so reads run concurrently with each other and with a writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from host.consent import consented, directives
from host.directory import DirectoryQuery, minimal_match, patient_keys
from host.errors import InvalidRequest, StoreUnavailable

BUSY_TIMEOUT_S = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    patient_id TEXT,
    body TEXT NOT NULL,
    PRIMARY KEY (resource_type, id)
);
-- (patient, type, id): every search is by patient and type, ordered by id. With only
-- (patient, type), SQLite preferred the primary key for the ORDER BY and scanned every
-- resource of the type: tens of milliseconds a search at 1,000 patients.
DROP INDEX IF EXISTS resources_by_patient;
CREATE INDEX IF NOT EXISTS resources_by_patient_type_id ON resources (patient_id, resource_type, id);
CREATE TABLE IF NOT EXISTS patient_index (
    patient_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS patient_index_by_key ON patient_index (kind, key);
CREATE INDEX IF NOT EXISTS patient_index_by_patient ON patient_index (patient_id);
"""


class ResourceStore:
    """FHIR resources in a SQLite file, safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            with self._translate("create"):
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = self._connection()
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
                _backfill_index(conn)
        except StoreUnavailable:
            self.close()
            raise

    def add_resources(self, resources: Iterable[dict[str, Any]]) -> int:
        """Add (or replace, by type and id) resources in one transaction; returns how many."""
        rows = _Rows(resources)
        with self._translate("write to"):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO resources (resource_type, id, patient_id, body) VALUES (?, ?, ?, ?)",
                    rows,
                )
                _index_patients(conn, rows.patients)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return rows.count

    def search(self, patient_id: str, resource_type: str) -> list[str]:
        """The JSON bodies of one patient's resources of one type ("Patient": the patient itself)."""
        with self._translate("read"):
            cursor = self._connection().execute(
                "SELECT body FROM resources WHERE patient_id = ? AND resource_type = ? ORDER BY id",
                (patient_id, resource_type),
            )
            return [body for (body,) in cursor]

    def patient_exists(self, patient_id: str) -> bool:
        """True if a Patient resource with this id is stored."""
        with self._translate("read"):
            row = (
                self._connection()
                .execute("SELECT 1 FROM resources WHERE resource_type = 'Patient' AND id = ?", (patient_id,))
                .fetchone()
            )
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
        members: set[str] = set()
        for body in self.search(patient_id, "CareTeam"):
            team = json.loads(body)
            if team.get("status") != "active":
                continue
            for participant in team.get("participant") or []:
                member = participant.get("member") if isinstance(participant, dict) else None
                reference = member.get("reference") if isinstance(member, dict) else None
                if isinstance(reference, str) and reference.startswith("Practitioner/"):
                    members.add(reference.removeprefix("Practitioner/"))
        return sorted(members)

    def list_patients(self, limit: int) -> list[dict[str, str]]:
        """Up to `limit` patients as {"id", "name"}, ordered by id. For development only."""
        with self._translate("read"):
            rows = (
                self._connection()
                .execute(
                    "SELECT id, body FROM resources WHERE resource_type = 'Patient' ORDER BY id LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
        return [{"id": patient_id, "name": _display_name(json.loads(body))} for patient_id, body in rows]

    def count_patients(self) -> int:
        """How many Patient resources are stored."""
        with self._translate("read"):
            (count,) = (
                self._connection().execute("SELECT COUNT(*) FROM resources WHERE resource_type = 'Patient'").fetchone()
            )
        return int(count)

    def directory_search(self, query: DirectoryQuery, limit: int) -> list[dict[str, str | None]]:
        """At most `limit` patients matching every criterion of `query`, as minimal fields only."""
        pairs = query.keys()
        if not pairs:
            return []
        clauses = " INTERSECT ".join(
            f"SELECT patient_id FROM patient_index WHERE kind IN ({','.join('?' * len(kinds))}) AND key = ?"
            for kinds, _ in pairs
        )
        params: list[Any] = [value for kinds, key in pairs for value in (*kinds, key)]
        with self._translate("read"):
            conn = self._connection()
            ids = [row[0] for row in conn.execute(f"{clauses} ORDER BY 1 LIMIT ?", [*params, limit])]
            bodies = [
                row[0]
                for pid in ids
                for row in conn.execute("SELECT body FROM resources WHERE resource_type = 'Patient' AND id = ?", (pid,))
            ]
        return [minimal_match(json.loads(body)) for body in bodies]

    def healthy(self) -> bool:
        """True if the store answers a trivial query (for readiness checks); never raises."""
        try:
            with self._translate("read"):
                self._connection().execute("SELECT 1 FROM resources LIMIT 1").fetchall()
        except StoreUnavailable:
            return False
        return True

    def close(self) -> None:
        """Close every thread's connection. The store cannot be used afterwards."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the record store is closed: the host is shutting down, retry later")
            # check_same_thread=False only so that close() may close it from another thread;
            # otherwise the connection is used by the thread that opened it alone.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        # sqlite3 messages name tables and constraints, never bound values, so no patient data.
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(
                f"could not {action} the record store at {self.path} ({type(exc).__name__}: {exc}); "
                "check that the file and its directory exist and are readable and writable"
            ) from exc


def _backfill_index(conn: sqlite3.Connection) -> None:
    """Give a database made before the search index its keys, once."""
    if conn.execute("SELECT 1 FROM patient_index LIMIT 1").fetchone() is not None:
        return
    patients = [json.loads(b) for (b,) in conn.execute("SELECT body FROM resources WHERE resource_type = 'Patient'")]
    if patients:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _index_patients(conn, patients)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _index_patients(conn: sqlite3.Connection, patients: list[dict[str, Any]]) -> None:
    """Replace the search keys of these patients, in the caller's transaction."""
    for patient in patients:
        conn.execute("DELETE FROM patient_index WHERE patient_id = ?", (patient["id"],))
        conn.executemany(
            "INSERT INTO patient_index (patient_id, kind, key) VALUES (?, ?, ?)",
            [(patient["id"], kind, key) for kind, key in sorted(patient_keys(patient))],
        )


class _Rows:
    """Resources as table rows, counted as executemany consumes them (it may be a generator)."""

    def __init__(self, resources: Iterable[dict[str, Any]]) -> None:
        self._resources = resources
        self.count = 0
        self.patients: list[dict[str, Any]] = []

    def __iter__(self) -> Iterator[tuple[str, str, str | None, str]]:
        for resource in self._resources:
            resource_type = resource.get("resourceType")
            resource_id = resource.get("id")
            if not isinstance(resource_type, str) or not isinstance(resource_id, str):
                raise InvalidRequest(
                    f"resource number {self.count + 1} has no string resourceType and id: "
                    "give every resource both before adding it"
                )
            self.count += 1
            if resource_type == "Patient":
                self.patients.append(resource)
            body = json.dumps(resource, separators=(",", ":"), ensure_ascii=False)
            yield resource_type, resource_id, patient_of(resource), body


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource belongs to, or None if it names none."""
    if resource.get("resourceType") == "Patient":
        resource_id = resource.get("id")
        return resource_id if isinstance(resource_id, str) else None
    # Most types use `subject`, AllergyIntolerance and Consent use `patient`.
    for field in ("subject", "patient"):
        target = resource.get(field)
        reference = target.get("reference") if isinstance(target, dict) else None
        if isinstance(reference, str):
            return _patient_id(reference)
    return None


def _patient_id(reference: str) -> str | None:
    """ "Patient/<id>", also absolute ("<base>/Patient/<id>") or a bundle's "urn:uuid:<id>"."""
    if reference.startswith("urn:uuid:"):
        return reference.removeprefix("urn:uuid:") or None
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    return None


def _display_name(patient: dict[str, Any]) -> str:
    names = patient.get("name") or [{}]
    official = next((n for n in names if n.get("use") == "official"), names[0])
    if official.get("text"):
        return str(official["text"])
    return " ".join([*official.get("given", []), official.get("family", "")]).strip()
