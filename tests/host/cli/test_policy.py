"""`wardfn policy eval | test | bundle`, run as a user runs them, against both engines."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from host.policy.table import DEFAULT_TABLE, load_table
from tests.e2e.server import WARDFN, free_port
from tests.opa_server import OpaServer

CASES = load_table(DEFAULT_TABLE)
SEED_INPUT = {
    "action": "access_patient_data",
    "user": {"id": "u-100", "role": "authorized_medical_staff"},
    "patient": {"id": "p-0001", "consent": True},
    "audit": {"enabled": True},
}


def wardfn(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDFN_")}
    return subprocess.run([str(WARDFN), *args], env=env, capture_output=True, text=True, timeout=120)


def write(tmp_path: Path, name: str, document: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.parametrize("wrapped", [False, True])
def test_eval_prints_the_seed_decision(tmp_path: Path, wrapped: bool) -> None:
    path = write(tmp_path, "in.json", {"input": SEED_INPUT} if wrapped else SEED_INPUT)
    done = wardfn("policy", "eval", "--input", str(path))
    assert done.returncode == 0, done.stderr
    decision = json.loads(done.stdout)
    assert {"allow", "reasons", "obligations", "break_glass"} <= set(decision)
    assert (decision["allow"], decision["reasons"], decision["break_glass"]) == (True, [], False)
    refused = write(tmp_path, "no.json", {**SEED_INPUT, "user": {"id": "u", "role": "visitor"}})
    denied = json.loads(wardfn("policy", "eval", "--input", str(refused)).stdout)
    assert denied["allow"] is False
    assert denied["reasons"] == ["the user's role is not authorised to access patient data"]


def test_eval_gives_the_same_answer_from_opa(tmp_path: Path, opa_server: OpaServer) -> None:
    glass = next(c for c in CASES if c.get("break_glass"))
    path = write(tmp_path, "in.json", glass["input"])
    answers = []
    for engine in (["--policy", "embedded"], ["--policy", "opa", "--opa-url", opa_server.url]):
        done = wardfn("policy", "eval", "--input", str(path), *engine)
        assert done.returncode == 0, done.stderr
        decision = json.loads(done.stdout)
        answers.append({k: decision[k] for k in ("allow", "reasons", "obligations", "break_glass", "policy_revision")})
    assert answers[0] == answers[1]
    assert answers[0]["break_glass"] is True


def test_eval_refuses_a_file_that_is_not_an_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[1, 2", encoding="utf-8")
    done = wardfn("policy", "eval", "--input", str(path))
    assert done.returncode != 0 and "not JSON" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("engine", ["embedded", "opa"])
def test_test_runs_the_table_and_ends_with_the_count(engine: str, opa_server: OpaServer) -> None:
    flags = ["--policy", "opa", "--opa-url", opa_server.url] if engine == "opa" else []
    done = wardfn("policy", "test", *flags)
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1] == f"{len(CASES)} passed, 0 failed"


def test_test_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    wrong = [dict(CASES[0]), {**CASES[-1], "allow": not CASES[-1]["allow"], "name": "flipped"}]
    table = write(tmp_path, "table.json", {"cases": wrong})
    done = wardfn("policy", "test", "--table", str(table))
    assert done.returncode == 1
    assert "FAIL flipped" in done.stdout
    assert done.stdout.splitlines()[-1] == "1 passed, 1 failed"


def test_test_against_an_absent_sidecar_fails_every_case() -> None:
    done = wardfn("policy", "test", "--policy", "opa", "--opa-url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == f"0 passed, {len(CASES)} failed"
    assert "no decision" in done.stdout


def test_opa_without_url_names_the_setting() -> None:
    done = wardfn("policy", "test", "--policy", "opa")
    assert done.returncode != 0 and "WARDFN_OPA_URL" in done.stderr


def test_bundle_writes_a_bundle_opa_serves(tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar.gz"
    done = wardfn("policy", "bundle", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with tarfile.open(out, "r:gz") as tar:
        assert ".manifest" in tar.getnames()
    server = OpaServer(tmp_path, out)
    try:
        path = write(tmp_path, "in.json", SEED_INPUT)
        decision = json.loads(
            wardfn("policy", "eval", "--input", str(path), "--policy", "opa", "--opa-url", server.url).stdout
        )
        assert decision["allow"] is True
    finally:
        server.stop()
