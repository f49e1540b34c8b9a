"""The real OPA server for tests: `opa run --server` on a loopback port, serving a bundle.

The binary is the one `make opa` builds (.wardfn/tools/bin/opa), or $WARDFN_OPA_BIN. Without
it the tests that need it fail, saying how to get it: they are never skipped.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from host.config import PROJECT_ROOT
from host.policy.bundle import write_bundle
from tests.e2e.server import free_port

OPA_VERSION = "1.22.3"


def opa_binary() -> Path:
    path = Path(os.environ.get("WARDFN_OPA_BIN") or PROJECT_ROOT / ".wardfn" / "tools" / "bin" / "opa")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"no OPA binary at {path}: run `make opa` (builds OPA v{OPA_VERSION}) or set WARDFN_OPA_BIN")
    return path


class OpaServer:
    """`opa run --server` with `bundle` (or no policy at all when None) on a free loopback port."""

    def __init__(
        self,
        workdir: Path,
        bundle: Path | None,
        port: int | None = None,
        config: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bundle = bundle
        self.log_path = workdir / f"opa-{self.port}.log"
        self._log = self.log_path.open("ab")
        command = [str(opa_binary()), "run", "--server", "--addr", f"127.0.0.1:{self.port}", "--log-level", "error"]
        if bundle is not None:
            command += ["--bundle", str(bundle)]
        if config is not None:
            command += ["--config-file", str(config)]
        command += list(extra_args)
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        # With a bundle service configured, OPA answers but is not healthy until it has the bundle.
        self._wait_healthy("/health" if config is not None else "/health?bundles=true")

    @classmethod
    def with_policy(cls, workdir: Path, policy_dir: Path = PROJECT_ROOT / "policies") -> OpaServer:
        bundle = workdir / "bundle.tar.gz"
        write_bundle(policy_dir, bundle)
        return cls(workdir, bundle)

    def _wait_healthy(self, path: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"opa exited with {self.process.returncode}: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"opa was not healthy within {timeout} s: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
