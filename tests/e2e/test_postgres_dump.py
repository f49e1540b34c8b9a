"""Encryption at rest on PostgreSQL, as a stolen backup would show it: seeded and Synthea patients
imported by the real CLI, then the real pg_dump, which holds no name, identifier or phone of any."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

from tests.backends import PostgresBackend
from tests.e2e.server import WARDFN
from tests.e2e.test_encryption_at_rest import SEED, SEEDED, needles, seeded_patients, synthea_patients
from tests.host.test_fhir_import import synthea_dir


def test_a_pg_dump_holds_no_plaintext_phi_after_seeding_and_importing(
    postgres_backend: PostgresBackend, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "WARDFN_HOME": str(tmp_path / "home"),
        "WARDFN_KEK": base64.b64encode(os.urandom(32)).decode(),
        **postgres_backend.env(),
    }
    for args in (
        ("data", "seed", "--patients", str(SEEDED), "--seed", str(SEED)),
        ("data", "import", str(synthea_dir())),
    ):
        done = subprocess.run([str(WARDFN), *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr

    dump = postgres_backend.dump()
    patients = [*seeded_patients(), *synthea_patients()]
    assert len(patients) == SEEDED + 11
    assert all(p["id"].encode() in dump for p in patients), "ids are stored in clear: the dump must show them"
    assert sum(len(needles(p)) for p in patients) > 300
    assert sorted(needle for p in patients for needle in needles(p) if needle in dump) == []
