"""Retention (issue 17): archiving the trail's old months behind a signed checkpoint leaves what remains verifying,
on SQLite and on PostgreSQL's monthly partitions; a cut that was not an archive still fails; the archive verifies
on its own; and the archive is refused for records too young, not covered by a checkpoint, or under open review.

Old records are written through the real append path with the records' clock set back (`leases.timestamp`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host.audit import leases
from host.audit.archive_file import verify_archive
from host.audit.checkpoints import load_signing_key
from host.audit.retention import latest_before
from host.audit.trail import AuditLog
from host.cli import main
from host.config import Settings, load_settings
from host.privacy.reviews import DISPOSITION_FUNCTION, disposition_query
from host.service import AUDIT_QUERY_PURPOSE
from host.store import migrations, partitions
from host.store.resources import open_store
from host.types import AuditEvent
from tests.backends import Backend, PostgresBackend

BEFORE = "2020-01"
OLD = "2019-03-10T08:00:00.000000Z"


def event(n: int, review: bool = False, **fields: object) -> AuditEvent:
    values: dict[str, object] = {
        "request_id": f"req-{n}",
        "subject_id": "dr-grey",
        "role": "authorized_medical_staff",
        "function": "patient_lookup",
        "patient_id": "p-0b1c2d3e",
        "purpose": "TREAT",
        "decision_id": f"dec-{n}",
        "allowed": True,
        "reasons": (),
        "outcome": "ok",
        "latency_ms": 1.5,
        "break_glass": review,
        "review": review,
        **fields,
    }
    return AuditEvent(**values)  # type: ignore[arg-type]


class Clock:
    """The records' clock: a fixed old time, or None for the real one."""

    def __init__(self) -> None:
        self.now: str | None = None
        self._real = leases.timestamp

    def __call__(self) -> str:
        return self.now or self._real()


@dataclass
class Aged:
    """A trail begun in 2019: chain A (three 2019 records, two from now), chain B (two 2019 records, closed),
    chain C (one 2019 record); every head signed by `wardfn audit checkpoint`."""

    backend: Backend
    settings: Settings
    clock: Clock
    writers: dict[str, AuditLog]

    def chain(self, name: str) -> str:
        return self.writers[name].chains[0]

    def at(self, ts: str | None, name: str, *events: AuditEvent) -> None:
        self.clock.now = ts
        for item in events:
            self.writers[name].append(item)
        self.clock.now = None

    def old_rows(self) -> int:
        return int(self.backend.query("SELECT COUNT(*) FROM audit WHERE ts < ?", BEFORE)[0][0])


def wardfn(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def aged(tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aged]:
    for name in list(os.environ):
        if name.upper().startswith("WARDFN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WARDFN_HOME", str(tmp_path / "home"))
    for name, value in backend.env().items():
        monkeypatch.setenv(name, value)
    clock = Clock()
    monkeypatch.setattr(leases, "timestamp", clock)
    if backend.name == "postgresql":  # as the host made them, month by month, when 2019 was now
        database = backend.database()
        with database.connection() as conn, database.transaction(conn, None):
            partitions.ensure(conn, "2019-01", "2019-05")
        database.close()
    writers = {name: backend.audit() for name in "ABC"}
    trail = Aged(backend, load_settings(), clock, writers)
    trail.at(OLD, "A", event(1), event(2))
    trail.at("2019-07-01T00:00:00.000000Z", "B", event(3))  # into the default partition: no month made yet
    trail.at("2019-07-02T00:00:00.000000Z", "A", event(4))
    trail.at("2019-07-03T00:00:00.000000Z", "B", event(5))
    trail.at("2019-12-31T23:59:59.999999Z", "C", event(6))
    writers["B"].seal()
    trail.at(None, "A", event(7), event(8))
    assert trail.old_rows() == 6
    done = wardfn("audit", "checkpoint")
    assert done.exit_code == 0, done.output
    yield trail
    for writer in writers.values():
        writer.close()


def archive(tmp_path: Path, before: str = BEFORE, name: str = "2019.jsonl") -> Result:
    return wardfn("audit", "archive", "--before", before, "--out", str(tmp_path / name))


def test_archiving_old_months_leaves_the_rest_verifying(aged: Aged, tmp_path: Path) -> None:
    if aged.backend.name == "postgresql":  # the month the default partition held gets its own partition
        database = aged.backend.database()
        with database.connection() as conn, database.transaction(conn, None):
            made = partitions.ensure(conn, "2019-06", "2019-12")
            assert made == ["2019-06", "2019-07", "2019-08", "2019-09", "2019-10", "2019-11", "2019-12"]
        database.close()
        assert aged.backend.query("SELECT COUNT(*) FROM audit_default") == [(0,)]
    done = archive(tmp_path)
    assert done.exit_code == 0, done.output
    assert "archived 6 records of 3 chains stamped before 2020-01" in done.stdout
    assert aged.old_rows() == 0
    if aged.backend.name == "postgresql":
        months = ", ".join(f"2019-{m:02d}" for m in range(1, 13))
        assert f"partitions dropped: {months};" in done.stdout
        left = aged.backend.query("SELECT tablename FROM pg_tables WHERE tablename LIKE 'audit_p2019%'")
        assert left == []
    boundaries = dict((c, n) for c, n in aged.backend.query("SELECT chain, n FROM audit_archived"))
    assert boundaries == {aged.chain("A"): 3, aged.chain("B"): 2, aged.chain("C"): 1}

    verified = wardfn("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert "checkpoints hold" in verified.stdout
    # What remains reads as before, and the writers go on: chain C continues after its boundary.
    aged.at(None, "C", event(9))
    assert [r.event.request_id for r in aged.writers["A"].records() if r.chain == aged.chain("C")] == ["req-9"]
    assert wardfn("audit", "checkpoint").exit_code == 0
    again = wardfn("audit", "verify")
    assert again.exit_code == 0, again.output

    alone = wardfn("audit", "verify-archive", str(tmp_path / "2019.jsonl"))
    assert alone.exit_code == 0, alone.output
    assert "audit archive intact: 6 records in 3 chains, stamped before 2020-01" in alone.stdout
    assert (tmp_path / "2019.jsonl").stat().st_mode & 0o777 == 0o600


def test_archiving_again_continues_from_the_boundary(aged: Aged, tmp_path: Path) -> None:
    assert archive(tmp_path, "2019-04", "first.jsonl").exit_code == 0
    done = archive(tmp_path, BEFORE, "second.jsonl")
    assert done.exit_code == 0, done.output
    assert "archived 4 records of 3 chains" in done.stdout
    assert wardfn("audit", "verify").exit_code == 0
    for name in ("first.jsonl", "second.jsonl"):
        assert verify_archive(tmp_path / name, load_signing_key(aged.settings).public_key()).ok


def test_nothing_to_archive_writes_nothing(aged: Aged, tmp_path: Path) -> None:
    done = archive(tmp_path, "2018-01")
    assert done.exit_code == 0 and "nothing to archive" in done.stdout
    assert not (tmp_path / "2019.jsonl").exists()


# --- a cut that was not an archive -------------------------------------------------------------


@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_deleting_old_records_by_hand_fails_verification(aged: Aged, name: str) -> None:
    chain = aged.chain(name)
    aged.backend.execute("DELETE FROM audit WHERE chain = ? AND ts < ?", chain, BEFORE)
    report = aged.writers["A"].verify()
    if name != "C":  # C is left with no record and open: only its signed head can tell (below)
        assert not report.ok and f"chain {chain}" in (report.problem or "")
    done = wardfn("audit", "verify")
    assert done.exit_code == 1 and chain in done.stderr


@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_a_boundary_no_archive_signed_fails_verification(aged: Aged, name: str) -> None:
    """Someone with the database deletes old records and writes the boundary an archive would have."""
    chain = aged.chain(name)
    ((n, digest),) = aged.backend.query(
        "SELECT n, hash FROM audit WHERE chain = ? AND ts < ? ORDER BY n DESC LIMIT 1", chain, BEFORE
    )
    aged.backend.execute("DELETE FROM audit WHERE chain = ? AND ts < ?", chain, BEFORE)
    aged.backend.execute(
        "INSERT INTO audit_archived (chain, n, hash, before, archived_at) VALUES (?, ?, ?, ?, ?)",
        chain, n, digest, BEFORE, "2026-01-01T00:00:00Z",
    )  # fmt: skip
    assert aged.writers["A"].verify().ok  # the chain alone cannot tell
    done = wardfn("audit", "verify")
    assert done.exit_code == 1
    assert f"chain {chain}'s records up to its record {n} are gone, marked archived, but no signed archive" in (
        done.stderr
    )


@pytest.mark.parametrize("name", ["A", "C"])
def test_after_an_archive_tampering_is_still_caught_per_chain(aged: Aged, tmp_path: Path, name: str) -> None:
    assert archive(tmp_path).exit_code == 0
    aged.at(None, name, event(20), event(21))
    chain = aged.chain(name)
    # The boundary moved on by hand past the next record, which is deleted: no archive signed that boundary.
    ((n, digest),) = aged.backend.query("SELECT n, hash FROM audit WHERE chain = ? ORDER BY n LIMIT 1", chain)
    aged.backend.execute("DELETE FROM audit WHERE chain = ? AND n = ?", chain, n)
    assert not aged.writers["A"].verify().ok
    aged.backend.execute("UPDATE audit_archived SET n = ?, hash = ? WHERE chain = ?", n, digest, chain)
    assert aged.writers["A"].verify().ok
    done = wardfn("audit", "verify")
    assert done.exit_code == 1 and "no signed archive checkpoint says so" in done.stderr


def test_removing_a_boundary_fails_verification(aged: Aged, tmp_path: Path) -> None:
    assert archive(tmp_path).exit_code == 0
    aged.backend.execute("DELETE FROM audit_archived WHERE chain = ?", aged.chain("A"))
    report = aged.writers["A"].verify()
    assert not report.ok and f"record 1 of chain {aged.chain('A')} is missing" in (report.problem or "")


def test_an_altered_archive_fails_on_its_own(aged: Aged, tmp_path: Path) -> None:
    assert archive(tmp_path).exit_code == 0
    path = tmp_path / "2019.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["purpose"] = "HRESCH"
    altered = tmp_path / "altered.jsonl"
    altered.write_bytes(b"".join([lines[0], json.dumps(record).encode() + b"\n", *lines[2:]]))
    done = wardfn("audit", "verify-archive", str(altered))
    assert done.exit_code == 1 and "its records are not the ones its seal signed" in done.stderr
    dropped = tmp_path / "dropped.jsonl"
    dropped.write_bytes(b"".join([lines[0], *lines[2:]]))
    assert "its records are not the ones its seal signed" in wardfn("audit", "verify-archive", str(dropped)).stderr
    other = tmp_path / "other.pem"  # a key that never signed it
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    done = wardfn("audit", "verify-archive", str(path), "--public-key", str(other))
    assert done.exit_code == 1 and "not signed by the checkpoint key" in done.stderr


# --- refusals ----------------------------------------------------------------------------------


def test_records_younger_than_the_retention_period_are_refused(aged: Aged, tmp_path: Path) -> None:
    limit = latest_before(datetime.now(UTC), 6)
    too_young = partitions.next_month(limit)
    done = archive(tmp_path, too_young)
    assert done.exit_code == 1
    assert f"the latest month that may be archived now is --before {limit}" in done.stderr
    assert "WARDFN_AUDIT_RETENTION_YEARS" in done.stderr
    assert aged.old_rows() == 6 and not (tmp_path / "2019.jsonl").exists()


def test_records_no_checkpoint_covers_are_refused(aged: Aged, tmp_path: Path) -> None:
    aged.at("2019-08-01T00:00:00.000000Z", "C", event(10))  # C's second record, after the fixture's checkpoint
    done = archive(tmp_path)
    assert done.exit_code == 1
    chain = aged.chain("C")
    assert f"no signed checkpoint covers record 2 of chain {chain}" in done.stderr
    assert "run `wardfn audit checkpoint`" in done.stderr
    assert aged.old_rows() == 7 and not (tmp_path / "2019.jsonl").exists()
    assert wardfn("audit", "checkpoint").exit_code == 0
    assert archive(tmp_path).exit_code == 0


def test_a_chain_whose_clock_went_back_across_the_cut_is_refused(aged: Aged, tmp_path: Path) -> None:
    aged.at("2020-02-01T00:00:00.000000Z", "C", event(11))
    aged.at("2019-12-01T00:00:00.000000Z", "C", event(12))
    assert wardfn("audit", "checkpoint").exit_code == 0
    done = archive(tmp_path)
    assert done.exit_code == 1
    assert f"chain {aged.chain('C')}'s records before 2020-01 are not the start of it" in done.stderr
    assert aged.old_rows() == 7


def test_records_the_relay_has_not_streamed_are_refused(
    aged: Aged, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDFN_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")  # never reached: the cursor is read
    done = archive(tmp_path)
    assert done.exit_code == 1
    assert "the relay has streamed the trail only up to record 0" in done.stderr
    assert aged.old_rows() == 6 and not (tmp_path / "2019.jsonl").exists()
    (top,) = aged.backend.query("SELECT MAX(seq) FROM audit WHERE ts < ?", BEFORE)[0]
    aged.backend.execute("INSERT INTO audit_relay (id, sent_seq) VALUES (1, ?)", top)  # as its broker confirmed
    done = archive(tmp_path)
    assert done.exit_code == 0, done.output


def test_a_trail_that_does_not_verify_is_refused(aged: Aged, tmp_path: Path) -> None:
    aged.backend.execute("UPDATE audit SET purpose = 'HRESCH' WHERE chain = ? AND n = 1", aged.chain("A"))
    done = archive(tmp_path)
    assert done.exit_code == 1 and "refusing to archive a trail that does not verify" in done.stderr
    assert aged.old_rows() == 6


@pytest.mark.parametrize(("disposition", "refused"), [(None, True), ("referred", True), ("justified", False)])
def test_a_record_under_open_review_is_refused(
    aged: Aged, tmp_path: Path, disposition: str | None, refused: bool
) -> None:
    aged.at("2019-08-01T00:00:00.000000Z", "C", event(13, review=True))
    flagged = aged.writers["C"].flagged()[-1].seq
    if disposition is not None:
        store = open_store(aged.settings)
        try:
            sealed = store.seal_text(disposition_query(flagged, "seen"), AUDIT_QUERY_PURPOSE)
        finally:
            store.close()
        aged.at(None, "A", event(14, function=DISPOSITION_FUNCTION, outcome=disposition, query=sealed, patient_id=None))
    assert wardfn("audit", "checkpoint").exit_code == 0
    done = archive(tmp_path)
    if refused:
        assert done.exit_code == 1
        assert f"record {flagged}, flagged for review, is still under an open (or referred) review" in done.stderr
        assert aged.old_rows() == 7 and not (tmp_path / "2019.jsonl").exists()
    else:
        assert done.exit_code == 0, done.output
        assert aged.old_rows() == 0


# --- migration 9 on PostgreSQL -----------------------------------------------------------------


def test_a_trail_from_before_partitions_is_partitioned_by_month_and_still_verifies(
    postgres_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    unmigrated = PostgresBackend(postgres_server, migrate=False)  # type: ignore[arg-type]
    try:
        before_nine = tuple(m for m in migrations.MIGRATIONS if m.version < 9)
        monkeypatch.setattr(migrations, "MIGRATIONS", before_nine)
        monkeypatch.setattr(migrations, "LATEST", before_nine[-1].version)
        database = unmigrated.database()
        try:
            assert migrations.migrate(database)[-1].version == 8
        finally:
            database.close()
        clock = Clock()
        monkeypatch.setattr(leases, "timestamp", clock)
        log = unmigrated.audit()
        clock.now = "2021-05-04T00:00:00.000000Z"
        log.append(event(1))
        clock.now = None
        log.append(event(2))
        log.close()
        unmigrated.execute("UPDATE audit_chains SET lease_until = 0")  # no writer holds it during the migration
        monkeypatch.undo()

        database = unmigrated.database()
        try:
            assert [m.version for m in migrations.migrate(database)] == [9]
        finally:
            database.close()
        homes = dict(unmigrated.query(PARTITION_OF_EACH))
        assert homes == {"req-1": "audit_p202105", "req-2": partitions.partition_name(partitions.this_month())}
        made = [name for (name,) in unmigrated.query("SELECT relname FROM pg_class WHERE relname LIKE 'audit_p%'")]
        assert partitions.partition_name(partitions.ahead()[1]) in made
        reader = unmigrated.audit()
        try:
            assert reader.verify().ok and reader.verify().checked == 2
            assert [r.event.request_id for r in reader.records()] == ["req-1", "req-2"]
            reader.append(event(3))  # seq goes on from the sequence, into this month's partition
            assert [r.seq for r in reader.records()] == [1, 2, 3]
        finally:
            reader.close()
    finally:
        unmigrated.close()


PARTITION_OF_EACH = "SELECT request_id, tableoid::regclass::text FROM audit"


def test_the_host_makes_the_months_ahead_without_waiting_for_appends(postgres_backend: PostgresBackend) -> None:
    last = partitions.ahead()[1]
    postgres_backend.execute(f"DROP TABLE {partitions.partition_name(last)}")
    # An append in flight into this month: attaching a month's partition must not wait for it (nor it for that).
    with psycopg.connect(postgres_backend.url) as appending:
        appending.execute(
            "INSERT INTO audit (seq, ts, request_id, reasons, outcome, latency_ms, prev_hash, hash, n) "
            "VALUES (99, %s, 'req-99', '[]', 'ok', 1.0, '', '', 1)",
            (leases.timestamp(),),
        )
        database = postgres_backend.database(lock_timeout_s=0.5)
        try:
            assert partitions.keep_ahead(database) == [last]
            assert partitions.keep_ahead(database) == []  # all there: a catalogue read, no DDL
        finally:
            database.close()
        appending.rollback()
