"""Signed checkpoints of the audit chain: deleted tails and rewritten chains fail `wardfn audit verify`,
and reading the trail is itself on the trail. Real SQLite files (the tampering cases on PostgreSQL too), real
Ed25519 keys, the real CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host.audit.chain import GENESIS_HASH, chain_hash
from host.audit.checkpoints import (
    Checkpointer,
    CheckpointFile,
    load_signing_key,
    sign_heads,
    signature_holds,
    verify_checkpoints,
)
from host.audit.trail import AuditLog
from host.cli import main
from host.config import Settings, load_settings
from host.types import AuditEvent, Checkpoint
from tests.backends import Backend

PATIENT = "p-0b1c2d3e"
# The fields a plain record (no decision-log fields) is hashed over, besides prev_hash.
SIGNED_FIELDS = {
    "seq", "ts", "request_id", "subject_id", "role", "function", "patient_id", "purpose", "decision_id",
    "allowed", "reasons", "outcome", "latency_ms", "chain", "n", "prev_hash",
}  # fmt: skip


def event(n: int) -> AuditEvent:
    """A plain invocation record: no decision-log fields, so a forger can rehash it by hand."""
    return AuditEvent(
        request_id=f"req-{n}",
        subject_id="dr-grey",
        role="authorized_medical_staff",
        function="patient_lookup",
        patient_id=PATIENT,
        purpose="TREAT",
        decision_id=f"dec-{n}",
        allowed=True,
        reasons=(),
        outcome="ok",
        latency_ms=1.5,
    )


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Development settings under a fresh home, also in the environment the CLI reads."""
    for name in list(os.environ):
        if name.upper().startswith("WARDFN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WARDFN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WARDFN_DATABASE", str(tmp_path / "wardfn.db"))
    return load_settings()


@pytest.fixture
def log(settings: Settings) -> Iterator[AuditLog]:
    opened = AuditLog(settings.database_path)
    for n in range(6):
        opened.append(event(n))
    yield opened
    opened.close()


def wardfn(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def checkpoint_now(settings: Settings, log: AuditLog) -> Checkpoint:
    """What a host's checkpointer does on a tick."""
    checkpointer = Checkpointer(log, load_signing_key(settings), [CheckpointFile(settings.audit_checkpoint_path)], 60)
    made = checkpointer.checkpoint()
    assert made is not None
    return made


def execute(path: Path, sql: str, *params: Any) -> None:
    """Change the database behind the host's back, as someone with the file could."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


def rewrite_consistently(backend: Backend, chain: str, n: int, purpose: str) -> None:
    """Edit one record of `chain`, then recompute every hash after it, as someone with the database could."""
    prev = GENESIS_HASH
    columns = (
        "seq", "ts", "request_id", "subject_id", "role", "function", "patient_id", "purpose", "decision_id",
        "allowed", "reasons", "outcome", "latency_ms", "chain", "n",
    )  # fmt: skip
    for values in backend.query(f"SELECT {', '.join(columns)} FROM audit WHERE chain = ? ORDER BY n", chain):
        row = dict(zip(columns, values, strict=True))
        fields = {
            **row,
            "purpose": purpose if row["n"] == n else row["purpose"],
            "allowed": None if row["allowed"] is None else bool(row["allowed"]),
            "reasons": json.loads(row["reasons"]),
            "prev_hash": prev,
        }
        digest = chain_hash(fields)
        backend.execute(
            "UPDATE audit SET purpose = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            fields["purpose"], prev, digest, row["seq"],
        )  # fmt: skip
        prev = digest


@dataclass
class Trail:
    """Six records in two chains (two writers, as two host processes), interleaved, on one database, with
    the settings (in the CLI's environment too) that reach it."""

    backend: Backend
    settings: Settings
    writers: tuple[AuditLog, AuditLog]

    @property
    def log(self) -> AuditLog:
        return self.writers[0]

    def chain(self, which: int) -> str:
        return self.writers[which].chains[0]

    def checkpoint(self) -> list[Checkpoint]:
        """Each writer's checkpointer signs its chain, as each host does on a tick."""
        return [checkpoint_now(self.settings, writer) for writer in self.writers]


@pytest.fixture
def trail(settings: Settings, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[Trail]:
    for name, value in backend.env().items():
        monkeypatch.setenv(name, value)
    writers = (backend.audit(), backend.audit())
    for n in range(6):
        writers[n % 2].append(event(n))
    yield Trail(backend, load_settings(), writers)
    for writer in writers:
        writer.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- verify against the checkpoint -------------------------------------------------------


def test_an_untouched_trail_verifies_against_its_checkpoint(trail: Trail) -> None:
    trail.checkpoint()
    done = wardfn("audit", "verify")
    assert done.exit_code == 0, done.output
    # Two writers' chains and the chain of verify's own audited read.
    assert "audit chains intact: 7 records in 3 chains verified" in done.stdout
    assert "checkpoints hold: 2 in" in done.stdout


@pytest.mark.parametrize("which", [0, 1])
def test_deleting_a_chains_newest_records_fails_against_the_checkpoint(trail: Trail, which: int) -> None:
    signed = trail.checkpoint()[which]
    chain = trail.chain(which)
    trail.backend.execute("DELETE FROM audit WHERE chain = ? AND n > 1", chain)
    assert trail.log.verify().ok  # the shorter chain holds together: only the checkpoint can tell

    done = wardfn("audit", "verify")
    assert done.exit_code == 1 and "audit chains intact: 5 records in 3 chains verified" in done.stdout
    assert f"chain {chain} ends at its record 1 but a checkpoint signed at {signed.ts} covers its record 3" in (
        done.stderr
    )
    assert "records were deleted" in done.stderr


@pytest.mark.parametrize("which", [0, 1])
def test_deleting_a_whole_chain_fails_against_the_checkpoint(trail: Trail, which: int) -> None:
    trail.checkpoint()
    chain = trail.chain(which)
    trail.backend.execute("DELETE FROM audit WHERE chain = ?", chain)
    trail.backend.execute("DELETE FROM audit_chains WHERE chain = ?", chain)
    assert trail.log.verify().ok
    done = wardfn("audit", "verify")
    assert done.exit_code == 1 and f"chain {chain} ends at its record 0" in done.stderr


@pytest.mark.parametrize("which", [0, 1])
def test_rewriting_a_whole_chain_consistently_fails_against_the_checkpoint(trail: Trail, which: int) -> None:
    signed = trail.checkpoint()[which]
    chain = trail.chain(which)
    rewrite_consistently(trail.backend, chain, 2, "HRESCH")
    assert trail.log.verify().ok  # every hash recomputed: the chain alone cannot tell
    assert [r.event.purpose for r in trail.log.records() if r.chain == chain] == ["TREAT", "HRESCH", "TREAT"]

    done = wardfn("audit", "verify")
    assert done.exit_code == 1
    expected = f"record 3 of chain {chain} is not the one a checkpoint signed at {signed.ts} covers"
    assert f"{expected}: the chain was rewritten" in done.stderr


@pytest.mark.parametrize("which", [0, 1])
def test_a_chain_rewritten_and_then_signed_again_still_fails_on_the_older_checkpoint(trail: Trail, which: int) -> None:
    trail.checkpoint()
    rewrite_consistently(trail.backend, trail.chain(which), 2, "HRESCH")
    trail.writers[which].append(event(7))
    # Another checkpointer (which never signed the old head) signs the rewritten chain.
    trail.checkpoint()
    done = wardfn("audit", "verify")
    assert done.exit_code == 1 and "the chain was rewritten" in done.stderr


@pytest.mark.parametrize("which", [0, 1])
def test_records_added_to_a_chain_signed_closed_fail(trail: Trail, which: int) -> None:
    writer = trail.writers[which]
    chain = trail.chain(which)
    checkpointer = Checkpointer(
        writer, load_signing_key(trail.settings), [CheckpointFile(trail.settings.audit_checkpoint_path)], 60
    )
    checkpointer.stop()  # seals the chain, then signs it closed
    (last,) = [json.loads(line) for line in trail.settings.audit_checkpoint_path.read_text().splitlines()]
    assert last["heads"] == [{"chain": chain, "n": 3, "hash": writer.chain_hash_at(chain, 3), "closed": True}]
    # Someone with the database reopens the chain and adds a forged record after its close.
    (row,) = trail.backend.query("SELECT hash FROM audit WHERE chain = ? AND n = 3", chain)
    forged = {**dataclasses.asdict(event(99)), "reasons": [], "seq": 999, "ts": "2026-01-01T00:00:00.000000Z",
              "chain": chain, "n": 4, "prev_hash": row[0]}  # fmt: skip
    trail.backend.execute(
        "INSERT INTO audit (seq, ts, request_id, subject_id, role, function, patient_id, purpose, decision_id, "
        "allowed, reasons, outcome, latency_ms, chain, n, prev_hash, hash) "
        "VALUES (999, ?, 'req-99', 'dr-grey', 'authorized_medical_staff', 'patient_lookup', ?, 'TREAT', 'dec-99', "
        "1, '[]', 'ok', 1.5, ?, 4, ?, ?)",
        forged["ts"], PATIENT, chain, row[0], chain_hash({k: v for k, v in forged.items() if k in SIGNED_FIELDS}),
    )  # fmt: skip
    trail.backend.execute(
        "UPDATE audit_chains SET closed_n = 4, closed_hash = (SELECT hash FROM audit WHERE seq = 999) WHERE chain = ?",
        chain,
    )
    assert trail.log.verify().ok  # the chain and its close agree: only the signed close can tell
    done = wardfn("audit", "verify")
    assert done.exit_code == 1
    assert (
        f"chain {chain} was signed closed at its record 3 at {last['ts']} but now ends at its record 4" in done.stderr
    )


@pytest.mark.parametrize("tamper", ["seq", "hash", "closed", "garbage", "other key"])
def test_a_tampered_checkpoint_line_fails(settings: Settings, log: AuditLog, tamper: str) -> None:
    checkpoint_now(settings, log)
    log.append(event(7))
    signed = checkpoint_now(settings, log)
    path = settings.audit_checkpoint_path
    lines = path.read_text().splitlines()
    line = json.loads(lines[1])
    if tamper == "seq":
        line["heads"][0]["n"] = 5  # point the signed head at an earlier record, to hide a deleted tail
    elif tamper == "hash":
        line["heads"][0]["hash"] = log.records(limit=1, after_seq=4)[0].hash
    elif tamper == "closed":
        line["heads"][0]["closed"] = True
    elif tamper == "other key":
        line = sign_heads(Ed25519PrivateKey.generate(), signed.heads).as_json()
    lines[1] = "not json {" if tamper == "garbage" else json.dumps(line)
    path.write_text("\n".join(lines) + "\n")

    done = wardfn("audit", "verify")
    assert done.exit_code == 1
    assert f"line 2 of {path} is not a checkpoint signed by the checkpoint key" in done.stderr


def test_a_missing_checkpoint_file_fails_when_a_host_wrote_the_trail(settings: Settings, log: AuditLog) -> None:
    done = wardfn("audit", "verify")
    assert done.exit_code == 1
    assert f"there is no checkpoint in {settings.audit_checkpoint_path}" in done.stderr
    assert "--no-checkpoint" in done.stderr
    alone = wardfn("audit", "verify", "--no-checkpoint")
    assert alone.exit_code == 0 and "audit chains intact" in alone.stdout


def test_a_development_trail_with_no_host_records_needs_no_checkpoint(settings: Settings) -> None:
    for _ in range(2):  # the second run finds the first's audited read, and still passes
        done = wardfn("audit", "verify")
        assert done.exit_code == 0, done.output
        assert "no checkpoint" in done.stdout


def test_verify_accepts_a_public_key_file_and_refuses_the_wrong_one(
    settings: Settings, log: AuditLog, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    checkpoint_now(settings, log)
    right, wrong = tmp_path / "right.pem", tmp_path / "wrong.pem"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    right.write_bytes(load_signing_key(settings).public_key().public_bytes(serialization.Encoding.PEM, public))
    wrong.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.PEM, public))
    assert wardfn("audit", "verify", "--public-key", str(right)).exit_code == 0
    refused = wardfn("audit", "verify", "--public-key", str(wrong))
    assert refused.exit_code == 1 and "line 1 of" in refused.stderr


def test_the_checkpoint_command_signs_the_head_and_refuses_a_broken_chain(settings: Settings, log: AuditLog) -> None:
    done = wardfn("audit", "checkpoint")
    assert done.exit_code == 0, done.output
    written = json.loads(done.stdout)
    # Every chain's head: the fixture's writer's, and the command's own audited read's.
    assert [(h["n"], h["closed"]) for h in written["heads"]] == [(6, False), (1, False)] or [
        (h["n"], h["closed"]) for h in written["heads"]
    ] == [(1, False), (6, False)]
    ((_, on_file),) = CheckpointFile(settings.audit_checkpoint_path).read()
    assert on_file is not None and on_file.as_json() == written
    assert signature_holds(on_file, load_signing_key(settings).public_key())

    execute(settings.database_path, "DELETE FROM audit WHERE seq > 3")
    refused = wardfn("audit", "checkpoint")
    assert refused.exit_code == 1 and "refusing to sign" in refused.stderr and refused.stdout == ""
    assert len(settings.audit_checkpoint_path.read_text().splitlines()) == 1


# --- audited reads -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["verify", "review", "checkpoint"])
def test_reading_the_trail_leaves_an_audit_record(settings: Settings, log: AuditLog, command: str) -> None:
    checkpoint_now(settings, log)
    done = wardfn("audit", command, "--reader", "auditor-7")
    assert done.exit_code == 0, done.output
    (read,) = log.records(after_seq=6)
    assert read.event.function == f"audit:{command}"
    assert (read.event.subject_id, read.event.patient_id, read.event.outcome) == ("auditor-7", None, "read")
    assert log.verify().ok


def test_the_reader_defaults_to_the_os_user(settings: Settings, log: AuditLog) -> None:
    assert wardfn("audit", "review").exit_code == 0
    (read,) = log.records(after_seq=6)
    assert read.event.subject_id


@pytest.mark.parametrize("command", ["verify", "review"])
def test_a_read_that_cannot_be_audited_shows_nothing(settings: Settings, log: AuditLog, command: str) -> None:
    execute(
        settings.database_path,
        "CREATE TRIGGER refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    done = wardfn("audit", command, "--json" if command == "review" else "--no-checkpoint")
    assert done.exit_code != 0
    assert done.stdout == ""
    assert "audit trail" in done.stderr and "Traceback" not in done.stderr


# --- the checkpointer --------------------------------------------------------------------


def test_the_checkpointer_signs_when_the_head_moves_and_only_then(
    settings: Settings, log: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    path = settings.audit_checkpoint_path
    checkpointer = Checkpointer(log, load_signing_key(settings), [CheckpointFile(path)], interval_s=0.02)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    checkpointer.start()
    try:
        assert [line["heads"][0]["n"] for line in lines()] == [6]  # one at start
        time.sleep(0.2)  # ten intervals with the head still
        assert len(lines()) == 1
        log.append(event(7))
        wait_for(lambda: len(lines()) == 2)
        assert lines()[1]["heads"][0]["n"] == 7
        log.append(event(8))
    finally:
        checkpointer.stop()
    # The last head is signed at stop, whether or not a tick saw it, and as the chain's close.
    assert lines()[-1]["heads"] == [{"chain": log.chains[0], "n": 8, "hash": log.head()[1], "closed": True}]
    heads = [json.dumps(line["heads"]) for line in lines()]
    assert len(set(heads)) == len(heads)  # never the same head twice
    assert verify_checkpoints(log, path, load_signing_key(settings).public_key(), production=False).ok


def test_the_checkpointer_refuses_to_sign_over_a_rewritten_chain(
    settings: Settings, log: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    path = settings.audit_checkpoint_path
    checkpointer = Checkpointer(log, load_signing_key(settings), [CheckpointFile(path)], interval_s=60)
    assert checkpointer.checkpoint() is not None
    execute(settings.database_path, "DELETE FROM audit WHERE n > 3")
    execute(settings.database_path, "UPDATE audit SET n = n + 3 WHERE n > 0")  # hide the deletion from the writer
    log.append(event(9))
    with caplog.at_level(logging.WARNING, logger="wardfn.audit"):
        assert checkpointer.checkpoint() is None
    assert len(path.read_text().splitlines()) == 1
    (message,) = [json.loads(r.getMessage()) for r in caplog.records]
    assert message["event"] == "audit_checkpoint_refused" and PATIENT not in json.dumps(message)


class BrokenSink:
    def publish(self, checkpoint: Checkpoint) -> None:
        raise OSError(f"broker unreachable while sending {checkpoint.ts}")


def test_a_failing_sink_is_logged_and_never_stops_the_others(
    settings: Settings, log: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    path = settings.audit_checkpoint_path
    sinks = [BrokenSink(), CheckpointFile(path)]
    checkpointer = Checkpointer(log, load_signing_key(settings), sinks, interval_s=60)
    with caplog.at_level(logging.WARNING, logger="wardfn.audit"):
        assert checkpointer.checkpoint() is not None
    assert len(path.read_text().splitlines()) == 1
    (message,) = [json.loads(r.getMessage()) for r in caplog.records]
    assert message == {"event": "audit_checkpoint_failed", "stage": "publish", "sink": "BrokenSink", "error": "OSError"}


def test_a_checkpoint_line_holds_the_head_and_nothing_else(settings: Settings, log: AuditLog) -> None:
    checkpoint_now(settings, log)
    text = settings.audit_checkpoint_path.read_text()
    (line,) = [json.loads(t) for t in text.splitlines()]
    assert set(line) == {"heads", "ts", "key_id", "sig"}
    assert line["heads"] == [{"chain": log.chains[0], "n": 6, "hash": log.head()[1], "closed": False}]
    for leaked in (PATIENT, "dr-grey", "patient_lookup", "TREAT", "req-", "dec-"):
        assert leaked not in text
    assert oct(settings.audit_checkpoint_path.stat().st_mode & 0o777) == "0o600"


def test_the_development_key_is_made_once_and_private(settings: Settings) -> None:
    first = load_signing_key(settings)
    again = load_signing_key(settings)
    assert first.private_bytes_raw() == again.private_bytes_raw()
    assert settings.audit_checkpoint_key_path.stat().st_mode & 0o077 == 0
    assert settings.audit_checkpoint_key_path.parent.stat().st_mode & 0o077 == 0


def test_head_and_hash_at(settings: Settings, log: AuditLog) -> None:
    seq, digest = log.head()
    assert seq == 6 and log.hash_at(6) == digest
    assert log.hash_at(0) == GENESIS_HASH and log.hash_at(7) is None
    empty = AuditLog(settings.database_path.with_name("empty.db"))
    try:
        assert empty.head() == (0, GENESIS_HASH)
    finally:
        empty.close()


def test_writers_sharing_the_checkpoint_file_never_mix_their_lines(settings: Settings, log: AuditLog) -> None:
    # As several host processes do: each thread has its own file description, so flock orders them.
    key = load_signing_key(settings)
    path = settings.audit_checkpoint_path
    checkpoint = sign_heads(key, log.chain_heads())

    def write() -> None:
        sink = CheckpointFile(path)
        for _ in range(50):
            sink.publish(checkpoint)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = CheckpointFile(path).read()
    assert len(lines) == 200 and all(c == checkpoint for _, c in lines)
