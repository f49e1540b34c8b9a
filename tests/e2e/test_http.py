"""Every status code of the HTTP API, against `wardfn serve` in its own process."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host.auth import ensure_dev_keypair
from host.store.resources import open_store
from tests.e2e.conftest import Patients
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.components


def _audit_for(server: ServerProcess, request_id: str) -> list[object]:
    log = server.open_audit()
    try:
        return [r for r in log.records(limit=100_000) if r.event.request_id == request_id]
    finally:
        log.close()


def _rid(label: str) -> str:
    return f"test-{label}-{time.monotonic_ns()}"


def test_summary_matches_the_store(server: ServerProcess, patients: Patients) -> None:
    patient_id = patients.consenting[0]
    rid = _rid("summary")
    response = httpx.get(
        f"{server.url}/v1/patients/{patient_id}/summary", headers={**server.headers(), "X-Request-ID": rid}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == rid == response.headers["x-request-id"]
    store = open_store(server.settings)
    try:
        patient = json.loads(store.search(patient_id, "Patient")[0])
        allergies = [json.loads(a) for a in store.search(patient_id, "AllergyIntolerance")]
        medications = [json.loads(m) for m in store.search(patient_id, "MedicationRequest")]
    finally:
        store.close()
    summary = body["result"]
    assert summary["demographics"]["id"] == patient_id
    assert summary["demographics"]["name"]["family"] == patient["name"][0]["family"]
    assert summary["demographics"]["birth_date"] == patient["birthDate"]
    active_allergies = [a for a in allergies if a["clinicalStatus"]["coding"][0]["code"] == "active"]
    assert len(summary["allergies"]) == len(active_allergies)
    assert len(summary["medications"]) == len([m for m in medications if m["status"] == "active"])
    assert summary["vital_signs"], "every seeded patient has vital signs"
    [record] = _audit_for(server, rid)
    assert record.event.outcome == "ok" and record.event.allowed is True  # type: ignore[attr-defined]
    assert record.event.patient_id == patient_id and record.event.function == "patient_lookup"  # type: ignore[attr-defined]
    assert record.event.decision_id == body["decision_id"]  # type: ignore[attr-defined]


def test_invoke_over_post(server: ServerProcess, patients: Patients) -> None:
    response = httpx.post(
        f"{server.url}/v1/functions/patient_lookup/invoke",
        json={"patient_id": patients.consenting[1], "purpose": "TREAT", "args": {}},
        headers=server.headers(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["demographics"]["id"] == patients.consenting[1]
    assert response.json()["function"] == "patient_lookup"


def test_function_listing(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/v1/functions", headers=server.headers())
    assert response.status_code == 200
    names = {f["name"]: f for f in response.json()}
    assert names["patient_lookup"]["action"] == "read-summary"
    assert names["patient_lookup"]["digest"].startswith("sha256:")


def test_health_and_docs(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json()["ready"] is True
    assert httpx.get(f"{server.url}/docs").status_code == 200
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    # One invoke operation per function served (its arguments schema in the body), not the template.
    assert "/v1/functions/patient_lookup/invoke" in paths and "/v1/patients/{patient_id}/summary" in paths
    assert "/v1/functions/{name}/invoke" not in paths


def _expired_dev_token(server: ServerProcess) -> str:
    """Signed with the real development key, but expired well beyond the leeway."""
    private_path, _ = ensure_dev_keypair(server.settings.key_dir)
    claims = jwt.decode(server.token("dr-grey", "authorized_medical_staff"), options={"verify_signature": False})
    claims.update(iat=int(time.time()) - 900, nbf=int(time.time()) - 900, exp=int(time.time()) - 300)
    key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "wardfn-dev"})  # type: ignore[arg-type]


def _other_key_token(server: ServerProcess) -> str:
    claims = {
        "sub": "mallory",
        "role": "authorized_medical_staff",
        "iss": server.settings.jwt_issuer,
        "aud": server.settings.jwt_audience,
        "exp": int(time.time()) + 600,
        "iat": int(time.time()),
    }
    return jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA")


@pytest.mark.parametrize(
    ("label", "make_header"),
    [
        ("missing", lambda s: None),
        ("not-bearer", lambda s: "Basic ZHI6cHc="),
        ("garbage", lambda s: "Bearer not.a.jwt"),
        ("expired", lambda s: f"Bearer {_expired_dev_token(s)}"),
        ("forged", lambda s: f"Bearer {_other_key_token(s)}"),
        (
            "wrong-audience",
            lambda s: (
                "Bearer "
                + jwt.encode(
                    {
                        **jwt.decode(
                            s.token("dr-grey", "authorized_medical_staff"), options={"verify_signature": False}
                        ),
                        "aud": "someone-else",
                    },
                    Ed25519PrivateKey.generate(),
                    algorithm="EdDSA",
                )
            ),
        ),
    ],
)
def test_bad_tokens_get_401_and_are_audited_without_the_token(
    server: ServerProcess, patients: Patients, label: str, make_header: object
) -> None:
    header = make_header(server)  # type: ignore[operator]
    rid = _rid(label)
    headers = {"X-Request-ID": rid, **({"Authorization": header} if header else {})}
    response = httpx.get(f"{server.url}/v1/patients/{patients.consenting[0]}/summary", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["request_id"] == rid
    [record] = _audit_for(server, rid)
    assert record.event.outcome == "unauthenticated" and record.event.subject_id is None  # type: ignore[attr-defined]
    if header:
        token = header.split(" ", 1)[1]
        assert token not in json.dumps(record.event.__dict__)  # type: ignore[attr-defined]
        assert token not in response.text


def test_role_without_grant_gets_403_with_reasons(server: ServerProcess, patients: Patients) -> None:
    rid = _rid("nurse")
    response = httpx.get(
        f"{server.url}/v1/patients/{patients.consenting[0]}/summary",
        headers={**server.headers("nurse-joy", "nurse"), "X-Request-ID": rid},
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "policy_denied" and error["reasons"]
    [record] = _audit_for(server, rid)
    assert record.event.allowed is False and record.event.outcome == "policy_denied"  # type: ignore[attr-defined]


def test_patient_refusing_treatment_sharing_gets_403(server: ServerProcess, patients: Patients) -> None:
    response = httpx.get(f"{server.url}/v1/patients/{patients.refusing_treatment}/summary", headers=server.headers())
    assert response.status_code == 403
    assert any("consent" in reason.lower() for reason in response.json()["error"]["reasons"])


def test_unknown_patient_is_404_only_after_the_policy_allowed(server: ServerProcess) -> None:
    rid = _rid("nobody")
    response = httpx.get(
        f"{server.url}/v1/patients/no-such-patient/summary", headers={**server.headers(), "X-Request-ID": rid}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "patient_not_found"
    [record] = _audit_for(server, rid)
    assert record.event.allowed is True and record.event.outcome == "patient_not_found"  # type: ignore[attr-defined]
    denied = httpx.get(f"{server.url}/v1/patients/no-such-patient/summary", headers=server.headers("x", "billing"))
    assert denied.status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/v1/functions/no_such_function/invoke", {"patient_id": "p1"}, 404, "function_not_found"),
        (
            "POST",
            "/v1/functions/patient_lookup/invoke",
            {"patient_id": "p1", "purpose": "GOSSIP"},
            422,
            "invalid_request",
        ),
        ("POST", "/v1/functions/patient_lookup/invoke", {"patient_id": "../etc"}, 422, "invalid_request"),
        ("POST", "/v1/functions/patient_lookup/invoke", {"patient_id": "p1", "extra": 1}, 422, "invalid_request"),
        ("POST", "/v1/functions/patient_lookup/invoke", {"purpose": "TREAT"}, 422, "invalid_request"),
        ("GET", "/v1/patients/p1/summary?purpose=GOSSIP", None, 422, "invalid_request"),
        ("POST", "/v1/functions/patient_lookup/invoke", {"patient_id": "p1", "args": {"x": 1}}, 422, "invalid_request"),
        ("POST", "/v1/functions/hostile/invoke", {"patient_id": "p1", "args": {"mode": 7}}, 422, "invalid_request"),
        ("GET", "/v1/nothing-here", None, 404, "http_error"),
    ],
)
def test_malformed_or_unknown_requests(
    server: ServerProcess, method: str, path: str, body: object, status: int, code: str
) -> None:
    response = httpx.request(method, f"{server.url}{path}", json=body, headers=server.headers())
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["request_id"]


def test_malformed_json_is_400(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/v1/functions/patient_lookup/invoke",
        content=b'{"patient_id": ',
        headers={**server.headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_oversized_body_is_413(server: ServerProcess, patients: Patients) -> None:
    body = {"patient_id": patients.consenting[0], "args": {"pad": "x" * (server.settings.max_request_bytes + 1)}}
    response = httpx.post(f"{server.url}/v1/functions/patient_lookup/invoke", json=body, headers=server.headers())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_oversized_chunked_body_is_413(server: ServerProcess) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 8192

    response = httpx.post(
        f"{server.url}/v1/functions/patient_lookup/invoke",
        content=chunks(),
        headers={**server.headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("loop", 504, "function_timed_out"),
        ("memory", 500, "function_trapped"),
        ("hoard", None, None),  # the memory cap or the deadline, whichever a slow machine meets first
        ("raise", 500, "function_trapped"),
        ("huge", 500, "function_output_rejected"),
        ("garbage", 500, "function_output_rejected"),
        ("no-such-mode", 422, "function_invalid_input"),
    ],
)
def test_hostile_functions_fail_cleanly_and_the_host_keeps_serving(
    server: ServerProcess, patients: Patients, mode: str, status: int | None, code: str | None
) -> None:
    patient_id = patients.consenting[2]
    rid = _rid(mode)
    response = httpx.post(
        f"{server.url}/v1/functions/hostile/invoke",
        json={"patient_id": patient_id, "args": {"mode": mode}},
        headers={**server.headers(), "X-Request-ID": rid},
        timeout=30,
    )
    error = response.json()["error"]
    if status is None:
        assert (response.status_code, error["code"]) in {(500, "function_trapped"), (504, "function_timed_out")}
        code = error["code"]
    else:
        assert response.status_code == status, response.text
        assert error["code"] == code
    assert "Traceback" not in response.text and patient_id not in response.text
    [record] = _audit_for(server, rid)
    assert record.event.outcome == code  # type: ignore[attr-defined]
    assert server.alive()
    after = httpx.get(f"{server.url}/v1/patients/{patient_id}/summary", headers=server.headers())
    assert after.status_code == 200
    assert after.json()["result"]["demographics"]["id"] == patient_id


def test_server_log_carries_no_patient_data(server: ServerProcess, patients: Patients) -> None:
    patient_id = patients.consenting[3]
    response = httpx.get(f"{server.url}/v1/patients/{patient_id}/summary", headers=server.headers())
    assert response.status_code == 200
    family = response.json()["result"]["demographics"]["name"]["family"]
    output = server.output()
    assert '"route": "/v1/patients/{patient_id}/summary"' in output
    assert patient_id not in output and family not in output


# --- what a client author can act on (issue 14) ---------------------------------------------------

INVALID_ARGS = [
    ("clinical_calc", None, {"calculator": "bmi", "weight_kg": -70, "height_cm": 175}, "args.weight_kg", "minimum"),
    ("clinical_calc", None, {"calculator": "egfr", "age": 60, "sex": "female"}, "args.creatinine_mg_dl", "required"),
    ("patient_search", None, {}, "args", "anyOf"),
    ("patient_search", None, {"birth_date": "Jane Doe"}, "args.birth_date", "pattern"),
    ("fhir_export", "patient", {"type": "Jane Doe"}, "args.type", "enum"),
    ("patient_lookup", "patient", {"Jane Doe": 1}, "args", "additionalProperties"),
    ("med_safety", "patient", {"Jane Doe": 1}, "args", "additionalProperties"),
    ("deidentify", "patient", {"Jane Doe": 1}, "args", "additionalProperties"),
]


@pytest.mark.parametrize(("function", "patient", "args", "field", "rule"), INVALID_ARGS)
def test_invalid_arguments_get_422_naming_the_field_and_rule_never_the_value(
    server: ServerProcess, patients: Patients, function: str, patient: str | None, args: object, field: str, rule: str
) -> None:
    body = {"args": args, **({"patient_id": patients.consenting[0]} if patient else {})}
    response = httpx.post(f"{server.url}/v1/functions/{function}/invoke", json=body, headers=server.headers())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["message"].startswith(field)
    assert {"field": field, "rule": rule} in error["fields"]
    assert "Jane" not in response.text and "-70" not in response.text


def test_the_catalogue_publishes_each_functions_arguments_schema(server: ServerProcess) -> None:
    listed = {f["name"]: f for f in httpx.get(f"{server.url}/v1/functions", headers=server.headers()).json()}
    for name in ("clinical_calc", "patient_lookup", "patient_search", "med_safety", "fhir_export", "deidentify"):
        schema = listed[name]["args_schema"]
        assert schema["type"] == "object", name
    assert listed["clinical_calc"]["args_schema"]["properties"]["calculator"]["enum"] == ["bmi", "egfr", "cha2ds2_vasc"]
    openapi = httpx.get(f"{server.url}/openapi.json").json()
    assert openapi["components"]["schemas"]["patient_search_args"]["anyOf"]


@pytest.mark.parametrize(("code", "passed"), [("out_of_range", True), ("too_broad", True), ("made_up", False)])
def test_a_functions_own_reason_reaches_the_caller_only_as_a_listed_code(
    server: ServerProcess, patients: Patients, code: str, passed: bool
) -> None:
    patient_id = patients.consenting[2]
    body = {"patient_id": patient_id, "args": {"mode": "reason", "target": code}}
    response = httpx.post(f"{server.url}/v1/functions/hostile/invoke", json=body, headers=server.headers())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "function_invalid_input"
    assert error.get("reason") == (code if passed else None)
    assert patient_id not in response.text  # the function's free text never passes


def test_a_break_the_glass_answer_says_so(server: ServerProcess, patients: Patients) -> None:
    patient_id = patients.consenting[0]
    glass = httpx.post(
        f"{server.url}/v1/functions/patient_lookup/invoke",
        json={"patient_id": patient_id, "purpose": "ETREAT", "break_glass_reason": "arrest on the ward"},
        headers=server.headers("rn-glass-2", "nurse"),
    )
    assert glass.status_code == 200, glass.text
    assert glass.json()["break_glass"] is True and glass.headers["x-break-glass"] == "true"
    [record] = _audit_for(server, glass.json()["request_id"])
    assert record.event.break_glass is True  # type: ignore[attr-defined]
    usual = httpx.get(f"{server.url}/v1/patients/{patient_id}/summary", headers=server.headers())
    assert usual.json()["break_glass"] is False and usual.headers["x-break-glass"] == "false"


def test_a_method_the_path_does_not_allow_gets_405_with_allow(server: ServerProcess) -> None:
    for method, path, allowed in [
        ("DELETE", "/v1/functions/patient_lookup/invoke", "POST"),
        ("PUT", "/v1/functions", "GET"),
        ("POST", "/healthz", "GET"),
    ]:
        response = httpx.request(method, f"{server.url}{path}", headers=server.headers())
        assert response.status_code == 405, (method, path)
        assert allowed in response.headers["allow"]
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


def test_the_token_leeway_is_stated_and_a_token_past_it_is_refused(server: ServerProcess) -> None:
    status = httpx.get(f"{server.url}/v1/policy", headers=server.headers())
    assert status.status_code == 200
    leeway = status.json()["token_leeway_s"]
    assert leeway == server.settings.jwt_leeway_s == 5
    private_path, _ = ensure_dev_keypair(server.settings.key_dir)
    key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    claims = jwt.decode(server.token("dr-grey", "authorized_medical_staff"), options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 600, nbf=now - 600, exp=now - leeway - 2)
    late = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "wardfn-dev"})  # type: ignore[arg-type]
    response = httpx.get(f"{server.url}/v1/functions", headers={"Authorization": f"Bearer {late}"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
