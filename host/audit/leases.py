"""The chains' leases and heads, and the readers' horizon: the SQL behind "many chains, one trail".

A writer's chain is a row of `audit_chains` (migration 5) that only its writer writes while its
lease holds: every commit checks and renews the lease in its own transaction (`renew`), so a
writer whose lease lapsed, or whose chain was closed, writes nothing and opens a successor. Any
host may close a chain whose lease lapsed (`close_lapsed`): the row is taken by a compare-and-set
first, so a writer renewing at the same moment keeps its chain.

`horizon` is how a reader of PostgreSQL keeps `seq` a cursor in commit order although commits
may end in another order than they took their seqs (docs/audit.md#one-order-for-many-chains).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from host.audit.chain import COLUMNS, GENESIS_HASH, check_chains, describe_chain
from host.store.database import Connection, Database, Rows
from host.types import ChainHead, VerifyReport

OPEN = "INSERT INTO audit_chains (chain, writer, opened_at, lease_until) VALUES (?, ?, ?, ?)"
RENEW = "UPDATE audit_chains SET lease_until = ? WHERE chain = ? AND closed_n IS NULL AND lease_until >= ?"
HEAD = "SELECT n, hash FROM audit WHERE chain = ? ORDER BY n DESC LIMIT 1"
# Each archived chain's boundary: its last archived record (migration 9, host/audit/retention.py).
ARCHIVED = "SELECT chain, n, hash FROM audit_archived"
ARCHIVED_HEAD = "SELECT n, hash FROM audit_archived WHERE chain = ?"
HASH_AT = (
    "SELECT hash FROM audit WHERE chain = ? AND n = ? "
    "UNION ALL SELECT hash FROM audit_archived WHERE chain = ? AND n = ?"
)
CLOSE = "UPDATE audit_chains SET closed_n = ?, closed_hash = ?, closed_at = ? WHERE chain = ? AND closed_n IS NULL"
LAPSED = "SELECT chain FROM audit_chains WHERE closed_n IS NULL AND lease_until < ? ORDER BY chain"
# A no-op update that takes the row only if its lease is still lapsed.
TAKE_LAPSED = (
    "UPDATE audit_chains SET lease_until = lease_until WHERE chain = ? AND closed_n IS NULL AND lease_until < ?"
)


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def open_chain(conn: Connection, chain: str, writer: str, lease_s: float) -> None:
    conn.execute(OPEN, (chain, writer, timestamp(), time.time() + lease_s))


def renew(conn: Connection, chain: str, lease_s: float) -> bool:
    """Extend the lease; False if it had lapsed or the chain was closed (then nothing may be written to it)."""
    return renewed(send_renew(conn, chain, lease_s))


def send_renew(conn: Connection, chain: str, lease_s: float) -> Rows:
    """`renew`, sent: in a pipeline its answer is read later, with `renewed`."""
    now = time.time()
    return conn.execute(RENEW, (now + lease_s, chain, now))


def renewed(sent: Rows) -> bool:
    return sent.rowcount == 1


def head(conn: Connection, chain: str) -> tuple[int, str]:
    """A chain's newest record: stored, else its last archived one, else none (n 0)."""
    row = conn.execute(HEAD, (chain,)).fetchone() or conn.execute(ARCHIVED_HEAD, (chain,)).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)


def archived(conn: Connection) -> dict[str, tuple[int, str]]:
    """(n, hash) of each archived chain's last archived record: where what remains of it must follow on."""
    return {str(chain): (int(n), str(digest)) for chain, n, digest in conn.execute(ARCHIVED).fetchall()}


def verify(conn: Connection, select_in_chain_order: str) -> VerifyReport:
    """Every chain checked from its first record, or from its archive's boundary, then each closed
    chain's close (in the caller's snapshot)."""
    bases = archived(conn)
    # Each chain's stored head as (n, seq, hash); an archived chain's boundary until its rows say more.
    heads: dict[str, tuple[int, int, str]] = {chain: (n, 0, digest) for chain, (n, digest) in bases.items()}
    chain_at, n_at = COLUMNS.index("chain"), COLUMNS.index("n")

    def rows() -> Iterator[tuple[Any, ...]]:
        for row in conn.execute(select_in_chain_order):
            heads[row[chain_at]] = (row[n_at], row[0], row[-1])
            yield row

    report = check_chains(rows(), bases)
    if not report.ok:
        return report
    closes = conn.execute(
        "SELECT chain, closed_n, closed_hash FROM audit_chains WHERE closed_n IS NOT NULL ORDER BY chain"
    ).fetchall()
    problem = check_closes(heads, closes)
    if problem is not None:
        seq, words = problem
        return VerifyReport(ok=False, checked=report.checked, first_bad_seq=seq, problem=words, chains=report.chains)
    return report


def close_at_head(conn: Connection, chain: str) -> None:
    """Close `chain` at its stored head (in the caller's transaction)."""
    n, digest = head(conn, chain)
    conn.execute(CLOSE, (n, digest, timestamp(), chain))


def close_lapsed(database: Database) -> list[str]:
    """Close every chain whose lease lapsed, each at its head in a transaction of its own; the chains closed."""
    closed = []
    with database.connection() as conn:
        now = time.time()
        for (chain,) in conn.execute(LAPSED, (now,)).fetchall():
            with database.transaction(conn, None):
                if conn.execute(TAKE_LAPSED, (chain, now)).rowcount != 1:
                    continue  # renewed meanwhile: its writer lives
                close_at_head(conn, chain)
            closed.append(str(chain))
    return closed


def chain_heads(conn: Connection, chains: list[str] | None) -> list[ChainHead]:
    """The head of each of `chains` (every chain when None), and whether it is closed."""
    if chains is None:
        chains = [
            str(r[0]) for r in conn.execute("SELECT chain FROM audit_chains UNION SELECT DISTINCT chain FROM audit")
        ]
        chains.sort()
    heads = []
    for chain in chains:
        n, digest = head(conn, chain)
        closed = conn.execute("SELECT closed_n FROM audit_chains WHERE chain = ?", (chain,)).fetchone()
        heads.append(ChainHead(chain, n, digest, closed=bool(closed and closed[0] is not None)))
    return heads


def horizon(conn: Connection) -> int:
    """The highest seq up to which no running transaction can still add a record (in this snapshot).

    PostgreSQL: an append's transaction takes an id (its write on the chain's row), then its seqs,
    then writes its rows in a subtransaction, whose id (the rows' `xmin`) is therefore above the id
    of every transaction that took a lower seq. Once the reader's snapshot shows every transaction
    below a row's `xmin` ended (the snapshot's xmin is at or above it), no record below that row can
    still appear: the horizon is the highest such row. `xmin` is 32 bits and wraps, so the two are
    compared modulo 2^32, as PostgreSQL compares them. SQLite's single writer commits in seq order.
    """
    if conn.dialect == "sqlite":
        return 2**62
    (xmin,) = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296").fetchone()
    row = conn.execute(
        "SELECT seq FROM audit WHERE ((? - xmin::text::bigint) % 4294967296 + 4294967296) % 4294967296 < 2147483648 "
        "ORDER BY seq DESC LIMIT 1",
        (int(xmin),),
    ).fetchone()
    return int(row[0]) if row else 0


def check_closes(
    heads: dict[str, tuple[int, int, str]], closes: list[tuple[str, int, str]]
) -> tuple[int | None, str] | None:
    """Each closed chain against its stored head ((n, seq, hash) by chain): (seq to blame, words), or None."""
    for chain, closed_n, closed_hash in closes:
        n, seq, digest = heads.get(chain, (0, 0, GENESIS_HASH))
        if (n, digest) != (closed_n, closed_hash):
            change = "records were added after it closed" if n > closed_n else "records were deleted or rewritten"
            return seq or None, (
                f"{describe_chain(chain)} was closed at its record {closed_n} but now ends at its record {n}: {change}"
            )
    return None
