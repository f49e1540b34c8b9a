"""Signed checkpoints of the audit chains' heads, kept outside the database.

A hash chain alone cannot show that its newest records were deleted, nor that someone with
the database recomputed every hash after an edit. So the host signs chains' heads (a list of
chain, n, hash and whether the chain is closed, with the time and key id) with an Ed25519 key
the database does not hold, and appends it, one JSON line each, to a file outside the
database (and, through further sinks, to the RabbitMQ stream). `verify_checkpoints` then fails
when a signed head is no longer in its chain, or a chain signed closed has grown.

A signed list, not a Merkle tree: verification needs each chain's signed head itself (a
root alone would need the leaves stored beside it, in the database an attacker holds), and a
checkpointer's list is short: each host signs only the chains it wrote or closed since its last
checkpoint, one or two.

An archive's checkpoint (host/audit/retention.py) signs each chain's last archived record
with a note of what the archive holds; once records are archived, a chain's boundary in the
database counts only if such a checkpoint names it, so a deletion cannot pass for an archive.

What a checkpoint cannot catch: records changed after the newest checkpoint (at most one
interval's worth), or an attacker who holds the signing key, or who deletes the checkpoint
file as well as the rows (the stream is the copy they cannot reach).

Sinks: anything with `publish(checkpoint: Checkpoint) -> None` is a `CheckpointSink`. A sink
may raise; the `Checkpointer` logs the failure (one JSON line, no record content) and goes
on, so a sink can never block or fail an invocation. A sink is called from the checkpointer's
own thread, one checkpoint at a time, and should return within a second or so. To verify a
published checkpoint elsewhere: check `sig` (base64 Ed25519) over `canonical_json` of the
other four fields with the public key whose `key_id` (`key_id_of`) the checkpoint names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from host.audit.chain import describe_chain
from host.audit.checkpoint_file import CheckpointFile as CheckpointFile
from host.audit.checkpoint_file import canonical_json as canonical_json
from host.audit.checkpoint_file import parse_checkpoint as parse_checkpoint
from host.audit.checkpoint_keys import load_signing_key as load_signing_key
from host.audit.checkpoint_keys import load_verification_key as load_verification_key
from host.audit.trail import AuditLog
from host.config import Settings
from host.store import partitions
from host.types import ArchiveNote, ChainHead, Checkpoint, CheckpointReport

log = logging.getLogger("wardfn.audit")

PARTITIONS_EVERY_S = 3600.0
# Audit records the CLI appends for its own reads of the trail (`wardfn audit verify`, ...).
READ_PREFIX = "audit:"


class CheckpointSink(Protocol):
    """Somewhere checkpoints go: the checkpoint file, the RabbitMQ stream. May raise on failure."""

    def publish(self, checkpoint: Checkpoint) -> None: ...


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of sha256 over its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_heads(key: Ed25519PrivateKey, heads: Sequence[ChainHead], archive: ArchiveNote | None = None) -> Checkpoint:
    """A checkpoint of chains' heads (an archive's, with `archive`), stamped now and signed with `key`."""
    ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    unsigned = Checkpoint(heads=tuple(heads), ts=ts, key_id=key_id_of(key.public_key()), archive=archive)
    signature = base64.b64encode(key.sign(canonical_json(unsigned.signed_fields()))).decode()
    return replace(unsigned, signature=signature)


def signature_holds(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    """True if `checkpoint` was signed by the private half of `public_key`."""
    if checkpoint.key_id != key_id_of(public_key):
        return False
    try:
        public_key.verify(
            base64.b64decode(checkpoint.signature, validate=True), canonical_json(checkpoint.signed_fields())
        )
    except (InvalidSignature, ValueError):
        return False
    return True


# --- verification -------------------------------------------------------------------------


def verify_checkpoints(
    audit: AuditLog, path: Path, public_key: Ed25519PublicKey | None, production: bool
) -> CheckpointReport:
    """Check every signed checkpoint in `path` still holds in the chain; the first that does not fails."""
    head_seq, _ = audit.head()
    lines = CheckpointFile(path).read()
    if not lines:  # no file, or an empty one
        if not production and _only_reads(audit):
            # A development trail no host has written to (empty, or only the CLI's own reads).
            return CheckpointReport(ok=True, checkpoints=0)
        return CheckpointReport(
            ok=False,
            checkpoints=0,
            problem=(
                f"there is no checkpoint in {path}, so the trail's {head_seq} records cannot be checked for "
                "deleted or rewritten records: a running host writes one (WARDFN_AUDIT_CHECKPOINT_FILE); "
                "restore it from a backup or the stream, or pass --no-checkpoint to check the chain alone"
            ),
        )
    if public_key is None:
        return CheckpointReport(
            ok=False,
            checkpoints=len(lines),
            problem=(
                f"no key to check the checkpoints in {path} with: set WARDFN_AUDIT_CHECKPOINT_KEY_FILE "
                "or pass --public-key"
            ),
        )
    checkpoints: list[Checkpoint] = []
    for number, checkpoint in lines:
        if checkpoint is None or not signature_holds(checkpoint, public_key):
            return CheckpointReport(
                ok=False,
                checkpoints=len(lines),
                problem=(
                    f"line {number} of {path} is not a checkpoint signed by the checkpoint key: the checkpoint file "
                    "was altered (or written with another key); compare it with the stream's copy"
                ),
            )
        checkpoints.append(checkpoint)
    # Every signed head, each chain's newest first: a host that signed a rewritten chain later
    # must not hide the rewrite from the checkpoints signed before it.
    signed: dict[tuple[str, int, str], tuple[bool, str]] = {}
    for checkpoint in checkpoints:
        for head in checkpoint.heads:
            closed, _ = signed.get((head.chain, head.n, head.hash), (False, ""))
            signed[(head.chain, head.n, head.hash)] = (closed or head.closed, checkpoint.ts)
    latest = max(checkpoints, key=lambda c: c.ts)
    # Records may leave the table only through an archive, whose own signed checkpoint names where
    # each chain was cut: a boundary no archive signed is a deletion dressed up as one.
    bases = audit.archived()
    vouched = {(h.chain, h.n, h.hash) for c in checkpoints if c.archive is not None for h in c.heads}
    for chain, (n, digest) in sorted(bases.items()):
        if (chain, n, digest) not in vouched:
            problem = (
                f"{describe_chain(chain)}'s records up to its record {n} are gone, marked archived, but no signed "
                "archive checkpoint says so: records were deleted"
            )
            return CheckpointReport(ok=False, checkpoints=len(checkpoints), latest=latest, problem=problem)
    current = {h.chain: h for h in audit.chain_heads(sorted({chain for chain, _, _ in signed}))}
    for (chain, n, digest), (closed, ts) in sorted(signed.items(), key=lambda item: (item[0][0], -item[0][1])):
        where = describe_chain(chain)
        now = current[chain]
        if n < bases.get(chain, (0, ""))[0]:
            continue  # archived: the archive's own checkpoint covers it (`wardfn audit verify-archive`)
        stored = audit.chain_hash_at(chain, n)
        if stored is None:
            problem = (
                f"{where} ends at its record {now.n} but a checkpoint signed at {ts} covers its record {n}: "
                "records were deleted"
            )
        elif stored != digest:
            problem = (
                f"record {n} of {where} is not the one a checkpoint signed at {ts} covers: the chain was rewritten"
            )
        elif closed and now.n != n:
            problem = f"{where} was signed closed at its record {n} at {ts} but now ends at its record {now.n}"
        else:
            continue
        return CheckpointReport(ok=False, checkpoints=len(checkpoints), latest=latest, problem=problem)
    return CheckpointReport(ok=True, checkpoints=len(checkpoints), latest=latest)


def _only_reads(audit: AuditLog) -> bool:
    """True if every record is one the CLI appended for its own reads of the trail."""
    after = 0
    try:
        while page := audit.records(limit=1000, after_seq=after):
            if any(not (r.event.function or "").startswith(READ_PREFIX) for r in page):
                return False
            after = page[-1].seq
    except (TypeError, ValueError):  # a mangled row: not a trail that can go without a checkpoint
        return False
    return True


# --- the background signer ----------------------------------------------------------------


class Checkpointer:
    """Signs, every `interval_s`, the heads of this host's chains that moved and of the chains it closed.

    Each tick it also renews this writer's lease and closes every chain whose writer's lease
    lapsed (any host may: a compare-and-set on the chain's row), so the set of open chains stays
    the set of live writers. At start (an empty list if nothing moved), every tick when a head
    moved, and once at stop (after sealing its own chain: the signed close).
    """

    def __init__(
        self, audit: AuditLog, key: Ed25519PrivateKey, sinks: Sequence[CheckpointSink], interval_s: float
    ) -> None:
        self._audit = audit
        self._key = key
        self.sinks = list(sinks)
        self._interval_s = interval_s
        self._last: dict[str, ChainHead] = {}  # each chain's head as this checkpointer last signed it
        self._closed: list[str] = []  # chains this checkpointer closed and has yet to sign
        self._lock = threading.Lock()  # one checkpoint at a time: the thread's, or stop()'s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._partitions_at: float | None = None  # monotonic time of the last partition check

    @classmethod
    def from_settings(cls, audit: AuditLog, settings: Settings) -> Checkpointer:
        """The host's checkpointer: the signing key the settings name, the checkpoint file as its sink."""
        sinks: list[CheckpointSink] = [CheckpointFile(settings.audit_checkpoint_path)]
        return cls(audit, load_signing_key(settings), sinks, settings.audit_checkpoint_interval_s)

    def start(self) -> None:
        self.keep_partitions()
        # Signed even when no head moved (none may have been written yet): a checkpoint file that says
        # a host started, so `wardfn audit verify` can tell "nothing signed yet" from "no host ever ran".
        self.checkpoint(starting=True)
        self._thread = threading.Thread(target=self._run, name="wardfn-audit-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, close this host's chain, then sign its final head (before the audit log closes)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self._audit.seal()
        except Exception as exc:  # the chain lapses, and another host's checkpointer closes it
            _event("audit_checkpoint_failed", stage="seal", error=type(exc).__name__)
        self.checkpoint()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.tend()
            self.checkpoint()

    def keep_partitions(self) -> None:
        """Make the audit table's next months' partitions, at most hourly (host/store/partitions.py); never raises."""
        if self._partitions_at is not None and time.monotonic() - self._partitions_at < PARTITIONS_EVERY_S:
            return
        self._partitions_at = time.monotonic()
        try:
            partitions.keep_ahead(self._audit.db)
        except Exception as exc:  # the default partition takes the rows meanwhile: logged, never fatal
            _event("audit_partitions_failed", error=type(exc).__name__)

    def tend(self) -> None:
        """Renew this writer's lease and close the chains whose lease lapsed; never raises."""
        self.keep_partitions()
        try:
            self._audit.renew()
            closed = self._audit.close_lapsed()
        except Exception as exc:
            _event("audit_checkpoint_failed", stage="lease", error=type(exc).__name__)
            return
        with self._lock:
            self._closed.extend(c for c in closed if c not in self._closed)

    def checkpoint(self, starting: bool = False) -> Checkpoint | None:
        """Sign and publish the heads that moved since the last checkpoint (at start, even none); never raises
        (failures are logged)."""
        with self._lock:
            try:
                chains = list(dict.fromkeys([*self._audit.chains, *self._closed]))
                moved = [h for h in self._audit.chain_heads(chains) if self._last.get(h.chain) != h]
                if not moved and not starting:
                    return None
                for head in moved:
                    last = self._last.get(head.chain)
                    if last is not None and self._audit.chain_hash_at(last.chain, last.n) != last.hash:
                        # The record this process last signed is gone or changed: signing the new head
                        # would vouch for a rewritten chain. Refuse, and keep refusing, loudly.
                        _event(
                            "audit_checkpoint_refused",
                            chain=last.chain,
                            n=last.n,
                            reason="signed record missing or changed",
                        )
                        return None
                checkpoint = sign_heads(self._key, moved)
            except Exception as exc:  # the audit log may be closing or unavailable: try next time
                _event("audit_checkpoint_failed", stage="sign", error=type(exc).__name__)
                return None
            for head in moved:
                self._last[head.chain] = head
            # A closed chain signed closed is done with; forget it so the list stays short.
            self._closed = [c for c in self._closed if not (c in self._last and self._last[c].closed)]
            for sink in self.sinks:
                try:
                    sink.publish(checkpoint)
                except Exception as exc:  # a sink never fails the host; the next head goes out again
                    _event(
                        "audit_checkpoint_failed", stage="publish", sink=type(sink).__name__, error=type(exc).__name__
                    )
            return checkpoint


def _event(name: str, **fields: Any) -> None:
    log.warning(json.dumps({"event": name, **fields}))
