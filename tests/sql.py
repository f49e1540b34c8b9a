"""SQL run behind the host's back, as someone holding the database could: no dependency on the
host's own database layer, so a test can change what the host sees."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg


def execute(target: Path | str, sql: str, *params: Any) -> None:
    """Change a database behind the host's back (the SQLite file at a path, or a PostgreSQL URL), in
    one committed transaction, with `?` placeholders for both."""
    if isinstance(target, str):
        with psycopg.connect(target) as conn:  # commits on leaving the block
            conn.execute(sql.replace("%", "%%").replace("?", "%s"), params)
        return
    conn = sqlite3.connect(target)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()
