"""`wardfn bench` runs as a user would: tiny runs, well-formed JSON with every ratio, and a PNG.

Not timed: nothing here fails because the machine is slow; the numbers are only checked to exist."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FUNCTION_DIRS, TEST_HOME
from tests.e2e.server import WARDFN
from tests.host.data.test_fhir_import import synthea_dir

pytestmark = pytest.mark.components

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "WARDFN_HOME": str(TEST_HOME),
        "WARDFN_FUNCTIONS_DIRS": json.dumps([str(d) for d in FUNCTION_DIRS]),
        "WARDFN_SEED_PATIENTS": "30",
        "WARDFN_WORKERS": "1",
    }


def _check(out: Path, name: str, ratios: set[str]) -> dict[str, object]:
    document = json.loads((out / f"{name}.json").read_text())
    assert set(document["ratios"]) == ratios
    assert document["machine"]["cpus"] >= 1 and document["machine"]["versions"]["wasmtime"] == "50.0.1"
    assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    return document  # type: ignore[no-any-return]


def test_cold_start_writes_json_and_png(built_functions: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [str(WARDFN), "bench", "cold-start", "clinical_calc", "--iterations", "2", "--out", str(tmp_path)],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = _check(tmp_path, "cold-start", {"prepared_over_warm_p50", "subprocess_over_cold_p50"})
    phases = document["functions"]["clinical_calc"]["phases"]  # type: ignore[index]
    for phase in ("componentize", "compile", "load_cwasm", "cold_invocation", "prepared_invocation", "warm_call",
                  "python_in_process", "python_subprocess"):  # fmt: skip
        assert phases[phase]["p50"] > 0 and math.isfinite(phases[phase]["max"])
    assert document["functions"]["clinical_calc"]["baselines_give_the_same_answer"] is True  # type: ignore[index]
    assert "cold invocation" in done.stderr


def test_load_writes_json_and_png(built_functions: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [
            str(WARDFN), "bench", "load", "--connections", "2", "--rate", "20", "--low-rate", "10",
            "--duration", "0.5", "--warmup", "0.1", "--startup-runs", "1", "--subjects", "5", "--patients", "10",
            "--out", str(tmp_path),
        ],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ratios = {
        "cpu_per_request_over_floor", "p99_one_core_at_150rps_ms", "p99_one_core_at_200rps_ms", "rss_mib", "errors",
    }  # fmt: skip
    document = _check(tmp_path, "load", ratios)
    runs = document["runs"]
    assert [(r["target"], r["mode"], r.get("offered_rate")) for r in runs] == [  # type: ignore[union-attr]
        ("floor", "open", 10), ("full", "open", 10), ("full", "open", 20), ("full", "closed", None),
        ("reuse", "closed", None),
    ]  # fmt: skip
    assert document["ratios"]["errors"] == 0  # type: ignore[index]
    assert all(r["completed"] > 0 for r in runs)  # type: ignore[union-attr]
    assert document["audit_chain"]["ok"] is True  # type: ignore[index]
    assert len(document["commit"]["sha"]) == 40  # type: ignore[index]
    options = document["options"]
    assert (options["subjects"], options["patients"]) == (5, 10)  # type: ignore[index]
    assert document["ratios"]["rss_mib"] > 0  # type: ignore[index]
    if len(os.sched_getaffinity(0)) >= 2:  # one worker pinned to one CPU, the generator on another
        assert options["server_cpu"] != options["generator_cpu"]  # type: ignore[index]
        assert document["settings"]["workers"] == 1  # type: ignore[index]
        assert document["cpu_ms_per_request"]["floor"] is not None  # type: ignore[index]
        # Not at the seed's rates: the pod's p99s are not claimed.
        assert document["ratios"]["p99_one_core_at_200rps_ms"] is None  # type: ignore[index]


def test_history_writes_json_and_png(built_functions: list[str], tmp_path: Path) -> None:
    # The smallest Synthea bundle, imported and summarised beside the synthetic charts.
    bundle = min(synthea_dir().glob("*.json"), key=lambda p: p.stat().st_size)
    done = subprocess.run(
        [str(WARDFN), "bench", "history", "--quick", "--sizes", "25,50", "--workers", "1", "--out", str(tmp_path),
         "--bundles", str(bundle)],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = _check(tmp_path, "history", {"summary_p99_50k_over_100"})
    assert document["summary_p99_50k_over_100"] == document["ratios"]["summary_p99_50k_over_100"]  # type: ignore[index]
    assert len(document["commit"]["sha"]) == 40  # type: ignore[index]
    assert document["options"]["sizes"] == [25, 50] and document["options"]["calls"] == 3  # type: ignore[index]
    assert [p["resources"] for p in document["patients"]] == [25, 50]  # type: ignore[union-attr,index]
    runs = document["runs"]
    assert [(r["function"], r["target_resources"]) for r in runs] == [  # type: ignore[union-attr]
        (function, size) for size in (25, 50) for function in ("summary", "med_safety", "export")
    ]
    for run in runs:  # type: ignore[union-attr]
        assert sum(run["status"].values()) == run["calls"] == run["latency_ms"]["n"]
        assert run["errors"] == run["calls"] - run["status"].get("200", 0)
        assert isinstance(run["error_codes"], dict)
    assert document["errors"]["total"] == sum(r["errors"] for r in runs)  # type: ignore[index,union-attr]
    assert document["ratio_basis"]["sizes"] == [25, 50]  # type: ignore[index]
    imported = document["bundles"]
    assert [(r["bundle"], r["function"]) for r in imported["runs"]] == [(1, "summary"), (1, "med_safety")]  # type: ignore[index]
    assert imported["every_summary_200"] and imported["bundle_summary_max_ms"] > 0  # type: ignore[index]
    assert imported["runs"][0]["resources"] == len(json.loads(bundle.read_bytes())["entry"])  # type: ignore[index]
    assert document["options"]["bundles"] == 1  # type: ignore[index]
    assert bundle.stem.split("_")[0] not in (tmp_path / "history.json").read_text()  # a bundle's name names its patient
    for chart in document["walks"]:  # type: ignore[union-attr]
        for function in ("fhir_export", "deidentify"):
            walked = chart[function]
            assert walked["complete"], walked
            assert walked["resources"] == walked["expected_resources"] > 0
