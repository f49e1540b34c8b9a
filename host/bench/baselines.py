"""The same logic without Wasm: (a) plain Python in this process, (b) a fresh interpreter per call.

Each baseline runs the function's own plain-Python module (summary.py, calc.py) on the same
input as the Wasm component: (a) with no isolation at all, (b) in a new `sys.executable`
process that starts, imports, opens the same SQLite file, queries, decrypts and answers, which
is the least a process (or a container) per request costs. Both read through the store, which
decrypts, as the host does: the database holds no plaintext to read directly.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from host.config import Settings
from host.store.encryption import DEV_KEK_FILE, kek_from_settings
from host.store.resources import ResourceStore

# Only what the lookup needs (the store, the cipher, the function's module): a process per call
# costs at least this, and importing the host's settings or web stack would flatter the Wasm side.
LOOKUP_SCRIPT = """
import base64, json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import summary
from host.store.encryption import LocalKek, read_kek_file
from host.store.resources import ResourceStore
secret = os.environ.get("WARDFN_KEK")
kek = LocalKek(base64.b64decode(secret) if secret else read_kek_file(Path(sys.argv[4]), "WARDFN_KEK_FILE"))
store = ResourceStore(Path(sys.argv[2]), kek)
patient_id = sys.argv[3]
def read(resource_type):
    return summary.parse(store.search(patient_id, resource_type))
sys.stdout.write(json.dumps(summary.build_summary(read), separators=(",", ":")))
"""

CALC_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import calc
sys.stdout.write(json.dumps(calc.calculate(json.loads(sys.argv[2])), separators=(",", ":")))
"""


@dataclass
class Baseline:
    """One function's logic as plain Python: `in_process()` runs it here, `command` in a new process."""

    in_process: Callable[[], Any]
    command: list[str]

    def subprocess(self) -> Any:
        done = subprocess.run(self.command, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the baseline process failed: {done.stderr.decode(errors='replace')[-500:]}")
        return json.loads(done.stdout)


def _module(directory: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"wardfn_bench_{directory.name}_{name}", directory / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def baseline_for(
    name: str, directory: Path, database: Path, patient_id: str | None, args: dict[str, Any], settings: Settings
) -> Baseline | None:
    """The baselines of the functions that have a plain-Python core; None for any other."""
    if name == "patient_lookup" and patient_id:
        summary = _module(directory, "summary")
        store = ResourceStore(database, kek_from_settings(settings))

        def lookup() -> Any:
            def read(resource_type: str) -> list[dict[str, Any]]:
                return summary.parse(store.search(patient_id, resource_type))  # type: ignore[no-any-return]

            return json.loads(json.dumps(summary.build_summary(read), separators=(",", ":")))

        # The child reads the KEK the settings name: WARDFN_KEK from the environment it inherits,
        # else this file (the development key, made above if it was missing).
        kek_file = settings.kek_file if settings.kek_file and settings.kek_given else settings.key_dir / DEV_KEK_FILE
        command = [sys.executable, "-c", LOOKUP_SCRIPT, str(directory), str(database), patient_id, str(kek_file)]
        return Baseline(lookup, command)
    if name == "clinical_calc":
        calc = _module(directory, "calc")
        encoded = json.dumps(args)
        return Baseline(
            lambda: json.loads(json.dumps(calc.calculate(json.loads(encoded)), separators=(",", ":"))),
            [sys.executable, "-c", CALC_SCRIPT, str(directory), encoded],
        )
    return None
