"""Host-held secret keys: created once under the key directory, private to the host's user."""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path

from host.errors import ConfigurationError

KEY_BYTES = 32


def load_or_create_key(path: Path, size: int = KEY_BYTES) -> bytes:
    """The key at `path`, made on first use; refuses a file that is not a whole key."""
    make_private_dir(path.parent)
    if not path.exists():
        write_once(path, secrets.token_bytes(size))
    key = path.read_bytes()
    if len(key) != size:
        raise ConfigurationError(f"{path} is not a {size}-byte key; delete it and rebuild with `wardfn build`")
    return key


def write_once(path: Path, data: bytes) -> None:
    """Create `path` (mode 0600) holding `data`, unless it exists. Written whole then linked into
    place: a reader never sees a partial file, and of two processes racing, the first link wins
    and both then read its content."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)


def make_private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    require_private_dir(directory)


def require_private_dir(directory: Path) -> None:
    info = directory.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigurationError(
            f"{directory} must be owned by this user and writable by nobody else "
            f"(chmod 700 {directory}): the host keeps secrets and runs native code from there"
        )
