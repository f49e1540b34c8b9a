"""Retention: the trail's months older than the retention period archived behind a signed checkpoint, then dropped.

`archive` takes every record stamped before a month (`before`, 'YYYY-MM'). It refuses
(ArchiveRefused, saying what to do next) when the month is not wholly older than the retention
period, when the trail does not verify against its checkpoints, when a chain's records before the
month are not a prefix of it (a clock that went back across the cut), when no signed checkpoint
covers a chain's last record in the range, or when a record in it is still under an open review.
Otherwise it writes the records to an archive file (host/audit/archive_file.py) sealed by a
checkpoint it signs, appends that checkpoint to the checkpoint file, and only then, in one
transaction, records each chain's boundary (its last archived record) in `audit_archived` and
drops the records: on PostgreSQL the month partitions wholly before the month (and any stray rows
of the default partition), on SQLite a DELETE. What remains verifies from the boundaries, and a
boundary counts only if an archive's signed checkpoint names it (host/audit/checkpoints.py), so
rows deleted by hand still fail verification. A crash between the seal and the drop leaves a
signed archive checkpoint whose heads are still in the table: the trail verifies as before.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host.audit import leases
from host.audit.archive_file import ArchiveWriter
from host.audit.chain import COLUMNS, GENESIS_HASH, describe_chain
from host.audit.checkpoints import CheckpointFile, sign_heads, verify_checkpoints
from host.audit.trail import AuditLog
from host.errors import ArchiveRefused, AuditUnavailable
from host.store import partitions
from host.store.database import Database
from host.types import ArchiveNote, ChainHead, Checkpoint

PAGE = 5000
CUT_ATTEMPTS = 3
# How long the cut waits for the table's lock on PostgreSQL; appends queue behind it meanwhile.
CUT_LOCK_TIMEOUT = "1s"
PAGE_SQL = (
    f"SELECT {', '.join(COLUMNS)} FROM audit WHERE ts < ? AND (chain > ? OR (chain = ? AND n > ?)) "
    "ORDER BY chain, n LIMIT ?"
)
# A record of the chain at or below its last one in the range, stamped after the range: not a prefix.
NOT_PREFIX = "SELECT MIN(n) FROM audit WHERE chain = ? AND n <= ? AND ts >= ?"
MARK = (
    "INSERT INTO audit_archived (chain, n, hash, before, archived_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (chain) "
    "DO UPDATE SET n = excluded.n, hash = excluded.hash, before = excluded.before, archived_at = excluded.archived_at"
)


@dataclass(frozen=True)
class Archived:
    """What one archive took: the file, the month before which, the records and chains, the partitions dropped."""

    path: Path
    before: str
    records: int
    chains: int
    dropped: tuple[str, ...]
    checkpoint: Checkpoint


@dataclass
class _Span:
    """One chain's records in the range: its first and last n, the last one's hash, the highest seq."""

    first: int
    last: int
    hash: str
    top_seq: int = 0


def latest_before(now: datetime, years: int) -> str:
    """The latest month whose predecessors are all older than `years` years at `now`."""
    return f"{now.year - years:04d}-{now.month:02d}"


def archive(
    audit: AuditLog,
    *,
    before: str,
    out: Path,
    key: Ed25519PrivateKey,
    checkpoints: Path,
    held: Collection[int],
    retention_years: int,
    production: bool,
    streamed: int | None = None,
    now: datetime | None = None,
) -> Archived | None:
    """Archive every record stamped before `before` to `out` and drop it; None when there is none.

    `held`: seqs of records under open review; `streamed`: the seq the relay's broker confirmed, when
    the trail is streamed (a record not yet streamed is not archived: the stream would miss it)."""
    if not partitions.MONTH.match(before):
        raise ArchiveRefused(f"--before must be a month, YYYY-MM (got {before!r})")
    limit = latest_before(now or datetime.now(UTC), retention_years)
    if before > limit:
        raise ArchiveRefused(
            f"records before {before} are not all older than the retention period ({retention_years} years, "
            f"WARDFN_AUDIT_RETENTION_YEARS): the latest month that may be archived now is --before {limit}"
        )
    if out.exists() or out.with_name(out.name + ".partial").exists():
        raise ArchiveRefused(f"{out} exists: archive to a new file (an archive is never overwritten)")
    _check_trail(audit, checkpoints, key, production)
    bases = audit.archived()
    db = audit.db
    writer = ArchiveWriter(out, before)
    try:
        spans = _write_records(db, before, writer, held)
        if not spans:
            writer.abandon()
            return None
        _check_prefixes(db, before, spans)
        _check_covered(checkpoints, spans)
        if streamed is not None and max(span.top_seq for span in spans.values()) > streamed:
            raise ArchiveRefused(
                f"the relay has streamed the trail only up to record {streamed}, and records before {before} come "
                "after it: let it catch up (`wardfn audit status`), then archive again"
            )
        heads = [ChainHead(chain, span.last, span.hash) for chain, span in sorted(spans.items())]
        starts = [ChainHead(chain, *bases.get(chain, (0, GENESIS_HASH))) for chain in sorted(spans)]
        seal = sign_heads(key, heads, ArchiveNote(before, writer.records, writer.sha256, tuple(starts)))
        writer.finish(seal)
    except db.errors as exc:
        writer.abandon()
        raise _unavailable(db, "read", exc) from exc
    except BaseException:
        writer.abandon()
        raise
    # Signed first: a boundary in the table is believed only once an archive's checkpoint names it.
    CheckpointFile(checkpoints).publish(seal)
    try:
        dropped = _cut(db, before, writer.records, heads)
    except db.errors as exc:
        raise _unavailable(db, "drop the archived records from", exc) from exc
    return Archived(out, before, writer.records, len(spans), dropped, seal)


def _unavailable(db: Database, action: str, exc: BaseException) -> AuditUnavailable:
    return AuditUnavailable(
        f"could not {action} the audit trail at {db.display} ({db.describe(exc)}): nothing was dropped; "
        f"{db.advice(exc)}, then archive again to a new file"
    )


def _check_trail(audit: AuditLog, checkpoints: Path, key: Ed25519PrivateKey, production: bool) -> None:
    report = audit.verify()
    problem = report.problem
    if report.ok:
        checked = verify_checkpoints(audit, checkpoints, key.public_key(), production)
        problem = None if checked.ok and checked.latest is not None else checked.problem or "no checkpoint yet"
    if problem is not None:
        raise ArchiveRefused(
            f"refusing to archive a trail that does not verify ({problem}): run `wardfn audit verify` for details"
        )


def _write_records(db: Database, before: str, writer: ArchiveWriter, held: Collection[int]) -> dict[str, _Span]:
    """Every record stamped before `before` into `writer`, a page at a time in (chain, n) order; each chain's span."""
    spans: dict[str, _Span] = {}
    chain_at, n_at, review_at = COLUMNS.index("chain"), COLUMNS.index("n"), COLUMNS.index("review")
    after: tuple[str, int] = ("", 0)
    while True:
        with db.connection() as conn:
            page = conn.execute(PAGE_SQL, (before, after[0], after[0], after[1], PAGE)).fetchall()
        for row in page:
            if row[review_at] and row[0] in held:
                raise ArchiveRefused(
                    f"record {row[0]}, flagged for review, is still under an open (or referred) review: dispose of "
                    "it in the privacy office's review queue first, or archive an earlier month"
                )
            chain, n = str(row[chain_at]), int(row[n_at])
            span = spans.setdefault(chain, _Span(n, n, ""))
            span.last, span.hash, span.top_seq = n, str(row[-1]), max(span.top_seq, int(row[0]))
            writer.add(tuple(row))
        if len(page) < PAGE:
            return spans
        after = (str(page[-1][chain_at]), int(page[-1][n_at]))


def _check_prefixes(db: Database, before: str, spans: dict[str, _Span]) -> None:
    """Each chain's records in the range must be the start of what is left of it: a cut never leaves a hole."""
    with db.connection() as conn:
        for chain, span in sorted(spans.items()):
            (later,) = conn.execute(NOT_PREFIX, (chain, span.last, before)).fetchone()
            if later is not None:
                raise ArchiveRefused(
                    f"{describe_chain(chain)}'s records before {before} are not the start of it (its record {later} "
                    f"is stamped later than its record {span.last}: its writer's clock went back): archive an "
                    "earlier month"
                )


def _check_covered(checkpoints: Path, spans: dict[str, _Span]) -> None:
    """Each chain's last record in the range must be at or below a head a checkpoint signed (the trail verified)."""
    signed: dict[str, int] = {}
    for _, checkpoint in CheckpointFile(checkpoints).read():
        for head in checkpoint.heads if checkpoint is not None else ():
            signed[head.chain] = max(signed.get(head.chain, 0), head.n)
    for chain, span in sorted(spans.items()):
        if signed.get(chain, 0) < span.last:
            raise ArchiveRefused(
                f"no signed checkpoint covers record {span.last} of {describe_chain(chain)}, the newest this archive "
                "would take: run `wardfn audit checkpoint` (it signs every chain's head), then archive again"
            )


def _cut(db: Database, before: str, expected: int, heads: list[ChainHead]) -> tuple[str, ...]:
    """Record each chain's boundary and drop the archived records, in one transaction; the partitions dropped."""
    attempt = 1
    while True:
        try:
            return _cut_once(db, before, expected, heads)
        except db.errors:  # most likely the table's lock, not had within CUT_LOCK_TIMEOUT: appends go on meanwhile
            if attempt == CUT_ATTEMPTS:
                raise
            attempt += 1


def _cut_once(db: Database, before: str, expected: int, heads: list[ChainHead]) -> tuple[str, ...]:
    stamp = leases.timestamp()
    with db.connection() as conn, db.transaction(conn, None):
        partitioned = partitions.partitioned(conn)
        if partitioned:  # no insert may reach the range while it is counted and dropped
            conn.execute(f"SET LOCAL lock_timeout = '{CUT_LOCK_TIMEOUT}'")
            conn.execute("LOCK TABLE audit IN ACCESS EXCLUSIVE MODE")
        (count,) = conn.execute("SELECT COUNT(*) FROM audit WHERE ts < ?", (before,)).fetchone()
        if count != expected:
            raise ArchiveRefused(
                f"the records before {before} changed while they were archived ({expected} written, {count} now): "
                "nothing was dropped; remove the new archive file and archive again"
            )
        for head in heads:
            conn.execute(MARK, (head.chain, head.n, head.hash, before, stamp))
        if partitioned:
            return tuple(partitions.drop_before(conn, before))
        conn.execute("DELETE FROM audit WHERE ts < ?", (before,))
        return ()
