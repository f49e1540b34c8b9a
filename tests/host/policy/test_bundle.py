"""`wardfn policy bundle`'s writer: what OPA needs, deterministic, tests excluded, same revision."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from host.config import PROJECT_ROOT
from host.policy.bundle import write_bundle
from host.policy.engine import RegoPolicyEngine

POLICY_DIR = PROJECT_ROOT / "policies"


def test_bundle_holds_the_manifest_and_the_policy_but_no_tests(tmp_path: Path) -> None:
    out = tmp_path / "b" / "bundle.tar.gz"
    revision = write_bundle(POLICY_DIR, out)
    with tarfile.open(out, "r:gz") as tar:
        names = tar.getnames()
        manifest_file = tar.extractfile(".manifest")
        assert manifest_file is not None
        manifest = json.loads(manifest_file.read())
    assert names == [".manifest", "healthcare/his/his.rego"]
    assert manifest == {"revision": revision, "roots": ["healthcare/his"], "rego_version": 1}


def test_the_revision_is_the_embedded_engines_and_the_bytes_are_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "1.tar.gz", tmp_path / "2.tar.gz"
    revision = write_bundle(POLICY_DIR, first)
    assert write_bundle(POLICY_DIR, second) == revision
    assert first.read_bytes() == second.read_bytes()
    engine = RegoPolicyEngine.from_directory(POLICY_DIR, timeout_s=5.0)
    try:
        assert engine.revision == revision
    finally:
        engine.close()
