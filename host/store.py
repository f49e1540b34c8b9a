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

from host.consent import consented
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


class _Rows:
    """Resources as table rows, counted as executemany consumes them (it may be a generator)."""

    def __init__(self, resources: Iterable[dict[str, Any]]) -> None:
        self._resources = resources
        self.count = 0

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
