"""A real wardfn server for tests: `wardfn serve` in its own process on a loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from host.auth import issue_dev_token
from host.config import Settings
from tests.conftest import FUNCTION_DIRS, TEST_HOME, checkpoint_file_for, settings_for

WARDFN = Path(sys.executable).parent / "wardfn"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`wardfn serve` with a fresh database under `workdir`; stop() ends it."""

    def __init__(self, workdir: Path, patients: int = 60, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = workdir / "wardfn.db"
        self.settings: Settings = settings_for(self.database)
        self.env = {
            **os.environ,
            "WARDFN_HOME": str(TEST_HOME),
            "WARDFN_DATABASE": str(self.database),
            "WARDFN_FUNCTIONS_DIRS": json.dumps([str(d) for d in FUNCTION_DIRS]),
            "WARDFN_SEED_PATIENTS": str(patients),
            **env,
        }
        # Beside the database the server really uses (`env` may name another than self.database).
        self.env.setdefault("WARDFN_AUDIT_CHECKPOINT_FILE", str(checkpoint_file_for(Path(self.env["WARDFN_DATABASE"]))))
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

    def alive(self) -> bool:
        return self.process.poll() is None

    def token(self, sub: str, role: str, ttl: int = 600) -> str:
        return issue_dev_token(self.settings, sub, role, ttl)

    def headers(self, sub: str = "dr-grey", role: str = "authorized_medical_staff") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, role)}"}

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


def serve_imported(workdir: Path, bundles: Path) -> ServerProcess:
    """A server whose database holds exactly the FHIR bundles under `bundles`, imported by the CLI."""
    # Imported under the server's home: the data is sealed under the key-encryption key made there.
    env = {"WARDFN_DATABASE": str(workdir / "wardfn.db"), "WARDFN_HOME": str(TEST_HOME), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [str(WARDFN), "data", "import", str(bundles)], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"wardfn data import failed:\n{done.stderr}")
    return ServerProcess(workdir, patients=0)
