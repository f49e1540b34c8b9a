"""`wardfn bench audit`: append latency with N writer processes on one PostgreSQL database.

Each writer is a process of its own with an AuditLog, as a host process is, appending at a
fixed share of the total offered rate (open loop: a record is due at its scheduled time whatever
the others do, and its latency counts from then, so a stall is measured, not hidden). The same
total rate is offered with 1, 2, 4 and 8 writers; if adding writers slowed each of them (a shared
lock or row on the append path), p99 would grow with N: `audit_p99_8_over_1_writers` says by how
much. The single-chain design (one advisory lock for every writer) is no longer in the code; its
figures are the reference measurement quoted in issue 17.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from host.bench.machine import commit, describe
from host.bench.stats import ratio, summarise

# Issue 17's measurement of the single-chain design (pg_advisory_xact_lock around every audit
# commit) at 1,000 records/s in all: p99 17-19 ms with one writer, 89-99 ms with eight.
SINGLE_CHAIN_REFERENCE = {
    "source": "issue 17 (measured before the change, same offered rate)",
    "offered_rate": 1000,
    "p99_ms": {"1": [17, 19], "8": [89, 99]},
    "audit_p99_8_over_1_writers": [round(89 / 19, 2), round(99 / 17, 2)],
}


@dataclass(frozen=True)
class AuditBenchOptions:
    database_url: str
    writers: tuple[int, ...] = (1, 2, 4, 8)
    rate: float = 1000.0  # records/s offered in all, shared evenly by the writers
    duration_s: float = 10.0
    warmup_s: float = 2.0
    threads: int = 32  # concurrent appends a writer may have in flight (its requests)
    repeat: int = 1  # rounds over every N; each N's figures are the median round's (by p99)


def run_audit_bench(options: AuditBenchOptions, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Every N in turn on the same database; writes `out/audit.json` and returns it."""
    from host.store import migrations
    from host.store.database import PostgresDatabase

    database = PostgresDatabase(options.database_url)
    try:
        migrations.migrate(database)
        with database.connection() as conn:
            # Whether a commit waits for a flush to disk: the figures mean little without it.
            durability = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]
                for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
            }
    finally:
        database.close()
    machine = describe()  # the load average as the runs start; the one after them is added below
    rounds: dict[int, list[dict[str, Any]]] = {n: [] for n in options.writers}
    # Rounds interleave the Ns, so that a burst of load from elsewhere on the machine hits one
    # round of each rather than every round of one N.
    for round_ in range(options.repeat):
        for writers in options.writers:
            say(f"audit bench round {round_ + 1}: {writers} writers, {options.rate:g} records/s")
            run = _run(options, writers)
            rounds[writers].append(run)
            say(f"  {run['records_per_s']:.0f} records/s, p50 {run['latency_ms']['p50']} ms, "
                f"p99 {run['latency_ms']['p99']} ms")  # fmt: skip
    runs = []
    for done in rounds.values():
        ordered = sorted(done, key=lambda r: r["latency_ms"]["p99"])
        runs.append({**ordered[len(ordered) // 2], "rounds_p99_ms": [r["latency_ms"]["p99"] for r in done]})
    p99 = {run["writers"]: run["latency_ms"]["p99"] for run in runs}
    result = {
        "benchmark": "audit",
        "commit": commit(),
        "machine": machine,
        "load_average_after": describe()["load_average"],
        "options": {k: v for k, v in asdict(options).items() if k != "database_url"},
        "database": durability,
        "runs": runs,
        "audit_p99_8_over_1_writers": ratio(p99[8], p99[1]) if 8 in p99 and 1 in p99 else None,
        "single_chain_reference": SINGLE_CHAIN_REFERENCE,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(result, indent=2) + "\n")
    say(f"wrote {out / 'audit.json'}")
    return result


def _run(options: AuditBenchOptions, writers: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results, ready = context.Queue(), context.Queue()
    start_at = context.Value("d", 0.0)
    go = context.Event()
    processes = [
        context.Process(target=_writer, args=(options, writers, start_at, go, ready, results), daemon=True)
        for _ in range(writers)
    ]
    for process in processes:
        process.start()
    # Every writer started, connected and warm (one append made) before the first record is due:
    # a process start on a busy machine takes seconds, and would count as a backlog otherwise.
    for _ in processes:
        ready.get(timeout=300)
    before = _database_counters(options.database_url), _cpu_times()
    start_at.value = time.time() + 0.5
    go.set()
    latencies: list[float] = []
    failures = appended = every = 0
    for _ in processes:
        done = results.get(timeout=options.duration_s + options.warmup_s + 120)
        latencies.extend(done["latencies"])
        failures += done["failures"]
        appended += done["appended"]
        every += done["every"]
    for process in processes:
        process.join(30)
    after = _database_counters(options.database_url), _cpu_times()
    return {
        "writers": writers,
        "offered_rate": options.rate,
        "records": appended,
        "records_per_s": round(appended / options.duration_s, 1),
        "failures": failures,
        "latency_ms": summarise(latencies, (50, 90, 99, 99.9)),
        # What the database did a record (warm-up included: the counters cannot tell it apart), and
        # how busy the machine's CPUs were: the capacity model's inputs, and whether a slower N was
        # waiting for a CPU rather than for another writer.
        # Transactions count every one (the pool's liveness checks, lease renewals, chain opens and
        # closes too); WAL syncs are the durable flushes the disk paid for, shared by concurrent commits.
        "per_record": {
            "transactions": round((after[0][0] - before[0][0]) / max(every, 1), 3),
            "wal_syncs": round((after[0][2] - before[0][2]) / max(every, 1), 3),
            "wal_bytes": round((after[0][1] - before[0][1]) / max(every, 1)),
        },
        "machine_cpu_busy": round(_busy(before[1], after[1]), 3),
    }


def _database_counters(url: str) -> tuple[int, int, int]:
    """The database's transactions so far, the WAL position in bytes, and the WAL syncs so far."""
    from host.store.database import PostgresDatabase

    database = PostgresDatabase(url, pool_size=1)
    try:
        with database.connection() as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            (commits,) = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            (wal,) = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
            (syncs,) = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
    finally:
        database.close()
    return int(commits), int(wal), int(syncs)


def _cpu_times() -> tuple[int, int]:
    """The machine's (busy, total) CPU time so far, in clock ticks (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def _writer(options: AuditBenchOptions, writers: int, start: Any, go: Any, ready: Any, results: Any) -> None:
    """One writer process: append at rate/writers for warmup + duration; report the timed latencies."""
    from host.audit.trail import AuditLog
    from host.store.database import PostgresDatabase
    from host.types import AuditEvent

    log = AuditLog(PostgresDatabase(options.database_url, pool_size=4))
    log.append(
        AuditEvent(f"bench-{os.getpid()}-warm", "bench", "bench", "bench", None, "TREAT", None, True, (), "ok", 0.0)
    )
    ready.put(os.getpid())
    go.wait()
    start_at = float(start.value)
    interval = writers / options.rate
    total = int((options.warmup_s + options.duration_s) / interval)
    timed_from = start_at + options.warmup_s
    latencies: list[float] = []
    counts = {"failures": 0, "appended": 0, "every": 0}
    pid = os.getpid()

    def append(index: int, due: float) -> None:
        event = AuditEvent(f"bench-{pid}-{index}", "bench", "bench", "bench", None, "TREAT", None, True, (), "ok", 0.0)
        try:
            log.append(event)
        except Exception:
            counts["failures"] += 1
            return
        counts["every"] += 1
        if due >= timed_from:
            latencies.append((time.time() - due) * 1000)
            counts["appended"] += 1

    # Stagger the writers' schedules so that together they offer an even rate.
    offset = (pid % 997) / 997 * interval
    with ThreadPoolExecutor(max_workers=options.threads) as pool:
        for index in range(total):
            due = start_at + offset + index * interval
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            pool.submit(append, index, due)
    log.close()
    results.put({"latencies": latencies, **counts})
