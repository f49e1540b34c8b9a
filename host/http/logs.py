"""The log format: one JSON object a line on stdout, built without patient data."""

from __future__ import annotations

import json
import logging
import sys


def configure_logging() -> None:
    """One JSON object a line on stdout; messages are built without patient data."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("wardfn")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    # The connection pool's warnings (a connection lost, a reconnection refused) are how a database
    # outage shows in the log: as JSON lines too, not multi-line text. They hold libpq's messages,
    # which name the server, never a password or a value.
    pool_handler = logging.StreamHandler(sys.stdout)
    pool_handler.setFormatter(_PoolLogFormatter())
    pool = logging.getLogger("psycopg.pool")
    pool.handlers[:] = [pool_handler]
    pool.setLevel(logging.WARNING)
    pool.propagate = False


class _PoolLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = " ".join(record.getMessage().split())
        return json.dumps({"event": "database_pool", "level": record.levelname.lower(), "message": message})
