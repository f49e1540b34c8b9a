"""`wardfn audit`: the hash-chained audit trail."""

from __future__ import annotations

import json
import sys

import click

from host.cli.common import cli_settings


@click.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the audit chain; exit non-zero naming the first bad record."""
    from host.audit import AuditLog

    settings = cli_settings()
    log = AuditLog(settings.database_path)
    try:
        report = log.verify()
    finally:
        log.close()
    if report.ok:
        click.echo(f"audit chain intact: {report.checked} records verified")
        return
    click.echo(f"audit chain broken at record {report.first_bad_seq}: {report.problem}", err=True)
    sys.exit(1)


@audit.command("review")
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def audit_review(limit: int, as_json: bool) -> None:
    """List the records flagged for review (every break-the-glass attempt), oldest first."""
    from host.audit import AuditLog

    log = AuditLog(cli_settings().database_path)
    try:
        records = log.flagged(limit)
    finally:
        log.close()
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
            "reason": r.event.break_glass_reason,
        }
        for r in records
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


@audit.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def audit_status(as_json: bool) -> None:
    """How far the relay has streamed the trail to the broker: head, cursor and the backlog between."""
    from host.amqp import redacted
    from host.audit import AuditLog
    from host.relay_cursor import RelayCursor

    settings = cli_settings()
    AuditLog(settings.database_path).close()  # makes the audit table of a new database, as serve would
    cursor = RelayCursor(settings.database_path)
    try:
        head, sent = cursor.head_seq(), cursor.sent_seq()
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
