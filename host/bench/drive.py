"""Driving a server for `wardfn bench load`: the load generator on its own CPU, and the bare FastAPI floor."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from host.bench.server import free_port, pin_to, stop, until_ok
from host.bench.stats import percentile


class Generator:
    """Runs the load generator (its own process, on its own CPU when pinned) and summarises a run."""

    def __init__(self, connections: int, duration_s: float, warmup_s: float, cpu: int | None) -> None:
        self.connections = connections
        self.duration_s = duration_s
        self.warmup_s = warmup_s
        self.cpu = cpu

    def __call__(
        self,
        url: str,
        mode: str,
        requests: list[dict[str, Any]],
        rate: float,
        pid: int | None,
        *,
        warm_only: bool = False,
    ) -> dict[str, Any]:
        spec = {
            "url": url,
            "mode": mode,
            "connections": self.connections,
            "rate": rate,
            "duration_s": max(self.warmup_s, 0.5) if warm_only else self.duration_s,
            "warmup_s": 0.0 if warm_only else self.warmup_s,
            "requests": requests,
            "watch_pid": pid,
        }
        done = subprocess.run(
            [sys.executable, "-m", "host.bench.loadgen"],
            input=json.dumps(spec).encode(),
            capture_output=True,
            check=False,
            timeout=self.duration_s + self.warmup_s + 120,
            preexec_fn=pin_to(self.cpu),
        )
        if done.returncode != 0:
            raise RuntimeError(f"the load generator failed: {done.stderr.decode(errors='replace')[-1000:]}")
        return _summary(json.loads(done.stdout))


def floor_run(generate: Generator, rate: float, log: Any, cpu: int | None) -> dict[str, Any]:
    """The bare FastAPI endpoint, one worker on the host's CPU, at `rate`: its CPU per request."""
    port = free_port()
    code = (
        "import uvicorn; uvicorn.run('host.bench.floor_app:app', host='127.0.0.1', "
        f"port={port}, workers=1, log_level='warning', access_log=False)"
    )
    floor = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin_to(cpu))
    try:
        until_ok(floor, f"http://127.0.0.1:{port}/", {}, time.perf_counter())
        request = [{"method": "GET", "path": "/"}]
        generate(f"http://127.0.0.1:{port}", "open", request, rate, None, warm_only=True)
        return {
            "target": "floor",
            "mode": "open",
            **generate(f"http://127.0.0.1:{port}", "open", request, rate, floor.pid),
        }
    finally:
        stop(floor)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    latencies = result.pop("latencies_ms")
    result["latency_ms"] = {
        name: None if not latencies else round(percentile(latencies, q), 3)
        for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9), ("max", 100))
    }
    # The server's CPU over the window, over the answers it gave in that window (requests the
    # generator could not send, `generator_saturated`, cost the server nothing).
    answered = result["answered_in_window"]
    cpu = result.get("server_cpu_s")
    result["cpu_ms_per_request"] = round(cpu * 1000 / answered, 3) if cpu is not None and answered else None
    result["server_cpu_share"] = round(cpu / result["duration_s"], 3) if cpu is not None else None
    return result
