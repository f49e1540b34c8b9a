"""A real host for the benchmarks: functions built first, `wardfn serve` on a free loopback port, stopped after."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx

from host.catalogue.artifacts import ArtifactCache
from host.catalogue.build import build_function
from host.catalogue.manifest import discover_functions
from host.config import Settings
from host.runtime.engine import create_engine

STARTUP_TIMEOUT_S = 120


def build_all(settings: Settings) -> None:
    """Build what is missing now, so that no start-up measured afterwards includes a build."""
    cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
    engine = create_engine()
    for source in discover_functions(settings.functions_dirs):
        build_function(source, settings.wit_dir, cache, engine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_host(
    settings: Settings, database: Path, log: IO[bytes], cpu: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`wardfn serve` on `database` with `settings.worker_count` workers (on `cpu` alone, if given);
    returns the process and its URL."""
    port = free_port()
    env = {**os.environ, "WARDFN_HOME": str(settings.home), "WARDFN_DATABASE": str(database)}
    env["WARDFN_WORKERS"] = str(settings.worker_count)
    command = [sys.executable, "-c", "from host.cli import main; main()", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin_to(cpu))
    return process, f"http://127.0.0.1:{port}"


def pin_to(cpu: int | None) -> Callable[[], None] | None:
    """For `preexec_fn`: the child runs on `cpu` alone (what `taskset -c CPU` does); None leaves it free."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def resident_mib(pid: int) -> dict[str, float | None]:
    """The process's resident memory now and at its peak (VmRSS, VmHWM), in MiB; None where unreadable."""
    found: dict[str, float | None] = {"peak_mib": None, "end_mib": None}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "VmRSS"):
                    found["peak_mib" if name == "VmHWM" else "end_mib"] = round(int(value.split()[0]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return found


def until_ok(process: subprocess.Popen[bytes], url: str, headers: dict[str, str], started: float) -> float:
    """Milliseconds from `started` until `url` answers 200; polls every 5 ms."""
    deadline = started + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=2) as client:
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode} before answering")
            try:
                if client.get(url, headers=headers).status_code == 200:
                    return (time.perf_counter() - started) * 1000
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"no answer from {url} within {STARTUP_TIMEOUT_S} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
