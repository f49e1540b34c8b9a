"""The audit relay's durable cursor: the seq up to which the broker has confirmed every record.

The audit table is the outbox: a record is written with itself, atomically, in seq order. What
remains to send is every record after the cursor, so "marked sent" is the cursor moving, and it
moves only after the broker confirmed everything up to it. One row, in the audit's database.

All of the relay's SQL is here, plain and portable (`?` placeholders, no SQLite-only syntax but
the connection), so that another database engine needs only this module ported.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from host.errors import AuditUnavailable

BUSY_TIMEOUT_S = 5.0

CREATE = "CREATE TABLE IF NOT EXISTS audit_relay (id INTEGER PRIMARY KEY, sent_seq INTEGER NOT NULL)"
SEED = "INSERT INTO audit_relay (id, sent_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING"
READ = "SELECT sent_seq FROM audit_relay WHERE id = 1"
# Compare-and-set: a relay that lost its lock without knowing cannot move the cursor under another.
ADVANCE = "UPDATE audit_relay SET sent_seq = ? WHERE id = 1 AND sent_seq = ?"


class RelayCursor:
    """The cursor row, on a connection of its own (never the one audit appends use)."""

    def __init__(self, database: Path) -> None:
        self.database = database
        try:
            self._conn = sqlite3.connect(
                database, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(CREATE)
            if self._conn.execute(READ).fetchone() is None:  # a write only the first time: status stays a read
                self._conn.execute(SEED)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def sent_seq(self) -> int:
        """The seq of the last record the broker confirmed (0: none yet)."""
        return self._one(READ)

    def advance(self, expected: int, sent: int) -> bool:
        """Move the cursor from `expected` to `sent`; False if it no longer stood at `expected`."""
        try:
            return self._conn.execute(ADVANCE, (sent, expected)).rowcount == 1
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        self._conn.close()

    def _one(self, sql: str) -> int:
        try:
            row = self._conn.execute(sql).fetchone()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return int(row[0]) if row else 0

    def _unavailable(self, exc: sqlite3.Error) -> AuditUnavailable:
        return AuditUnavailable(
            f"could not read or move the audit relay's cursor in {self.database} ({type(exc).__name__}: {exc}); "
            "check the database file is readable and writable"
        )
