"""OPA bundles of the policy: a tar.gz with `.manifest` (revision, roots) and the Rego sources.

Deterministic: the same sources give the same bytes, and the revision is the same hash the
embedded engine reports, so a decision from either engine names the policy the same way.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

from host.policy.sources import PACKAGE, load_sources, revision_of

ROOT = PACKAGE.replace(".", "/")


def write_bundle(policy_dir: Path, out: Path) -> str:
    """Write the bundle of the policies in `policy_dir` (tests excluded) to `out`; return its revision."""
    sources = load_sources(policy_dir)
    revision = revision_of(sources)
    manifest = {"revision": revision, "roots": [ROOT], "rego_version": 1}
    files = {".manifest": json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")}
    for name, text in sorted(sources.items()):
        files[f"{ROOT}/{name}"] = text.encode("utf-8")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return revision
