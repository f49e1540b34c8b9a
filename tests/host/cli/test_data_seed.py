"""`wardfn data seed`, run as a user runs it: the default profile, and the history profile's charts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from host.data.history import history_patient
from tests.e2e.server import WARDFN


def _wardfn(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WARDFN_")}
    return subprocess.run(
        [str(WARDFN), *args], env={**clean, "WARDFN_HOME": str(home)}, capture_output=True, text=True, timeout=120
    )


def test_history_profile_seeds_charts_of_the_size_asked_for(tmp_path: Path) -> None:
    done = _wardfn(
        tmp_path, "data", "seed", "--profile", "history", "--patients", "3", "--resources", "150", "--seed", "5"
    )
    assert done.returncode == 0, done.stderr
    assert "added 3 patients (450 resources)" in done.stderr
    listed = json.loads(_wardfn(tmp_path, "data", "patients", "--limit", "10", "--json").stdout)
    assert {p["id"] for p in listed} == {history_patient(5, index, 150)[0]["id"] for index in range(3)}


def test_resources_without_the_history_profile_is_refused(tmp_path: Path) -> None:
    done = _wardfn(tmp_path, "data", "seed", "--patients", "3", "--resources", "150")
    assert done.returncode != 0 and "--profile history" in done.stderr
    assert not (tmp_path / "wardfn.db").exists()
