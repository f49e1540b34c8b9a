"""`wardfn audit`: the hash-chained audit trail, its signed checkpoints, and audited reads of it.

Every command here that reads the trail first appends a record of that read (function
`audit:<command>`, the reader as subject, no patient) and prints nothing unless that record
is durable: reading the trail is itself on the trail.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import uuid
from pathlib import Path

import click

from host.audit import retention
from host.audit.archive_file import verify_archive
from host.audit.checkpoints import (
    READ_PREFIX,
    CheckpointFile,
    load_signing_key,
    load_verification_key,
    sign_heads,
    verify_checkpoints,
)
from host.audit.trail import AuditLog, open_audit
from host.cli.common import cli_settings
from host.config import Settings
from host.errors import ArchiveRefused, StoreUnavailable
from host.types import AuditEvent

CHECKPOINTS_HELP = (
    "The checkpoint file (default: WARDFN_AUDIT_CHECKPOINT_FILE, or this trail's file under WARDFN_HOME)."
)
UNREADABLE_REASON = "(sealed under another key: unreadable here)"
READER_HELP = "Who is reading, as the audit record of this read names them (default: the OS user)."


@click.group()
def audit() -> None:
    """The hash-chained audit trail."""


def record_read(log: AuditLog, command: str, reader: str | None) -> None:
    """Append the audit record of this read; raises AuditUnavailable (and nothing is shown) if it cannot."""
    log.append(
        AuditEvent(
            request_id=uuid.uuid4().hex,
            subject_id=reader or _os_user(),
            role=None,
            function=READ_PREFIX + command,
            patient_id=None,
            purpose=None,
            decision_id=None,
            allowed=None,
            reasons=(),
            outcome="read",
            latency_ms=0.0,
        )
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry and no $USER
        return f"uid:{os.getuid()}"


@audit.command("verify")
@click.option(
    "--checkpoints", "checkpoint_file", type=click.Path(dir_okay=False, path_type=Path), help=CHECKPOINTS_HELP
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The checkpoint key's public half, PEM (default: derived from WARDFN_AUDIT_CHECKPOINT_KEY_FILE).",
)
@click.option("--no-checkpoint", is_flag=True, help="Check the chain alone, not against its signed checkpoints.")
@click.option("--reader", help=READER_HELP)
def audit_verify(
    checkpoint_file: Path | None, public_key: Path | None, no_checkpoint: bool, reader: str | None
) -> None:
    """Check the audit chain and its signed checkpoints; exit non-zero naming the problem."""
    settings = cli_settings()
    path = checkpoint_file or settings.audit_checkpoint_path
    log = open_audit(settings)
    try:
        record_read(log, "verify", reader)
        report = log.verify()
        checked = None
        if not no_checkpoint:
            key = load_verification_key(settings, public_key)
            checked = verify_checkpoints(log, path, key, settings.production)
    finally:
        log.close()
    if report.ok:
        click.echo(f"audit chains intact: {report.checked} records in {report.chains} chains verified")
    else:
        click.echo(f"audit chain broken at record {report.first_bad_seq}: {report.problem}", err=True)
    if checked is not None:
        if not checked.ok:
            click.echo(f"audit checkpoint check failed: {checked.problem}", err=True)
        elif checked.latest is None:
            click.echo(f"no checkpoint in {path} yet: no host has written to this trail")
        else:
            click.echo(
                f"checkpoints hold: {checked.checkpoints} in {path}; the newest was signed at {checked.latest.ts}"
            )
    if not report.ok or (checked is not None and not checked.ok):
        sys.exit(1)


@audit.command("checkpoint")
@click.option(
    "--checkpoints", "checkpoint_file", type=click.Path(dir_okay=False, path_type=Path), help=CHECKPOINTS_HELP
)
@click.option("--reader", help=READER_HELP)
def audit_checkpoint(checkpoint_file: Path | None, reader: str | None) -> None:
    """Sign the chain's head now and append it to the checkpoint file (refused if the chain does not verify)."""
    settings = cli_settings()
    path = checkpoint_file or settings.audit_checkpoint_path
    key = load_signing_key(settings)
    log = open_audit(settings)
    try:
        record_read(log, "checkpoint", reader)
        report = log.verify()
        checked = verify_checkpoints(log, path, key.public_key(), settings.production)
        # A first checkpoint has nothing to be checked against; any other failure must not be signed over.
        first = not checked.ok and not CheckpointFile(path).read()
        if not report.ok or not (checked.ok or first):
            problem = report.problem if not report.ok else checked.problem
            click.echo(
                f"refusing to sign a chain that does not verify: {problem}; run `wardfn audit verify` for details",
                err=True,
            )
            sys.exit(1)
        checkpoint = sign_heads(key, log.chain_heads())
    finally:
        log.close()
    CheckpointFile(path).publish(checkpoint)
    click.echo(json.dumps(checkpoint.as_json()))
    click.echo(f"checkpoint of {len(checkpoint.heads)} chains' heads appended to {path}", err=True)


@audit.command("archive")
@click.option("--before", required=True, help="Archive every record stamped before this month, YYYY-MM.")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The archive file to write (new)."
)
@click.option(
    "--checkpoints", "checkpoint_file", type=click.Path(dir_okay=False, path_type=Path), help=CHECKPOINTS_HELP
)
@click.option("--reader", help=READER_HELP)
def audit_archive(before: str, out: Path, checkpoint_file: Path | None, reader: str | None) -> None:
    """Archive the records older than the retention period to a file, sealed by a signed checkpoint, and drop them."""
    from host.audit.relay_cursor import RelayCursor
    from host.privacy.holds import under_review
    from host.service import AUDIT_QUERY_PURPOSE
    from host.store.database import open_database
    from host.store.resources import open_store

    settings = cli_settings()
    path = checkpoint_file or settings.audit_checkpoint_path
    key = load_signing_key(settings)
    log = open_audit(settings)
    try:
        record_read(log, "archive", reader)
        store = open_store(settings)
        try:
            held = under_review(log, lambda sealed: store.open_text(sealed, AUDIT_QUERY_PURPOSE), before)
        finally:
            store.close()
        streamed = None
        if settings.amqp is not None:  # the stream is the trail's copy: it must have every record archived
            cursor = RelayCursor(open_database(settings))
            try:
                streamed = cursor.sent_seq()
            finally:
                cursor.close()
        done = retention.archive(
            log,
            before=before,
            out=out,
            key=key,
            checkpoints=path,
            held=held,
            retention_years=settings.audit_retention_years,
            production=settings.production,
            streamed=streamed,
        )
    except ArchiveRefused as exc:
        click.echo(f"audit archive refused: {exc}", err=True)
        sys.exit(1)
    finally:
        log.close()
    if done is None:
        click.echo(f"no record stamped before {before}: nothing to archive")
        return
    dropped = f"; partitions dropped: {', '.join(done.dropped)}" if done.dropped else ""
    click.echo(
        f"archived {done.records} records of {done.chains} chains stamped before {before} to {out}{dropped}; "
        f"its checkpoint, signed at {done.checkpoint.ts}, is appended to {path}"
    )


@audit.command("verify-archive")
@click.argument("archive_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The checkpoint key's public half, PEM (default: derived from WARDFN_AUDIT_CHECKPOINT_KEY_FILE).",
)
def audit_verify_archive(archive_file: Path, public_key: Path | None) -> None:
    """Check an archive file on its own: its seal's signature, its records' digest, every chain's links."""
    # Reads a file, not the trail, and prints counts only: no database is needed, nor touched.
    key = load_verification_key(cli_settings(), public_key)
    if key is None:
        click.echo(
            "no key to check the archive with: set WARDFN_AUDIT_CHECKPOINT_KEY_FILE or pass --public-key", err=True
        )
        sys.exit(1)
    report = verify_archive(archive_file, key)
    if not report.ok:
        click.echo(f"audit archive check failed: {report.problem}", err=True)
        sys.exit(1)
    click.echo(
        f"audit archive intact: {report.records} records in {report.chains} chains, stamped before {report.before}, "
        f"sealed at {report.sealed_at}"
    )


@audit.command("review")
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--reader", help=READER_HELP)
def audit_review(limit: int, as_json: bool, reader: str | None) -> None:
    """List the records flagged for review (every break-the-glass attempt), oldest first."""
    settings = cli_settings()
    log = open_audit(settings)
    try:
        record_read(log, "review", reader)
        records = log.flagged(limit)
    finally:
        log.close()
    reasons = _open_reasons(settings, [r.event.break_glass_reason for r in records])
    rows = [
        {
            "seq": r.seq,
            "ts": r.timestamp,
            "subject_id": r.event.subject_id,
            "role": r.event.role,
            "patient_id": r.event.patient_id,
            "purpose": r.event.purpose,
            "allowed": r.event.allowed,
            "outcome": r.event.outcome,
            "decision_id": r.event.decision_id,
            "reason": reason,
        }
        for r, reason in zip(records, reasons, strict=True)
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(
            f"{row['seq']}  {row['ts']}  {row['subject_id']} ({row['role']})  patient {row['patient_id']}  "
            f"{row['outcome']}  reason: {row['reason']}"
        )
    click.echo(f"{len(rows)} records flagged for review", err=True)


def _open_reasons(settings: Settings, sealed: list[str | None]) -> list[str | None]:
    """The break-the-glass reasons in clear: they are kept sealed under the store's key (they may name
    the patient). A reason this store cannot open (another store's, or tampered) shows as unreadable."""
    if not any(sealed):
        return list(sealed)
    from host.service import AUDIT_REASON_PURPOSE
    from host.store.resources import SEALED_TEXT_PREFIX, open_store

    store = open_store(settings)
    try:
        opened: list[str | None] = []
        for text in sealed:
            if text is None or not text.startswith(SEALED_TEXT_PREFIX):
                opened.append(text)  # none given, or a record written before reasons were sealed
                continue
            try:
                opened.append(store.open_text(text, AUDIT_REASON_PURPOSE))
            except StoreUnavailable:
                opened.append(UNREADABLE_REASON)
        return opened
    finally:
        store.close()


@audit.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def audit_status(as_json: bool) -> None:
    """How far the relay has streamed the trail to the broker: head, cursor and the backlog between."""
    # Counts only, no record: this read is not itself audited, which would also move the head it reports.
    from host.audit.broker import redacted
    from host.audit.relay_cursor import RelayCursor
    from host.store.database import open_database

    settings = cli_settings()
    log = open_audit(settings)
    try:
        head = log.head()[0]
    finally:
        log.close()
    cursor = RelayCursor(open_database(settings))
    try:
        sent = cursor.sent_seq()
    finally:
        cursor.close()
    url = settings.amqp
    status = {
        "head_seq": head,
        "sent_seq": sent,
        "backlog": head - sent,
        "relay_configured": url is not None,
        "broker": redacted(url) if url else None,
        "exchange": settings.amqp_exchange if url else None,
    }
    if as_json:
        click.echo(json.dumps(status))
        return
    click.echo(f"audit head:  {head}")
    click.echo(f"relay sent:  {sent} (confirmed by the broker)")
    click.echo(f"backlog:     {head - sent} records")
    if url:
        click.echo(f"relay:       to exchange {settings.amqp_exchange!r} at {redacted(url)}")
    else:
        click.echo("relay:       not configured (set WARDFN_AMQP_URL to stream the trail to RabbitMQ)")
