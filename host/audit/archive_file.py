"""An archive of the trail's old records: one file that verifies on its own, with the checkpoint key's public half.

JSON lines: a header (`{"format": FORMAT, "before": "YYYY-MM"}`), one line per record (every
column, canonical JSON, in (chain, n) order), and last `{"seal": checkpoint}`: the archive's
checkpoint, signed with the checkpoint key, the same line the checkpoint file gets. Its heads are
each chain's last archived record; its `archive` note names the month, the count of records, the
SHA-256 of the record lines, and where each chain's records in the file start (n 0, or the
previous archive's boundary). `verify_archive` checks the signature, the digest, and every
chain's links from its start to its signed head. The file is written under a temporary name,
synced, then linked into place: an archive is whole or absent. It holds patient ids: keep it as
the trail is kept (mode 0600 here).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from host.audit.chain import COLUMNS, GENESIS_HASH, check_chains, describe_chain
from host.audit.checkpoint_file import canonical_json, parse_checkpoint
from host.audit.checkpoints import signature_holds
from host.types import Checkpoint

FORMAT = "wardfn-audit-archive/1"


@dataclass(frozen=True)
class ArchiveReport:
    """The outcome of checking an archive file on its own."""

    ok: bool
    records: int = 0
    chains: int = 0
    before: str | None = None
    sealed_at: str | None = None
    problem: str | None = None


class ArchiveWriter:
    """Writes one archive: the header now, records one by one, the seal last (`finish`), or nothing (`abandon`)."""

    def __init__(self, path: Path, before: str) -> None:
        self.path = path
        self.records = 0
        self._digest = hashlib.sha256()
        self._partial = path.with_name(path.name + ".partial")
        fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._file.write(canonical_json({"format": FORMAT, "before": before}) + b"\n")

    @property
    def sha256(self) -> str:
        """The digest of the record lines written so far (what the seal signs)."""
        return self._digest.hexdigest()

    def add(self, row: tuple[Any, ...]) -> None:
        line = canonical_json(dict(zip(COLUMNS, row, strict=True))) + b"\n"
        self._digest.update(line)
        self._file.write(line)
        self.records += 1

    def finish(self, seal: Checkpoint) -> None:
        """Write the seal, sync, and put the file in place (refused if something took its name meanwhile)."""
        self._file.write(canonical_json({"seal": seal.as_json()}) + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.link(self._partial, self.path)  # never replaces an existing file, unlike rename
        os.unlink(self._partial)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def abandon(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


def verify_archive(path: Path, public_key: Ed25519PublicKey) -> ArchiveReport:
    """Check an archive file against its seal and the seal against `public_key`; the first fault fails."""
    try:
        header, seal, digest, count = _scan(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return ArchiveReport(ok=False, problem=f"{path} is not a readable wardfn audit archive ({type(exc).__name__})")
    if header.get("format") != FORMAT or seal is None or seal.archive is None:
        return ArchiveReport(ok=False, problem=f"{path} is not a wardfn audit archive sealed by a checkpoint")
    note = seal.archive
    failed = ArchiveReport(ok=False, records=count, before=note.before, sealed_at=seal.ts)
    if not signature_holds(seal, public_key):
        return _with(failed, "its seal is not signed by the checkpoint key: the archive was altered or is another's")
    if digest != note.sha256 or count != note.records or header.get("before") != note.before:
        return _with(failed, "its records are not the ones its seal signed: the archive was altered")
    starts = {h.chain: (h.n, h.hash) for h in note.starts}
    ends: dict[str, tuple[int, str]] = {}
    late: list[int] = []

    def rows() -> Iterator[tuple[Any, ...]]:
        for row in _rows(path):
            values = dict(zip(COLUMNS, row, strict=True))
            ends[values["chain"]] = (values["n"], values["hash"])
            if not str(values["ts"]) < note.before:
                late.append(values["seq"])
            yield row

    try:
        report = check_chains(rows(), starts)
    except (ValueError, KeyError, TypeError):
        return _with(failed, "a record line is not a record: the archive was altered")
    if not report.ok:
        return _with(failed, f"record {report.first_bad_seq}: {report.problem}")
    if late:
        return _with(failed, f"record {late[0]} is stamped after {note.before}, the month the archive is before")
    heads = {h.chain: (h.n, h.hash) for h in seal.heads}
    for chain in sorted(set(heads) | set(ends) | set(starts)):
        if ends.get(chain, starts.get(chain, (0, GENESIS_HASH))) != heads.get(chain):
            return _with(failed, f"{describe_chain(chain)} does not end in the archive where its seal says")
    return ArchiveReport(ok=True, records=count, chains=len(heads), before=note.before, sealed_at=seal.ts)


def _with(report: ArchiveReport, problem: str) -> ArchiveReport:
    return ArchiveReport(
        ok=False, records=report.records, before=report.before, sealed_at=report.sealed_at, problem=problem
    )


def _scan(path: Path) -> tuple[dict[str, Any], Checkpoint | None, str, int]:
    """The header, the seal, and the digest and count of the record lines between them."""
    digest, count = hashlib.sha256(), 0
    with path.open("rb") as f:
        header = json.loads(f.readline())
        previous = None
        for line in f:
            if previous is not None:
                digest.update(previous)
                count += 1
            previous = line
    if previous is None:
        raise ValueError("no seal")
    return header, parse_checkpoint(json.loads(previous)["seal"]), digest.hexdigest(), count


def _rows(path: Path) -> Iterator[tuple[Any, ...]]:
    """The record lines as rows in COLUMNS order (the header and the seal skipped)."""
    with path.open("rb") as f:
        f.readline()
        previous = None
        for line in f:
            if previous is not None:
                values = json.loads(previous)
                yield tuple(values[column] for column in COLUMNS)
            previous = line
