"""`wardfn bench audit`, run small against the tests' PostgreSQL: every writer appends, the JSON says what was
measured, and the trail it leaves verifies (a chain per writer process)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from host.audit.trail import AuditLog
from host.cli import main
from tests.backends import PostgresBackend


def test_the_audit_bench_measures_each_writer_count_and_leaves_a_sound_trail(
    postgres_backend: PostgresBackend, tmp_path: Path
) -> None:
    done = CliRunner().invoke(
        main,
        ["bench", "audit", "--database-url", postgres_backend.url, "--writers", "1,2", "--rate", "40",
         "--duration", "0.5", "--warmup", "0", "--repeat", "1", "--out", str(tmp_path)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    result = json.loads((tmp_path / "audit.json").read_text())
    assert result["commit"]["sha"] and result["options"]["rate"] == 40 and "database_url" not in result["options"]
    assert [run["writers"] for run in result["runs"]] == [1, 2]
    for run in result["runs"]:
        assert run["failures"] == 0 and run["records"] == 20 and run["latency_ms"]["p99"] > 0
        # Every record is committed and flushed (a flush may carry several) and writes WAL; the CPUs worked.
        per_record = run["per_record"]
        assert per_record["transactions"] >= 1 and per_record["wal_bytes"] > 100
        assert (per_record["wal_syncs"] > 0) == (result["database"]["fsync"] == "on")  # the tests' cluster: off
        assert 0 < run["machine_cpu_busy"] <= 1
    assert result["audit_p99_8_over_1_writers"] is None  # no run with eight writers
    assert result["single_chain_reference"]["p99_ms"] == {"1": [17, 19], "8": [89, 99]}
    log = AuditLog(postgres_backend.database())
    try:
        report = log.verify()
        # Each writer process's chain: one for the one writer, two for the two (and nothing else).
        assert report.ok and report.chains == 3 and report.checked == 20 + 20 + 3
        assert all(head.closed for head in log.chain_heads())  # each writer closed its chain as it stopped
    finally:
        log.close()
