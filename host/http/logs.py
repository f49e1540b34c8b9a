"""The log format: one JSON object a line on stdout, built without patient data."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


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


class OneLineJsonFormatter(logging.Formatter):
    """A server log record as one JSON line: the logger, the level, the message on one line and, for an
    exception, its type alone. Never a traceback: its frames' text can quote values (patient data among
    them), and a multi-line record breaks the JSON-lines log."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "event": "server",
            "logger": record.name,
            "level": record.levelname.lower(),
            "message": " ".join(record.getMessage().split()),
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["error_type"] = record.exc_info[0].__name__
        return json.dumps(line)


def server_log_config() -> dict[str, Any]:
    """uvicorn's logging, as `logging.config.dictConfig` takes it: every uvicorn logger through
    `OneLineJsonFormatter` on stdout (in each worker process too, which applies it itself)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.OneLineJsonFormatter"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "loggers": {
            name: {"handlers": ["stdout"], "level": "WARNING", "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
        },
    }
