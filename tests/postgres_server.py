"""A private PostgreSQL cluster for tests: initdb in a temporary directory, served on a free
loopback port (its unix socket in the same directory), stopped at the end of the session.

The binaries are those in $WARDFN_PG_BIN (set by `make test`), else the newest
/usr/lib/postgresql/*/bin. Without them the tests that need PostgreSQL fail, saying how to get
it: they are never skipped. initdb and postgres refuse to run as root, so as root the cluster
runs as the `postgres` user (made by Debian's package), or `nobody`.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.e2e.server import free_port

SUPERUSER = "wardfn"
# A bytea value in COPY text format: \\x then hex digits.
BYTEA = re.compile(rb"\\\\x((?:[0-9a-f]{2})+)")


def postgres_bin() -> Path:
    """The directory holding initdb, pg_ctl, postgres and pg_dump."""
    given = os.environ.get("WARDFN_PG_BIN")
    candidates = [Path(given)] if given else sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres", "pg_dump")):
            return directory
    pytest.fail(
        f"no PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_dump) in {given or '/usr/lib/postgresql/*/bin'}: "
        "run `make postgres` (apt-get install postgresql) or set WARDFN_PG_BIN to their directory"
    )


def _run_as() -> str | None:
    """The unprivileged user to run the cluster as, or None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.fail("running as root with neither a `postgres` nor a `nobody` user to run PostgreSQL as")


class PostgresServer:
    """One cluster; `create_database()` gives each test a database of its own."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.user = _run_as()
        # Not under pytest's temporary directory: that is private to root (0700), and the
        # cluster's user must reach its data directory.
        self.root = Path(tempfile.mkdtemp(prefix="wardfn-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        if self.user is not None:
            shutil.chown(self.root, self.user)
        self._as_user(
            self.bin / "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        self._options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            # Tests check behaviour, not crash safety, on a small shared machine: no fsync.
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self.start()
        self.admin_url = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _as_user(self, *command: str | Path) -> None:
        args = [str(c) for c in command]
        if self.user is not None:
            args = ["runuser", "-u", self.user, "--", *args]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}")

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def dump(self, url: str) -> bytes:
        """The real pg_dump of a database: what a stolen backup holds, its bytea values decoded.

        pg_dump writes bytea as hex text: plaintext in a bytea column would not show as itself, and
        ciphertext's hex digits match short numbers (phones, identifiers) by chance. Decoded, both
        read as the bytes stored.
        """
        done = subprocess.run(
            [str(self.bin / "pg_dump"), "--no-password", url], capture_output=True, timeout=300, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {done.stderr.decode(errors='replace')}")
        return BYTEA.sub(lambda match: bytes.fromhex(match.group(1).decode()), done.stdout)

    def start(self) -> None:
        """Start the server (again, after `halt`): same data directory, same port."""
        self._as_user(
            self.bin / "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-o", self._options
        )

    def halt(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data for `start`: `fast` ends every session, `immediate` crashes."""
        self._as_user(self.bin / "pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")

    def stop(self) -> None:
        """Stop the server for good and remove its files."""
        try:
            self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
