"""`wardfn bench load`: the full invocation path under load, against the floor of the same stack.

Starts a host (`wardfn serve` on a free loopback port, its own seeded database) unless given
`--url`, then drives it with the load generator in another process (host.bench.loadgen):

- start-up: host start to first served invocation, against a bare FastAPI app's start to
  first response, same uvicorn and the same number of workers;
- closed loop, `connections` clients: the floor (`GET /healthz`, a trivial endpoint on the same
  app, middleware included), the full path (`GET /v1/patients/{id}/summary`: token, policy,
  a fresh Wasm instance, the records, the audit commit) and `clinical_calc` (reused instances);
- open loop at `rate` requests/s: the same three.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from host.audit.trail import AuditLog
from host.auth import issue_dev_token
from host.bench import report
from host.bench.fixtures import bench_database, consenting_patients
from host.bench.machine import describe
from host.bench.server import build_all, free_port, start_host, stop, until_ok
from host.bench.stats import percentile, ratio
from host.config import Settings

TARGETS = {
    "p99_over_floor_at_200rps": ("<=", 3.0),
    "throughput_over_floor": (">=", 0.25),
    "throughput_over_floor_reuse": (">=", 0.5),
    "startup_over_floor": ("<=", 3.0),
    "errors": ("<=", 0.0),
}
CALC_ARGS = {"calculator": "egfr", "creatinine_mg_dl": 1.1, "age": 67, "sex": "female"}
TARGETS_NAMED = ("floor", "full", "reuse")


def run_load(
    settings: Settings,
    url: str | None,
    connections: int,
    rate: float,
    duration_s: float,
    out: Path,
    console: Console,
    warmup_s: float = 1.0,
    startup_runs: int = 3,
) -> dict[str, Any]:
    """Measure, print, write `load.json` and `load.png` under `out`; return the document."""
    out.mkdir(parents=True, exist_ok=True)
    database = bench_database(settings) if url is None else settings.database_path
    patients = consenting_patients(settings, database, 200)
    token = issue_dev_token(settings, "bench-load", "authorized_medical_staff", 3600)
    auth = {"Authorization": f"Bearer {token}"}
    targets: dict[str, list[dict[str, Any]]] = {
        "floor": [{"method": "GET", "path": "/healthz"}],
        "full": [{"method": "GET", "path": f"/v1/patients/{pid}/summary", "headers": auth} for pid in patients],
        "reuse": [
            {
                "method": "POST",
                "path": "/v1/functions/clinical_calc/invoke",
                "headers": auth,
                "body": {"args": CALC_ARGS},
            }
        ],
    }
    runs: list[dict[str, Any]] = []
    plan = [("closed", name) for name in TARGETS_NAMED] + [("open", name) for name in TARGETS_NAMED]
    startup: dict[str, Any] | None = None
    server: subprocess.Popen[bytes] | None = None
    log = (out / "load-server.log").open("wb")
    try:
        with Progress(
            TextColumn("{task.description:<44}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True
        ) as progress:
            task = progress.add_task("load", total=len(plan) + (2 * startup_runs if url is None else 0))
            if url is None:
                build_all(settings)
                startup, server, url = _measure_startup(
                    settings, database, targets["full"][0], startup_runs, log, progress, task
                )
            for mode, name in plan:
                what = f"{connections} connections" if mode == "closed" else f"{rate:g} req/s"
                progress.update(task, description=f"{mode} loop, {name}, {what}")
                result = _generate(url, mode, targets[name], connections, rate, duration_s, warmup_s)
                runs.append({"target": name, "mode": mode, **_summary(result)})
                progress.advance(task)
    finally:
        if server is not None:
            stop(server)
        log.close()
    chain = _verify_chain(database) if startup is not None else None
    document = _document(runs, startup, settings, connections, rate, duration_s, chain, url)
    _print(console, document)
    report.write_json(out / "load.json", document)
    _chart(out / "load.png", document)
    console.print(f"wrote {out / 'load.json'} and {out / 'load.png'}")
    return document


def _measure_startup(
    settings: Settings,
    database: Path,
    first: dict[str, Any],
    runs: int,
    log: Any,
    progress: Progress,
    task: Any,
) -> tuple[dict[str, Any], subprocess.Popen[bytes], str]:
    """Median start-up of the host and of the bare app; the last host started is left running."""
    workers = settings.worker_count
    floor_times: list[float] = []
    host_times: list[float] = []
    for _ in range(runs):
        progress.update(task, description=f"start-up: bare FastAPI app, {workers} workers")
        port = free_port()
        code = (
            "import uvicorn; uvicorn.run('host.bench.floor_app:app', host='127.0.0.1', "
            f"port={port}, workers={workers}, log_level='warning', access_log=False)"
        )
        started = time.perf_counter()
        floor = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
        try:
            floor_times.append(until_ok(floor, f"http://127.0.0.1:{port}/", {}, started))
        finally:
            stop(floor)
        progress.advance(task)
    server: subprocess.Popen[bytes] | None = None
    url = ""
    for index in range(runs):
        progress.update(task, description=f"start-up: wardfn host, {workers} workers")
        started = time.perf_counter()
        server, url = start_host(settings, database, log)
        try:
            host_times.append(until_ok(server, url + first["path"], first.get("headers", {}), started))
        except BaseException:
            stop(server)
            raise
        if index < runs - 1:
            stop(server)
        progress.advance(task)
    assert server is not None
    floor_ms = sorted(floor_times)[len(floor_times) // 2]
    host_ms = sorted(host_times)[len(host_times) // 2]
    return (
        {"host_ms": host_ms, "floor_ms": floor_ms, "host_runs_ms": host_times, "floor_runs_ms": floor_times},
        server,
        url,
    )


def _generate(
    url: str,
    mode: str,
    requests: list[dict[str, Any]],
    connections: int,
    rate: float,
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    spec = {
        "url": url,
        "mode": mode,
        "connections": connections,
        "rate": rate,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "requests": requests,
    }
    done = subprocess.run(
        [sys.executable, "-m", "host.bench.loadgen"],
        input=json.dumps(spec).encode(),
        capture_output=True,
        check=False,
        timeout=duration_s + warmup_s + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr.decode(errors='replace')[-1000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    latencies = result.pop("latencies_ms")
    result["latency_ms"] = {
        name: None if not latencies else round(percentile(latencies, q), 3)
        for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9), ("max", 100))
    }
    return result


def _verify_chain(database: Path) -> dict[str, Any]:
    log = AuditLog(database)
    try:
        report_ = log.verify()
    finally:
        log.close()
    return {"ok": report_.ok, "checked": report_.checked, "problem": report_.problem}


def _find(runs: list[dict[str, Any]], target: str, mode: str) -> dict[str, Any]:
    return next(r for r in runs if r["target"] == target and r["mode"] == mode)


def _document(
    runs: list[dict[str, Any]],
    startup: dict[str, Any] | None,
    settings: Settings,
    connections: int,
    rate: float,
    duration_s: float,
    chain: dict[str, Any] | None,
    url: str,
) -> dict[str, Any]:
    floor_c, full_c, reuse_c = (_find(runs, t, "closed") for t in TARGETS_NAMED)
    floor_o, full_o = _find(runs, "floor", "open"), _find(runs, "full", "open")
    nan = float("nan")
    ratios = {
        "p99_over_floor_at_200rps": ratio(full_o["latency_ms"]["p99"] or nan, floor_o["latency_ms"]["p99"] or nan),
        "throughput_over_floor": ratio(full_c["throughput"], floor_c["throughput"]),
        "throughput_over_floor_reuse": ratio(reuse_c["throughput"], floor_c["throughput"]),
        "startup_over_floor": ratio(startup["host_ms"], startup["floor_ms"]) if startup else None,
        "errors": sum(r["errors"] for r in runs),
    }
    return {
        "benchmark": "load",
        "url": url,
        "options": {"connections": connections, "rate": rate, "duration_s": duration_s},
        "ratios": ratios,
        "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
        "startup": startup,
        "runs": runs,
        "audit_chain": chain,
        "settings": {
            "workers": settings.worker_count,
            "prepared_instances": settings.prepared_instances,
            "reusable_instances": settings.reusable_instances,
        },
        "machine": describe(),
    }


def _print(console: Console, document: dict[str, Any]) -> None:
    table = Table(title="load (latency in ms)", title_justify="left")
    for column in ("target", "loop", "req/s", "p50", "p90", "p99", "p99.9", "max", "errors"):
        table.add_column(column, justify="left" if column in ("target", "loop") else "right")
    for run in document["runs"]:
        lat = run["latency_ms"]
        loop = (
            f"closed {document['options']['connections']}"
            if run["mode"] == "closed"
            else f"open {run['offered_rate']:g}/s"
        )
        table.add_row(
            run["target"],
            loop,
            f"{run['throughput']:,.0f}",
            *(report.ms(lat[k]) for k in ("p50", "p90", "p99", "p999", "max")),
            str(run["errors"]),
        )
    console.print(table)
    startup = document["startup"]
    if startup:
        console.print(f"start-up: host {startup['host_ms']:.0f} ms, bare FastAPI {startup['floor_ms']:.0f} ms (median)")
    console.print(report.ratio_table(document["ratios"], TARGETS))


def _chart(path: Path, document: dict[str, Any]) -> None:
    labels = [f"{r['target']} ({r['mode']})" for r in document["runs"]]
    series = {
        "p50 ms": [r["latency_ms"]["p50"] for r in document["runs"]],
        "p99 ms": [r["latency_ms"]["p99"] for r in document["runs"]],
    }
    machine = document["machine"]
    options = document["options"]
    note = (
        f"closed: {options['connections']} connections; open: {options['rate']:g} req/s; "
        f"{machine['cpu_model']}, {machine['cpus']} CPUs; throughput: "
        + ", ".join(f"{r['target']} {r['throughput']:,.0f}/s" for r in document["runs"] if r["mode"] == "closed")
    )
    report.bar_chart(path, "wardfn under load: latency (ms, log scale)", labels, series, "milliseconds", True, note)
