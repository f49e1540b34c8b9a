"""A real wardfn server for tests: `wardfn serve` in its own process on a loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from host.audit.trail import AuditLog, open_audit
from host.auth import issue_dev_token
from host.config import Settings
from host.store.resources import ResourceStore, open_store
from tests.conftest import FUNCTION_DIRS, TEST_HOME, checkpoint_file_for, settings_for
from tests.sql import execute

WARDFN = Path(sys.executable).parent / "wardfn"
# Every database the server runs on: the end-to-end suites run once on each.
DATABASES = ["sqlite", "postgresql"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`wardfn serve` with a fresh database under `workdir` (or the PostgreSQL database at
    `database_url`, migrated first by `wardfn db migrate`); stop() ends it."""

    def __init__(self, workdir: Path, patients: int = 60, database_url: str | None = None, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = workdir / "wardfn.db"  # the SQLite file, when database_url is None
        self.database_url = database_url
        self.settings: Settings = settings_for(self.database, database_url=database_url)
        self.env = {
            **os.environ,
            "WARDFN_HOME": str(TEST_HOME),
            "WARDFN_DATABASE": str(self.database),
            "WARDFN_FUNCTIONS_DIRS": json.dumps([str(d) for d in FUNCTION_DIRS]),
            "WARDFN_SEED_PATIENTS": str(patients),
            **({"WARDFN_DATABASE_URL": database_url} if database_url else {}),
            **env,
        }
        # Beside the database the server really uses (`env` may name another than self.database).
        self.env.setdefault("WARDFN_AUDIT_CHECKPOINT_FILE", str(checkpoint_file_for(Path(self.env["WARDFN_DATABASE"]))))
        if database_url:
            done = subprocess.run(
                [str(WARDFN), "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=120
            )
            if done.returncode != 0:
                raise RuntimeError(f"wardfn db migrate failed:\n{done.stderr}")
        self.log_path = workdir / "server.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(WARDFN), "serve", "--port", str(self.port)], env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"wardfn serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"wardfn serve was not ready within {timeout} s:\n{self.output()}")

    def open_audit(self) -> AuditLog:
        """The server's audit trail, opened beside it (either backend)."""
        return open_audit(self.settings)

    def open_store(self) -> ResourceStore:
        """The server's record store, opened beside it (either backend)."""
        return open_store(self.settings)

    def execute(self, sql: str, *params: object) -> None:
        """Change the server's database behind its back (`?` placeholders), as someone with it could."""
        execute(self.database_url or self.database, sql, *params)

    def alive(self) -> bool:
        return self.process.poll() is None

    def token(self, sub: str, role: str, ttl: int = 600, org_unit: str | None = None) -> str:
        return issue_dev_token(self.settings, sub, role, ttl, org_unit)

    def headers(
        self, sub: str = "dr-grey", role: str = "authorized_medical_staff", org_unit: str | None = None
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, role, org_unit=org_unit)}"}

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def serve_imported(workdir: Path, bundles: Path, database_url: str | None = None) -> ServerProcess:
    """A server whose database (the SQLite file under `workdir`, or the PostgreSQL database at
    `database_url`) holds exactly the FHIR bundles under `bundles`, imported by the CLI."""
    # Imported under the server's home: the data is sealed under the key-encryption key made there.
    env = {"WARDFN_DATABASE": str(workdir / "wardfn.db"), "WARDFN_HOME": str(TEST_HOME), "PATH": "/usr/bin:/bin"}
    steps = [["data", "import", str(bundles)]]
    if database_url:
        env["WARDFN_DATABASE_URL"] = database_url
        steps.insert(0, ["db", "migrate"])
    for step in steps:
        done = subprocess.run([str(WARDFN), *step], env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"wardfn {' '.join(step)} failed:\n{done.stderr}")
    return ServerProcess(workdir, patients=0, database_url=database_url)


def on_each_database(
    request: pytest.FixtureRequest, start: Callable[[str | None], ServerProcess]
) -> Iterator[ServerProcess]:
    """The body of a module fixture parametrised over DATABASES: `start(database_url)` gives the
    server (None: the SQLite file); on PostgreSQL it gets a fresh database, dropped afterwards."""
    if request.param == "sqlite":
        process = start(None)
        yield process
        process.stop()
        return
    postgres = request.getfixturevalue("postgres_server")
    url = postgres.create_database()
    try:
        process = start(url)
        yield process
        process.stop()
    finally:
        postgres.drop_database(url)
