"""The `wardfn` command line, run as a user would, against a real server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host.auth import TokenVerifier
from tests.e2e.conftest import Patients
from tests.e2e.server import WARDFN, ServerProcess

pytestmark = pytest.mark.components


def wardfn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WARDFN), *args], env=env, capture_output=True, text=True, timeout=120)


def test_token_prints_the_bare_jwt(server: ServerProcess) -> None:
    done = wardfn(server.env, "token", "--sub", "dr-cli", "--role", "nurse", "--ttl", "60")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n" and token.count(".") == 2
    subject = TokenVerifier.from_settings(server.settings).verify(f"Bearer {token}")
    assert (subject.id, subject.role) == ("dr-cli", "nurse")


def test_invoke_prints_the_answer(server: ServerProcess, patients: Patients) -> None:
    token = server.token("dr-cli", "authorized_medical_staff")
    patient_id = patients.consenting[4]
    done = wardfn(
        server.env, "invoke", "patient_lookup", "--patient", patient_id, "--token", token, "--url", server.url
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"]["demographics"]["id"] == patient_id


def test_invoke_denied_exits_non_zero_with_the_reasons(server: ServerProcess, patients: Patients) -> None:
    token = server.token("billing-1", "billing")
    done = wardfn(
        server.env,
        "invoke",
        "patient_lookup",
        "--patient",
        patients.consenting[4],
        "--token",
        token,
        "--url",
        server.url,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "policy_denied"


def test_invoke_without_token_says_how_to_get_one(server: ServerProcess) -> None:
    env = {k: v for k, v in server.env.items() if k != "WARDFN_TOKEN"}
    done = wardfn(env, "invoke", "patient_lookup", "--patient", "p1", "--url", server.url)
    assert done.returncode != 0 and "wardfn token" in done.stderr


def test_invoke_unreachable_host_is_one_clear_line(server: ServerProcess) -> None:
    token = server.token("dr-cli", "authorized_medical_staff")
    done = wardfn(
        server.env, "invoke", "patient_lookup", "--patient", "p1", "--token", token, "--url", "http://127.0.0.1:9"
    )
    assert done.returncode != 0 and "cannot reach" in done.stderr and "Traceback" not in done.stderr


def test_data_patients_lists_ids_and_names(server: ServerProcess) -> None:
    done = wardfn(server.env, "data", "patients", "--limit", "3", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert len(listed) == 3 and all(set(p) == {"id", "name"} and " " in p["name"] for p in listed)


def _production_env(server: ServerProcess, tmp_path: Path) -> dict[str, str]:
    """Valid production settings: an identity provider's public key, its issuer, no development key."""
    checkpoint_key = tmp_path / "audit-checkpoint.pem"
    checkpoint_key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = tmp_path / "idp.pem"
    public.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {
        **server.env,
        "WARDFN_ENV": "production",
        "WARDFN_JWT_PUBLIC_KEY_FILE": str(public),
        "WARDFN_JWT_ISSUER": "https://idp.hospital.example",
        "WARDFN_KEK": base64.b64encode(os.urandom(32)).decode(),
        "WARDFN_AUDIT_CHECKPOINT_KEY_FILE": str(checkpoint_key),
    }


def test_production_refuses_development_conveniences(server: ServerProcess, tmp_path: Path) -> None:
    env = _production_env(server, tmp_path)
    listing = wardfn(env, "data", "patients", "--limit", "3", "--json")
    assert listing.returncode != 0 and "production" in listing.stderr
    assert listing.stdout == ""
    minting = wardfn(env, "token", "--sub", "x", "--role", "authorized_medical_staff")
    assert minting.returncode != 0 and minting.stdout == ""


def test_production_without_a_verification_key_refuses_to_start(server: ServerProcess) -> None:
    env = {**server.env, "WARDFN_ENV": "production"}
    done = wardfn(env, "serve", "--port", "9")
    assert done.returncode != 0
    assert "WARDFN_JWT_PUBLIC_KEY_FILE" in done.stderr and "Traceback" not in done.stderr


def test_build_reports_unchanged_functions_as_up_to_date(server: ServerProcess) -> None:
    done = wardfn(server.env, "build", "patient_lookup")
    assert done.returncode == 0, done.stderr
    assert "patient_lookup 0.1.0: up to date" in done.stderr
    unknown = wardfn(server.env, "build", "no_such_function")
    assert unknown.returncode != 0 and "no_such_function" in unknown.stderr


def test_seed_is_deterministic(server: ServerProcess, tmp_path: Path) -> None:
    listings = []
    for run in ("a", "b"):
        env = {**server.env, "WARDFN_DATABASE": str(tmp_path / f"{run}.db")}
        assert wardfn(env, "data", "seed", "--patients", "7", "--seed", "42").returncode == 0
        listings.append(json.loads(wardfn(env, "data", "patients", "--limit", "100", "--json").stdout))
    assert len(listings[0]) == 7 and listings[0] == listings[1]
