"""The hash-chained audit trail, on SQLite and PostgreSQL: it verifies, it notices tampering, and it fails closed."""

from __future__ import annotations

import hashlib
import json
import re
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from host.audit.chain import GENESIS_HASH, chain_hash
from host.audit.trail import BUSY_TIMEOUT_S, AuditLog
from host.config import PROJECT_ROOT
from host.errors import AuditUnavailable
from host.types import AuditEvent
from tests.backends import Backend, PostgresBackend


def event(n: int = 0, allowed: bool | None = True, patient_id: str | None = "p-1") -> AuditEvent:
    return AuditEvent(
        request_id=f"req-{n}",
        subject_id="u-100",
        role="authorized_medical_staff",
        function="patient_lookup",
        patient_id=patient_id,
        purpose="TREAT",
        decision_id=f"dec-{n}",
        allowed=allowed,
        reasons=() if allowed else ("the patient has not consented", "ünïcode reason"),
        outcome="ok" if allowed else "denied",
        latency_ms=1.25 + n,
        # The decision log on some records, break-the-glass on one, none on the others (as a 401's).
        policy_revision=f"rev-{n}" if n % 2 == 0 else None,
        input_hash=f"{n:064x}" if n % 2 == 0 else None,
        break_glass=n == 4,
        review=n == 4,
        break_glass_reason="unconscious in the emergency department" if n == 4 else None,
        org_unit="ward-7" if n % 2 == 1 else None,
    )


@pytest.fixture
def log(backend: Backend) -> Iterator[AuditLog]:
    opened = backend.audit()
    for n in range(6):
        opened.append(event(n, allowed=(None, True, False)[n % 3]))
    yield opened
    opened.close()


def execute(path: Path, sql: str, *params: Any) -> None:
    """Change a SQLite file behind the log's back, as someone with the file could."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


def test_a_fresh_chain_verifies(log: AuditLog) -> None:
    report = log.verify()
    assert report.ok and report.checked == 6
    assert report.first_bad_seq is None and report.problem is None


def test_an_empty_chain_verifies(backend: Backend) -> None:
    empty = backend.audit()
    try:
        assert empty.verify().ok and empty.verify().checked == 0
        assert empty.records() == []
    finally:
        empty.close()


def test_records_link_from_genesis_and_round_trip(log: AuditLog) -> None:
    records = log.records()
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in pairwise(records))
    assert [r.event for r in records] == [event(n, allowed=(None, True, False)[n % 3]) for n in range(6)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", r.timestamp) for r in records)


def test_append_returns_what_is_stored(backend: Backend) -> None:
    fresh = backend.audit()
    try:
        appended = fresh.append(event(1))
        assert fresh.records() == [appended]
    finally:
        fresh.close()


def test_records_pages(log: AuditLog) -> None:
    assert [r.seq for r in log.records(limit=2)] == [1, 2]
    assert [r.seq for r in log.records(limit=2, after_seq=2)] == [3, 4]
    assert log.records(after_seq=6) == []


AUDIT_COLUMNS = [
    "seq", "ts", "request_id", "subject_id", "role", "function", "patient_id", "purpose",
    "decision_id", "allowed", "reasons", "outcome", "latency_ms", "prev_hash", "hash",
    # The decision log (issue 3). The break-the-glass reason is the clinician's own words, for review.
    "policy_revision", "input_hash", "break_glass", "review", "break_glass_reason",
    "function_version", "query",
    # Many chains (issue 17): each record's chain and its place in it, hashed with the rest.
    "chain", "n",
    # The subject's organisation unit (issue 19), hashed when set.
    "org_unit",
]  # fmt: skip


def test_hash_is_sha256_of_prev_hash_and_canonical_json(log: AuditLog, backend: Backend) -> None:
    """Pinned independently of the module, so that other tools can check the chain too."""
    rows = [
        dict(zip(AUDIT_COLUMNS, row, strict=True))
        for row in backend.query(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit ORDER BY seq")
    ]
    decision_log = (
        "policy_revision", "input_hash", "break_glass", "review", "break_glass_reason", "function_version", "query",
        "org_unit",
    )  # fmt: skip
    assert any(row["break_glass"] for row in rows) and any(row["policy_revision"] is None for row in rows)
    for row in rows:
        fields = {key: row[key] for key in row if key != "hash" and key not in decision_log}
        fields["allowed"] = None if row["allowed"] is None else bool(row["allowed"])
        fields["reasons"] = json.loads(row["reasons"])
        # The decision log's columns enter the hash only when set (flags as true), so that
        # records written before they existed still verify.
        fields.update(
            {
                k: row[k]
                for k in (
                    "policy_revision",
                    "input_hash",
                    "break_glass_reason",
                    "function_version",
                    "query",
                    "org_unit",
                )
                if row[k] is not None
            }
        )
        fields.update({k: True for k in ("break_glass", "review") if row[k]})
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256((row["prev_hash"] + canonical).encode()).hexdigest() == row["hash"]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("patient_id", "p-someone-else"),
        ("subject_id", "u-999"),
        ("break_glass", 1),
        ("review", 1),
        ("policy_revision", "rev-other"),
        ("input_hash", None),
        ("outcome", "ok"),
        ("allowed", 1),
        ("allowed", 2),
        ("allowed", None),
        ("reasons", "[]"),
        ("reasons", "not json"),
        ("latency_ms", 0.5),
        ("ts", "2000-01-01T00:00:00.000000Z"),
        ("request_id", "req-forged"),
        ("org_unit", "ward-forged"),
        ("prev_hash", "f" * 64),
        ("hash", "0" * 64),
    ],
)
def test_editing_a_field_is_named(log: AuditLog, column: str, value: Any, backend: Backend) -> None:
    # Record 3 was a denial: allowed=0, two reasons.
    backend.execute(f"UPDATE audit SET {column} = ? WHERE seq = 3", value)
    report = log.verify()
    assert not report.ok
    assert (report.first_bad_seq, report.problem, report.checked) == (3, "record 3 was altered", 2)


@pytest.mark.parametrize(("column", "value"), [("break_glass", 0), ("review", 0), ("break_glass_reason", None)])
def test_unflagging_a_break_glass_record_is_named(log: AuditLog, column: str, value: Any, backend: Backend) -> None:
    # Record 5 was break-the-glass, flagged for review.
    assert log.records(limit=1, after_seq=4)[0].event.review is True
    backend.execute(f"UPDATE audit SET {column} = ? WHERE seq = 5", value)
    report = log.verify()
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 5, "record 5 was altered")


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(log: AuditLog, backend: Backend) -> None:
    (third,) = log.records(limit=1, after_seq=2)
    forged = {
        "seq": 3, "ts": third.timestamp, "request_id": "req-forged", "subject_id": "u-100",
        "role": "authorized_medical_staff", "function": "patient_lookup", "patient_id": "p-1",
        "purpose": "TREAT", "decision_id": third.event.decision_id, "allowed": False,
        "reasons": list(third.event.reasons), "outcome": "denied",
        "latency_ms": third.event.latency_ms, "prev_hash": third.prev_hash,
        "policy_revision": third.event.policy_revision, "input_hash": third.event.input_hash,
        "chain": third.chain, "n": third.n,
    }  # fmt: skip
    forged_hash = chain_hash(forged)
    backend.execute("UPDATE audit SET request_id = 'req-forged', hash = ? WHERE seq = 3", forged_hash)
    report = log.verify()
    assert (report.ok, report.first_bad_seq) == (False, 4)
    assert report.problem == "record 4 does not follow record 3"


@pytest.mark.parametrize("deleted", [3, 1])
def test_deleting_a_record_is_named(log: AuditLog, deleted: int, backend: Backend) -> None:
    chain = log.records(limit=1)[0].chain
    backend.execute("DELETE FROM audit WHERE seq = ?", deleted)
    report = log.verify()
    problem = f"record {deleted} of chain {chain} is missing (before record {deleted + 1})"
    assert (report.ok, report.first_bad_seq, report.problem) == (False, deleted + 1, problem)


def test_renumbering_after_a_deletion_is_noticed(log: AuditLog, backend: Backend) -> None:
    backend.execute("DELETE FROM audit WHERE seq = 3")
    backend.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 3")
    report = log.verify()
    assert (report.ok, report.first_bad_seq) == (False, 3)


def test_swapping_two_records_is_noticed(log: AuditLog, backend: Backend) -> None:
    columns = (
        "ts, request_id, subject_id, role, function, patient_id, purpose, decision_id, allowed, "
        "reasons, outcome, latency_ms, function_version, query, prev_hash, hash"
    )
    (two,) = backend.query(f"SELECT {columns} FROM audit WHERE seq = 2")
    (four,) = backend.query(f"SELECT {columns} FROM audit WHERE seq = 4")
    assignments = ", ".join(f"{c.strip()} = ?" for c in columns.split(","))
    backend.execute(f"UPDATE audit SET {assignments} WHERE seq = 2", *four)
    backend.execute(f"UPDATE audit SET {assignments} WHERE seq = 4", *two)
    report = log.verify()
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 2, "record 2 was altered")


def test_a_second_writer_opens_a_chain_of_its_own_and_the_trail_goes_on(log: AuditLog, backend: Backend) -> None:
    again = backend.audit()
    try:
        record = again.append(event(99))
        assert record.seq == 7  # the trail's order goes on across chains
        assert (record.n, record.prev_hash) == (1, GENESIS_HASH) and record.chain != log.records()[0].chain
        report = again.verify()
        assert report.ok and (report.checked, report.chains) == (7, 2)
        assert [r.seq for r in again.records()] == list(range(1, 8))
    finally:
        again.close()


def test_a_closed_chain_takes_no_more_records_and_its_writer_opens_a_successor(log: AuditLog) -> None:
    first = log.records()[0].chain
    log.seal()
    record = log.append(event(7))
    assert record.chain != first and record.n == 1
    assert log.verify().ok


def test_a_writer_whose_lease_lapsed_writes_to_a_successor_after_its_chain_is_closed(backend: Backend) -> None:
    writer = AuditLog(backend.database(BUSY_TIMEOUT_S), lease_s=0.05)
    closer = backend.audit()
    try:
        first = writer.append(event(1))
        time.sleep(0.1)
        assert closer.close_lapsed() == [first.chain]  # the checkpointer's job, from any host
        second = writer.append(event(2))
        assert second.chain != first.chain and second.n == 1
        heads = {h.chain: h for h in closer.chain_heads()}
        assert heads[first.chain].closed and (heads[first.chain].n, heads[first.chain].hash) == (1, first.hash)
        assert closer.verify().ok
    finally:
        writer.close()
        closer.close()


def test_records_appended_to_a_closed_chain_are_named(log: AuditLog, backend: Backend) -> None:
    chain = log.records()[0].chain
    log.seal()
    backend.execute("UPDATE audit_chains SET closed_n = 5, closed_hash = (SELECT hash FROM audit WHERE seq = 5)")
    report = log.verify()
    assert not report.ok and f"chain {chain} was closed at its record 5 but now ends at its record 6" in str(
        report.problem
    )


def test_threads_appending_at_once_keep_one_chain(backend: Backend) -> None:
    shared = backend.audit()
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def append_fifty(thread: int) -> None:
        try:
            barrier.wait()
            for n in range(50):
                shared.append(event(thread * 1000 + n))
        except BaseException as exc:  # collected and checked by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=append_fifty, args=(t,)) for t in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        report = shared.verify()
        assert report.ok and report.checked == 400
        assert len({r.event.request_id for r in shared.records(limit=1000)}) == 400
    finally:
        shared.close()


APPENDER = """
import sys
from pathlib import Path
from host.audit.trail import BUSY_TIMEOUT_S, AuditLog
from host.store.database import PostgresDatabase
from host.types import AuditEvent

target = sys.argv[1]
database = PostgresDatabase(target, lock_timeout_s=30) if target.startswith("postgresql:") else Path(target)
log = AuditLog(database, busy_timeout_s=30)
try:
    for n in range(int(sys.argv[3])):
        request_id = f"{sys.argv[2]}-{n}"
        log.append(AuditEvent(request_id, "u", "r", "f", "p", "TREAT", "d", True, (), "ok", 1.0))
finally:
    log.close()
"""


def test_processes_appending_to_one_database_keep_one_chain(backend: Backend) -> None:
    """Three host processes on one database: one chain, no seq missing or repeated."""
    backend.audit().close()  # create the file and the table before the race
    target = backend.url if isinstance(backend, PostgresBackend) else str(backend.path)  # type: ignore[attr-defined]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, target, f"proc{i}", "50"],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    log = backend.audit()
    try:
        report = log.verify()
        assert report.ok and report.checked == 150
        records = log.records(limit=1000)
        assert [r.seq for r in records] == list(range(1, 151))
        assert len({r.event.request_id for r in records}) == 150
        writers = [r.event.request_id.split("-")[0] for r in records]
        assert sorted(set(writers)) == ["proc0", "proc1", "proc2"]
    finally:
        log.close()


def test_sqlite_append_fails_closed_when_the_disk_is_full(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "wardfn.db")
    for n in range(6):
        log.append(event(n))
    # A zero file-size limit makes every write fail with EFBIG, as a full disk would, even for
    # root. Nothing may write to a file while it is in force (pytest's capture included).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    failure: BaseException | None = None
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        log.append(event(50))
    except BaseException as exc:  # examined once the limit is lifted
        failure = exc
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert isinstance(failure, AuditUnavailable)
    assert isinstance(failure.__cause__, sqlite3.Error)
    assert log.verify().checked == 6  # nothing half-written
    assert log.append(event(51)).seq == 7  # and it recovers once writes succeed again
    assert log.verify().ok
    log.close()


def test_append_fails_closed_when_the_table_is_locked_away(backend: Backend) -> None:
    impatient = backend.audit(busy_timeout_s=0.1)
    if isinstance(backend, PostgresBackend):
        import psycopg

        blocker: Any = psycopg.connect(backend.url, autocommit=True)
        blocker.execute("BEGIN")
        # No other writer can block an append any more (no shared lock): only something that locks
        # the table itself, such as a schema change.
        blocker.execute("LOCK TABLE audit IN ACCESS EXCLUSIVE MODE")
    else:
        blocker = sqlite3.connect(backend.path, isolation_level=None)  # type: ignore[attr-defined]
        blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(AuditUnavailable, match="could not write to the audit trail"):
            impatient.append(event(1))
        blocker.execute("ROLLBACK")
        record = impatient.append(event(2))
        # PostgreSQL's sequence does not give back the seq the failed commit took: a gap readers step over.
        assert record.seq == (2 if isinstance(backend, PostgresBackend) else 1)
        assert [r.seq for r in impatient.records()] == [record.seq] and impatient.verify().ok
    finally:
        blocker.close()
        impatient.close()


def test_sqlite_append_fails_closed_when_the_directory_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("not a directory")
    with pytest.raises(AuditUnavailable):
        AuditLog(tmp_path / "home" / "wardfn.db")


def test_append_after_close_fails_closed(log: AuditLog) -> None:
    log.close()
    with pytest.raises(AuditUnavailable):
        log.append(event(1))
    with pytest.raises(AuditUnavailable):
        log.records()


def test_records_hold_no_token_name_or_content(log: AuditLog, backend: Backend) -> None:
    if isinstance(backend, PostgresBackend):
        sql = "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit' ORDER BY ordinal_position"
        columns = [row[0] for row in backend.query(sql)]
    else:
        columns = [row[1] for row in backend.query("PRAGMA table_info(audit)")]
    assert columns == AUDIT_COLUMNS


def test_a_sqlite_trail_from_before_the_decision_log_gains_its_columns_and_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = AuditLog(path)
    old.append(event(1))
    old.close()
    # Make it the trail issue 2 wrote: no migrations table, no decision-log columns.
    execute(path, "DROP TABLE schema_migrations")
    execute(path, "DROP INDEX audit_flagged")
    for column in ("policy_revision", "input_hash", "break_glass", "review", "break_glass_reason"):
        execute(path, f"ALTER TABLE audit DROP COLUMN {column}")
    reopened = AuditLog(path)
    try:
        reopened.append(event(4))
        assert reopened.verify().ok and reopened.verify().checked == 2
        assert [r.event.break_glass for r in reopened.records()] == [False, True]
    finally:
        reopened.close()


def test_flagged_lists_only_the_records_for_review(log: AuditLog) -> None:
    flagged = log.flagged()
    assert [r.seq for r in flagged] == [5]
    assert flagged[0].event.break_glass and flagged[0].event.break_glass_reason
    assert log.flagged(after_seq=5) == []


def test_head_and_hash_at_read_the_chain_on_either_backend(log: AuditLog) -> None:
    records = log.records()
    assert log.head() == (6, records[-1].hash)
    assert log.hash_at(0) == GENESIS_HASH and log.hash_at(3) == records[2].hash and log.hash_at(7) is None


def test_a_reader_never_passes_a_seq_a_running_commit_may_still_fill(backend: Backend) -> None:
    """PostgreSQL commits may end in another order than they took their seqs: the cursor must not skip."""
    if not isinstance(backend, PostgresBackend):
        pytest.skip("SQLite's single writer commits in seq order")
    import psycopg

    log = backend.audit()
    try:
        log.append(event(1))
        slow: Any = psycopg.connect(backend.url, autocommit=True)
        try:
            # Another writer, mid-commit, as an append does it: a write on its chain's row first (its
            # transaction id), then its seq, then its row in a subtransaction; it has not committed yet.
            slow.execute("BEGIN")
            slow.execute(
                "INSERT INTO audit_chains (chain, writer, opened_at, lease_until) VALUES ('slow', 'test', 'now', 1e12)"
            )
            (slow_seq,) = slow.execute("SELECT nextval('audit_seq')").fetchone()
            fast = log.append(event(2))  # commits first, with the higher seq
            assert fast.seq == slow_seq + 1
            assert [r.seq for r in log.records()] == [1]  # not past the seq the slow commit holds
            assert log.head()[0] == 1
            forged = record_of(slow_seq)
            slow.execute("SAVEPOINT audit_rows")
            slow.execute(
                "INSERT INTO audit (seq, ts, request_id, reasons, outcome, latency_ms, chain, n, prev_hash, hash) "
                "VALUES (%s, %s, 'req-slow', '[]', 'ok', 1.0, 'slow', 1, %s, %s)",
                (slow_seq, forged["ts"], GENESIS_HASH, chain_hash(forged)),
            )
            slow.execute("RELEASE SAVEPOINT audit_rows")
            assert [r.seq for r in log.records()] == [1]  # written, not committed
            slow.execute("COMMIT")
        finally:
            slow.close()
        # Once it has committed, the reader goes on from where it stood and misses nothing.
        assert [r.seq for r in log.records(after_seq=1)] == [slow_seq, fast.seq]
        assert log.verify().ok
    finally:
        log.close()


def record_of(seq: int) -> dict[str, Any]:
    """The hashed fields of a bare record in chain 'slow' (what append would hash for it)."""
    return {
        "seq": seq, "ts": "2026-12-02T00:00:00.000000Z", "request_id": "req-slow", "subject_id": None, "role": None,
        "function": None, "patient_id": None, "purpose": None, "decision_id": None, "allowed": None, "reasons": [],
        "outcome": "ok", "latency_ms": 1.0, "chain": "slow", "n": 1, "prev_hash": GENESIS_HASH,
    }  # fmt: skip
