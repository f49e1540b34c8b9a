"""`wardfn data import`, run as a user runs it: the report says what was new, updated and unchanged."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.e2e.server import WARDFN
from tests.host.data.test_fhir_import import synthea_dir


def wardfn(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDFN_")}
    env.update(WARDFN_HOME=str(home), WARDFN_DATABASE=str(home / "wardfn.db"))
    return subprocess.run([str(WARDFN), *args], env=env, capture_output=True, text=True, timeout=300)


def test_import_reports_what_it_did_and_a_reimport_says_nothing_changed(tmp_path: Path) -> None:
    [bundle] = sorted(synthea_dir().glob("*.json"))[:1]
    resources = len(json.loads(bundle.read_bytes())["entry"])
    first = wardfn(tmp_path, "data", "import", str(bundle))
    assert first.returncode == 0, first.stderr
    assert f"resources: {resources} new, 0 updated, 0 unchanged" in first.stderr
    assert "patients: 1 new, 0 updated, 0 unchanged" in first.stderr
    assert "nothing changed" not in first.stderr
    again = wardfn(tmp_path, "data", "import", str(bundle))
    assert again.returncode == 0, again.stderr
    assert f"resources: 0 new, 0 updated, {resources} unchanged" in again.stderr
    assert "patients: 0 new, 0 updated, 1 unchanged" in again.stderr
    assert "nothing changed" in again.stderr and "nothing was written" in again.stderr
