"""Hot reload: a function rebuilt and swapped in under load, with no failed request and an audit trail
that names the version that served each call."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from host.config import PROJECT_ROOT
from host.store.resources import open_store
from tests.e2e.server import WARDFN, ServerProcess

pytestmark = pytest.mark.components


def test_rebuilt_function_swaps_in_under_load_without_failures(built_functions: list[str], tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    shutil.copytree(PROJECT_ROOT / "tests" / "functions" / "hostile", functions / "hostile")
    dirs = json.dumps([str(PROJECT_ROOT / "functions"), str(functions)])
    server = ServerProcess(tmp_path, patients=5, WARDFN_FUNCTIONS_DIRS=dirs)
    results: list[tuple[str, int, str | None]] = []
    stop = threading.Event()
    try:
        store = open_store(server.settings)
        patient_id = store.list_patients(1)[0]["id"]
        store.close()
        headers = server.headers()

        def drive(worker: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    rid = f"reload-{worker}-{n}"
                    n += 1
                    response = client.post(
                        "/v1/functions/hostile/invoke",
                        json={"patient_id": patient_id, "args": {"mode": "ok"}},
                        headers={**headers, "X-Request-ID": rid},
                    )
                    version = response.json().get("version") if response.status_code == 200 else None
                    results.append((rid, response.status_code, version))

        drivers = [threading.Thread(target=drive, args=(i,)) for i in range(4)]
        for driver in drivers:
            driver.start()
        manifest = functions / "hostile" / "function.toml"
        manifest.write_text(manifest.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
        built = subprocess.run(
            [str(WARDFN), "build", "hostile"], env=server.env, capture_output=True, text=True, timeout=300
        )
        assert built.returncode == 0, built.stderr
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v == "0.2.0" for _, _, v in results[-20:]):
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for driver in drivers:
            driver.join(timeout=60)
        assert server.alive()
    finally:
        stop.set()
        server.stop()

    assert results and all(status == 200 for _, status, _ in results), [r for r in results if r[1] != 200][:5]
    versions = [v for _, _, v in results]
    assert "0.1.0" in versions and "0.2.0" in versions
    first_new = versions.index("0.2.0")
    # Each driver sees the old version, then only the new one: nothing flips back after the swap.
    for worker in range(4):
        mine = [v for rid, _, v in results if rid.startswith(f"reload-{worker}-")]
        if "0.2.0" in mine:
            assert "0.1.0" not in mine[mine.index("0.2.0") :]
    assert first_new > 0
    log = server.open_audit()
    try:
        audited = {r.event.request_id: r.event.function_version for r in log.records(limit=100_000)}
    finally:
        log.close()
    for rid, _, version in results:
        assert audited[rid] == version
    assert "functions_reloaded" in server.output()
