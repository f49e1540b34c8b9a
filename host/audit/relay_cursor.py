"""The audit relay's durable cursor: the seq up to which the broker has confirmed every record.

The audit table is the outbox: a record is written with itself, atomically, in seq order. What
remains to send is every record after the cursor, so "marked sent" is the cursor moving, and it
moves only after the broker confirmed everything up to it. One row, `audit_relay` (migration 3),
in the audit's database.
"""

from __future__ import annotations

from host.errors import AuditUnavailable
from host.store.database import Database

SEED = "INSERT INTO audit_relay (id, sent_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING"
READ = "SELECT sent_seq FROM audit_relay WHERE id = 1"
# Compare-and-set: a relay that lost its lock without knowing cannot move the cursor under another.
ADVANCE = "UPDATE audit_relay SET sent_seq = ? WHERE id = 1 AND sent_seq = ?"


class RelayCursor:
    """The cursor row. Owns `database` (closes it on close): never the connection audit appends use."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def sent_seq(self) -> int:
        """The seq of the last record the broker confirmed (0: none yet). A read only: no row yet is 0."""
        try:
            with self._db.connection() as conn:
                row = conn.execute(READ).fetchone()
        except self._db.errors as exc:
            raise self._unavailable(exc) from exc
        return int(row[0]) if row else 0

    def advance(self, expected: int, sent: int) -> bool:
        """Move the cursor from `expected` to `sent`; False if it no longer stood at `expected`."""
        try:
            with self._db.connection() as conn:
                if expected == 0:
                    conn.execute(SEED)  # the first move makes the row
                return bool(conn.execute(ADVANCE, (sent, expected)).rowcount == 1)
        except self._db.errors as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        self._db.close()

    def _unavailable(self, exc: BaseException) -> AuditUnavailable:
        return AuditUnavailable(
            f"could not read or move the audit relay's cursor in {self._db.display} ({self._db.describe(exc)}): "
            f"{self._db.advice(exc)}"
        )
