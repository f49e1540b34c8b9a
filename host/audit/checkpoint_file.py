"""The checkpoint file: signed checkpoints, one canonical JSON line each, shared by every host process.

Lines are appended with O_APPEND under an flock and fsynced; a line that does not parse as a
checkpoint reads as None, which verification reports as an altered file. An archive's checkpoint
(host/audit/retention.py) carries an `archive` note besides its heads.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from host.errors import ConfigurationError
from host.types import ArchiveNote, ChainHead, Checkpoint


def canonical_json(value: Any) -> bytes:
    """The bytes a checkpoint's signature covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class CheckpointFile:
    """A file of checkpoints, one JSON line each, appended by every host process that shares the trail."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def publish(self, checkpoint: Checkpoint) -> None:
        """Append one line, durable when this returns."""
        line = canonical_json(checkpoint.as_json()) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # O_APPEND alone keeps one write whole on a local disk; the lock keeps lines whole
            # where it does not (network file systems) and orders the fsyncs.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        if created:  # the new file's name must survive a crash too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def read(self) -> list[tuple[int, Checkpoint | None]]:
        """Every line as (line number, checkpoint), None where a line is not a checkpoint; [] if no file."""
        try:
            with self.path.open("rb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # never read a line half written
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the checkpoint file {self.path} ({exc.strerror}): check its permissions"
            ) from None
        return [(number, _parse(line)) for number, line in enumerate(lines, start=1)]


def _parse(line: bytes) -> Checkpoint | None:
    try:
        return parse_checkpoint(json.loads(line))
    except ValueError:
        return None


def parse_checkpoint(value: Any) -> Checkpoint | None:
    """A checkpoint from its JSON form (a line of the checkpoint file, an archive's seal), None if it is not one."""
    try:
        archive = None
        if "archive" in value:
            note = value["archive"]
            starts = tuple(ChainHead(chain=h["chain"], n=h["n"], hash=h["hash"]) for h in note["starts"])
            before, records, digest = note["before"], note["records"], note["sha256"]
            if not (isinstance(records, int) and isinstance(before, str) and isinstance(digest, str)):
                return None
            archive = ArchiveNote(before=before, records=records, sha256=digest, starts=starts)
        if "heads" in value:
            heads = tuple(
                ChainHead(chain=h["chain"], n=h["n"], hash=h["hash"], closed=h["closed"]) for h in value["heads"]
            )
            legacy = False
        else:  # a line from before chains: the one chain's head
            heads, legacy = (ChainHead(chain="", n=value["seq"], hash=value["hash"]),), True
        checkpoint = Checkpoint(
            heads=heads, ts=value["ts"], key_id=value["key_id"], signature=value["sig"], legacy=legacy, archive=archive
        )
    except (ValueError, KeyError, TypeError):
        return None
    heads_ok = all(
        isinstance(h.chain, str)
        and isinstance(h.n, int)
        and h.n >= 0
        and isinstance(h.hash, str)
        and isinstance(h.closed, bool)
        for h in (*checkpoint.heads, *(archive.starts if archive else ()))
    )
    strings_ok = all(isinstance(v, str) for v in (checkpoint.ts, checkpoint.key_id, checkpoint.signature))
    return checkpoint if heads_ok and strings_ok else None
