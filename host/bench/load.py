"""`wardfn bench load`: one pod's worth of the full invocation path, against the floor of the same stack.

Starts a host (`wardfn serve` on a free loopback port, its own seeded database, every function
deployed) unless given `--url`, and drives it with the load generator in another process
(host.bench.loadgen). With two CPUs or more, the host is one worker pinned to one CPU and the
load generator runs on another (what `taskset -c` does), as a pod limited to one core would be:

- the floor: a bare FastAPI endpoint (host.bench.floor_app), one worker on the same CPU, at
  the lower rate; its CPU per request is what `cpu_per_request_over_floor` divides by;
- the host: the summary (`GET /v1/patients/{id}/summary`: token, policy, a fresh Wasm instance,
  the records, the audit commit) for many subjects and many patients, so that decisions miss
  the cache as a hospital's would; open loop at the lower rate and at `rate` (the seed's 200
  req/s a pod), closed loop for summaries/s at saturation, and `clinical_calc` (reused instances);
- its start-up against the bare app's, and its peak resident memory with the pool full.

The server's CPU is read from /proc over each measured window, by the load generator.
"""

from __future__ import annotations

import os
import random
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
from host.bench.drive import Generator, floor_run
from host.bench.fixtures import bench_database, consenting_patients
from host.bench.machine import commit, describe
from host.bench.server import build_all, free_port, pin_to, resident_mib, start_host, stop, until_ok
from host.bench.stats import ratio
from host.config import Settings

TARGETS = {
    "cpu_per_request_over_floor": ("<=", 15.0),
    "p99_one_core_at_150rps_ms": ("<=", 200.0),
    "p99_one_core_at_200rps_ms": ("<=", 200.0),
    "rss_mib": ("<=", 600.0),
    "errors": ("<=", 0.0),
}
CALC_ARGS = {"calculator": "egfr", "creatinine_mg_dl": 1.1, "age": 67, "sex": "female"}
ROLE = "authorized_medical_staff"
# Distinct (subject, patient) requests the generator cycles through.
DISTINCT_REQUESTS = 4000


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
    *,
    low_rate: float = 150.0,
    subjects: int = 200,
    patients: int = 1000,
    pin: bool = True,
    note: str | None = None,
) -> dict[str, Any]:
    """Measure, print, write `load.json` and `load.png` under `out`; return the document."""
    out.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, generator_cpu = (cpus[0], cpus[1]) if pin and url is None and len(cpus) >= 2 else (None, None)
    if server_cpu is not None:
        settings = settings.model_copy(update={"workers": 1})
    database = bench_database(settings) if url is None else settings.database_path
    chosen = consenting_patients(settings, database, patients)
    rng = random.Random(settings.seed)
    tokens = [
        {"Authorization": f"Bearer {issue_dev_token(settings, f'bench-staff-{i:04d}', ROLE, 3600)}"}
        for i in range(subjects)
    ]
    pairs = [(rng.choice(chosen), rng.randrange(subjects)) for _ in range(DISTINCT_REQUESTS)]
    full: list[dict[str, Any]] = [
        {"method": "GET", "path": f"/v1/patients/{pid}/summary", "headers": tokens[who]} for pid, who in pairs
    ]
    reuse = [
        {"method": "POST", "path": "/v1/functions/clinical_calc/invoke", "headers": h, "body": {"args": CALC_ARGS}}
        for h in tokens
    ]
    plan = [
        ("open", "full", low_rate),
        ("open", "full", rate),
        ("closed", "full", None),
        ("closed", "reuse", None),
    ]
    runs: list[dict[str, Any]] = []
    startup: dict[str, Any] | None = None
    rss: dict[str, float | None] = {"peak_mib": None, "end_mib": None}
    server: subprocess.Popen[bytes] | None = None
    log = (out / "load-server.log").open("wb")
    generate = Generator(connections, duration_s, warmup_s, generator_cpu)
    try:
        with Progress(
            TextColumn("{task.description:<44}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True
        ) as progress:
            task = progress.add_task("load", total=len(plan) + 2 + (2 * startup_runs if url is None else 0))
            if url is None:
                build_all(settings)
                progress.update(task, description=f"floor: bare FastAPI, open loop {low_rate:g} req/s")
                runs.append(floor_run(generate, low_rate, log, server_cpu))
                startup, server, url = _measure_startup(
                    settings, database, full[0], startup_runs, log, progress, task, server_cpu
                )
            progress.advance(task)
            pid = server.pid if server is not None else None
            progress.update(task, description="warming the host (not counted)")
            generate(url, "open", full, low_rate, None, warm_only=True)
            progress.advance(task)
            for mode, name, offered in plan:
                what = f"{connections} connections" if mode == "closed" else f"{offered:g} req/s"
                progress.update(task, description=f"{mode} loop, {name}, {what}")
                result = generate(url, mode, full if name == "full" else reuse, offered or rate, pid)
                runs.append({"target": name, "mode": mode, **result})
                progress.advance(task)
            if server is not None:
                time.sleep(1.0)  # the pool refills after the last call: measured full
                rss = resident_mib(server.pid)
    finally:
        if server is not None:
            stop(server)
        log.close()
    chain = _verify_chain(database) if startup is not None else None
    options = {
        "connections": connections,
        "rate": rate,
        "low_rate": low_rate,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "subjects": subjects,
        "patients": len(chosen),
        "distinct_requests": len(set(pairs)),
        "server_cpu": server_cpu,
        "generator_cpu": generator_cpu,
    }
    document = _document(runs, startup, settings, options, rss, chain, url, note)
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
    cpu: int | None,
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
        floor = subprocess.Popen(
            [sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin_to(cpu)
        )
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
        server, url = start_host(settings, database, log, cpu)
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


def _verify_chain(database: Path) -> dict[str, Any]:
    log = AuditLog(database)
    try:
        report_ = log.verify()
    finally:
        log.close()
    return {"ok": report_.ok, "checked": report_.checked, "problem": report_.problem}


def _find(runs: list[dict[str, Any]], target: str, mode: str, rate: float | None = None) -> dict[str, Any] | None:
    for run in runs:
        if run["target"] == target and run["mode"] == mode and (rate is None or run.get("offered_rate") == rate):
            return run
    return None


def _document(
    runs: list[dict[str, Any]],
    startup: dict[str, Any] | None,
    settings: Settings,
    options: dict[str, Any],
    rss: dict[str, float | None],
    chain: dict[str, Any] | None,
    url: str,
    note: str | None,
) -> dict[str, Any]:
    floor = _find(runs, "floor", "open")
    low = _find(runs, "full", "open", options["low_rate"])
    high = _find(runs, "full", "open", options["rate"])
    saturated = _find(runs, "full", "closed")
    nan = float("nan")

    def cpu(run: dict[str, Any] | None) -> float:
        value = run.get("cpu_ms_per_request") if run is not None else None
        return nan if value is None else float(value)

    def p99(run: dict[str, Any] | None) -> float | None:
        return run["latency_ms"]["p99"] if run is not None else None

    # Named after the seed's pod: measured only as that pod (one pinned core, at that rate).
    one_core = options["server_cpu"] is not None
    ratios = {
        "cpu_per_request_over_floor": ratio(cpu(low), cpu(floor)),
        "p99_one_core_at_150rps_ms": p99(low) if one_core and options["low_rate"] == 150 else None,
        "p99_one_core_at_200rps_ms": p99(high) if one_core and options["rate"] == 200 else None,
        "rss_mib": rss["peak_mib"],
        "errors": sum(r["errors"] for r in runs),
    }
    return {
        "benchmark": "load",
        "url": url,
        "commit": commit(),
        "options": options,
        "note": note,
        "ratios": ratios,
        "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
        "summaries_per_s_at_saturation": saturated["throughput"] if saturated else None,
        "cpu_ms_per_request": {
            "floor": floor and floor["cpu_ms_per_request"],
            f"summary_at_{options['low_rate']:g}rps": low and low["cpu_ms_per_request"],
            f"summary_at_{options['rate']:g}rps": high and high["cpu_ms_per_request"],
            "summary_saturated": saturated and saturated["cpu_ms_per_request"],
        },
        f"latency_ms_at_{options['rate']:g}rps": high["latency_ms"] if high else None,
        "rss": rss,
        "startup": startup,
        "runs": runs,
        "audit_chain": chain,
        "settings": {
            "workers": settings.worker_count,
            "pooling": settings.pooling,
            "pool_instance_slots": settings.pool_instance_slots,
            "pool_keep_resident_bytes": settings.pool_keep_resident_bytes,
            "prepared_instances": settings.prepared_instances,
            "reusable_instances": settings.reusable_instances,
            "decision_cache_size": settings.decision_cache_size,
        },
        "machine": describe(),
    }


def _print(console: Console, document: dict[str, Any]) -> None:
    table = Table(title="load (latency in ms, server CPU in ms a request)", title_justify="left")
    for column in ("target", "loop", "req/s", "cpu ms", "p50", "p99", "p99.9", "max", "errors"):
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
            report.ms(run["cpu_ms_per_request"]),
            *(report.ms(lat[k]) for k in ("p50", "p99", "p999", "max")),
            str(run["errors"]),
        )
    console.print(table)
    startup = document["startup"]
    if startup:
        console.print(f"start-up: host {startup['host_ms']:.0f} ms, bare FastAPI {startup['floor_ms']:.0f} ms (median)")
    console.print(report.ratio_table(document["ratios"], TARGETS))


def _chart(path: Path, document: dict[str, Any]) -> None:
    runs = document["runs"]
    labels = [f"{r['target']} ({r['mode']} {r.get('offered_rate', '')})".replace(" )", ")") for r in runs]
    series = {
        "p50 ms": [r["latency_ms"]["p50"] for r in runs],
        "p99 ms": [r["latency_ms"]["p99"] for r in runs],
        "CPU ms a request": [r["cpu_ms_per_request"] for r in runs],
    }
    machine = document["machine"]
    note = (
        f"one worker on CPU {document['options']['server_cpu']}, generator on {document['options']['generator_cpu']}; "
        f"{machine['cpu_model']}, {machine['cpus']} CPUs; saturation: "
        f"{document['summaries_per_s_at_saturation'] or 0:,.0f} summaries/s"
    )
    report.bar_chart(
        path, "wardfn, one pod: latency and CPU (ms, log scale)", labels, series, "milliseconds", True, note
    )
