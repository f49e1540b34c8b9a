"""Turns to commit among the processes appending to one SQLite file.

SQLite's busy handler would make the loser of a race for the write lock sleep for whole
milliseconds, growing, before trying again; commits are instead taken in turn through an
advisory file lock beside the database, polled at a fine grain. SQLite's own lock still decides:
the file lock only saves the sleeps. PostgreSQL needs none: each writer has a chain of its own.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Turns:
    """The `.audit-turn` file beside a SQLite database (or nothing, for PostgreSQL or if it cannot be made)."""

    def __init__(self, path: Path | None, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._fd: int | None = None
        if path is not None:
            try:
                self._fd = os.open(path.with_name(path.name + ".audit-turn"), os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                self._fd = None  # no lock, only SQLite's

    @contextmanager
    def turn(self) -> Iterator[None]:
        """This process's turn to commit."""
        fd = self._fd
        if fd is None:
            yield
            return
        deadline = time.monotonic() + self._timeout_s
        locked = False
        while not locked:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break  # let SQLite's own lock and busy timeout decide
                time.sleep(0.0002)
            except OSError:
                break
        try:
            yield
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
