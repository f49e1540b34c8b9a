"""The policy's Rego sources as the host loads them, and the revision that names them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from host.errors import ConfigurationError

PACKAGE = "healthcare.his"
QUERY = f"data.{PACKAGE}"


def load_sources(policy_dir: Path) -> dict[str, str]:
    """{file name: text} of every `*.rego` in `policy_dir` except `*_test.rego`."""
    if not policy_dir.is_dir():
        raise ConfigurationError(
            f"policy directory {policy_dir} does not exist: set WARDFN_POLICY_DIR to the "
            "directory holding the .rego files"
        )
    paths = sorted(p for p in policy_dir.glob("*.rego") if not p.name.endswith("_test.rego"))
    if not paths:
        raise ConfigurationError(
            f"no .rego policy in {policy_dir} (test files *_test.rego are not loaded): "
            "set WARDFN_POLICY_DIR to the directory holding his.rego"
        )
    sources: dict[str, str] = {}
    for path in paths:
        try:
            sources[path.name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read policy file {path}: {exc}") from exc
    return sources


def revision_of(sources: dict[str, str]) -> str:
    """The policy revision: sha256 over the sources' names and texts (the bundle carries the same)."""
    return _revision(sources)


def _revision(sources: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(sources):
        for part in (name, sources[name]):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return digest.hexdigest()
