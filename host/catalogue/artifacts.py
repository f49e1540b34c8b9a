"""The content-addressed cache of compiled components, and the checks before one is trusted.

A `.cwasm` is native code that wasmtime runs without validating it, so the host
loads only artifacts it compiled itself: each has a record of its SHA-256 digest,
signed with an HMAC key that only the host holds, in a directory only the host
can write. A file that fails any check is refused, never loaded.

Hashing every `.cwasm` (tens of megabytes each) at every start cost most of a start-up, in
every worker process. So, as git's index does, a file once hashed gets a witness: an HMAC,
under the same key, of its digest and its identity (device, inode, size, mtime and ctime in
nanoseconds). While the identity is unchanged the content is: any write moves the ctime, which
no unprivileged process can set back. A file whose ctime is within `RACY_S` of when it was
hashed gets no witness (a second write within the same coarse clock tick could go unseen), and
a read-only cache simply hashes at every start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from host.errors import ArtifactRejected
from host.keys import load_or_create_key, make_private_dir, require_private_dir

KEY_FILE = "artifact-hmac.key"
WITNESS_SUFFIX = ".verified"
RACY_S = 2.0


@dataclass(frozen=True)
class Artifact:
    """A compiled function in the cache, as its signed record describes it."""

    name: str
    version: str
    key: str
    cwasm_sha256: str
    wasm_sha256: str
    cwasm_path: Path
    wasm_path: Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactCache:
    """Writes and reads verified artifacts under one private directory."""

    def __init__(self, directory: Path, key_dir: Path) -> None:
        self.directory = directory
        self._hmac_key = load_or_create_key(key_dir / KEY_FILE)

    def _paths(self, name: str, key: str) -> tuple[Path, Path, Path]:
        stem = self.directory / f"{name}-{key[:32]}"
        return stem.with_suffix(".wasm"), stem.with_suffix(".cwasm"), stem.with_suffix(".json")

    def lookup(self, name: str, key: str) -> Artifact | None:
        """The verified artifact for this key, None if never built; ArtifactRejected if tampered."""
        wasm_path, cwasm_path, record_path = self._paths(name, key)
        if not record_path.exists():
            return None
        require_private_dir(self.directory)
        try:
            raw = json.loads(record_path.read_bytes())
        except ValueError as exc:
            raise ArtifactRejected(f"{record_path}: unreadable record; rebuild with `wardfn build {name}`") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("artifact"), dict):
            raise ArtifactRejected(f"{record_path}: not an artifact record; rebuild with `wardfn build {name}`")
        fields, signature = raw["artifact"], raw.get("hmac", "")
        if not hmac.compare_digest(self._sign(fields), str(signature)):
            raise ArtifactRejected(f"{record_path}: signature does not match; rebuild with `wardfn build {name}`")
        if fields.get("key") != key or fields.get("name") != name:
            raise ArtifactRejected(f"{record_path}: describes another build; rebuild with `wardfn build {name}`")
        if not cwasm_path.is_file() or not self._holds(cwasm_path, str(fields.get("cwasm_sha256"))):
            raise ArtifactRejected(
                f"{cwasm_path}: digest does not match its record; rebuild with `wardfn build {name}`"
            )
        return Artifact(
            name=name,
            version=str(fields["version"]),
            key=key,
            cwasm_sha256=str(fields["cwasm_sha256"]),
            wasm_sha256=str(fields["wasm_sha256"]),
            cwasm_path=cwasm_path,
            wasm_path=wasm_path,
        )

    def lookup_all(self, wanted: Sequence[tuple[str, str]]) -> list[Artifact | None]:
        """`lookup` for each (name, key), side by side; the first rejection is raised.

        Checking a digest hashes tens of megabytes (tens of milliseconds each, every start) and
        hashlib lets go of the GIL meanwhile, so the files are hashed on every core there is.
        """
        if len(wanted) <= 1:
            return [self.lookup(name, key) for name, key in wanted]
        with ThreadPoolExecutor(max_workers=min(len(wanted), os.cpu_count() or 1)) as hashing:
            return list(hashing.map(lambda item: self.lookup(*item), wanted))

    def store(self, name: str, version: str, key: str, wasm: bytes, cwasm: bytes) -> Artifact:
        """Write the component and its compiled form atomically, then their signed record."""
        make_private_dir(self.directory)
        wasm_path, cwasm_path, record_path = self._paths(name, key)
        _write_atomic(wasm_path, wasm)
        _write_atomic(cwasm_path, cwasm)
        artifact = Artifact(
            name=name,
            version=version,
            key=key,
            cwasm_sha256=hashlib.sha256(cwasm).hexdigest(),
            wasm_sha256=hashlib.sha256(wasm).hexdigest(),
            cwasm_path=cwasm_path,
            wasm_path=wasm_path,
        )
        fields = {k: v for k, v in asdict(artifact).items() if not k.endswith("_path")}
        record = {"artifact": fields, "hmac": self._sign(fields)}
        _write_atomic(record_path, json.dumps(record, indent=2, sort_keys=True).encode())
        return artifact

    def _holds(self, path: Path, digest: str) -> bool:
        """True if the file at `path` has the SHA-256 `digest`: by its witness while the file is
        unchanged since it was last hashed, else by hashing it now (and leaving a witness)."""
        witness_path = path.with_suffix(WITNESS_SUFFIX)
        try:
            before = _identity(path)
        except OSError:
            return False
        try:
            witness = json.loads(witness_path.read_bytes())
            if isinstance(witness, dict) and hmac.compare_digest(
                self._sign({"cwasm_sha256": digest, "identity": before}), str(witness.get("hmac", ""))
            ):
                return True
        except (OSError, ValueError):
            pass  # no witness, or an unreadable one: hash
        if sha256_file(path) != digest:
            return False
        # Unchanged while it was read, and last changed long enough ago: worth a witness.
        if _identity(path) == before and time.time_ns() - before[-1] > RACY_S * 1e9:
            try:
                signed = self._sign({"cwasm_sha256": digest, "identity": before})
                _write_atomic(witness_path, json.dumps({"hmac": signed}).encode())
            except OSError:
                pass  # a read-only cache: hash again next time
        return True

    def _sign(self, fields: dict[str, object]) -> str:
        message = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._hmac_key, message, hashlib.sha256).hexdigest()


def _identity(path: Path) -> list[int]:
    """What changes whenever the file's content does (the ctime cannot be set back unprivileged)."""
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
