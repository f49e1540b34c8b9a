"""Bearer token verification: a table of tokens that must be refused, and the key sources."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import ValidationError

from host.auth import DEV_PRIVATE_KEY, DEV_PUBLIC_KEY, TokenVerifier, issue_dev_token
from host.config import DEV_ISSUER, Settings, load_settings
from host.errors import AuthenticationError, ConfigurationError
from host.types import Subject

ROLE = "authorized_medical_staff"
PROD_ISSUER = "https://idp.hospital.example/"
# Production settings need a key-encryption key; these tests never open a store with it.
TEST_KEK = base64.b64encode(bytes(range(32))).decode()

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@pytest.fixture
def dev_settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home")


def claims(settings: Settings, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "u-100",
        "role": ROLE,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def dev_private_key(settings: Settings) -> ed25519.Ed25519PrivateKey:
    issue_dev_token(settings, "u-0", ROLE)  # creates the key pair on first use
    key = serialization.load_pem_private_key((settings.key_dir / DEV_PRIVATE_KEY).read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(settings: Settings) -> str:
    """The classic algorithm-confusion forgery: HMAC keyed with the verifier's public key."""
    secret = (settings.key_dir / DEV_PUBLIC_KEY).read_bytes()
    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims(settings)).encode())
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def bearer(token: str) -> str:
    return f"Bearer {token}"


# name -> (build the Authorization header from dev settings, expected message)
REFUSED: dict[str, tuple[Callable[[Settings], str | None], str]] = {
    "expired": (
        lambda s: bearer(jwt.encode(claims(s, iat=1, nbf=1, exp=100), dev_private_key(s), "EdDSA")),
        "token expired",
    ),
    "not yet valid": (
        lambda s: bearer(jwt.encode(claims(s, nbf=int(time.time()) + 3600), dev_private_key(s), "EdDSA")),
        "token not yet valid",
    ),
    "wrong audience": (
        lambda s: bearer(jwt.encode(claims(s, aud="another-service"), dev_private_key(s), "EdDSA")),
        "wrong audience",
    ),
    "wrong issuer": (
        lambda s: bearer(jwt.encode(claims(s, iss="someone-else"), dev_private_key(s), "EdDSA")),
        "wrong issuer",
    ),
    "forged: signed by another Ed25519 key": (
        lambda s: bearer(jwt.encode(claims(s), ed25519.Ed25519PrivateKey.generate(), "EdDSA")),
        "token signature invalid",
    ),
    "alg none": (
        lambda s: bearer(jwt.encode(claims(s), None, algorithm="none")),
        "token algorithm not allowed",
    ),
    "HS256 signed with the public key bytes": (
        lambda s: bearer(hs256_with_public_key(s)),
        "token algorithm not allowed",
    ),
    "RS256 token against the Ed25519 key": (
        lambda s: bearer(jwt.encode(claims(s), rsa.generate_private_key(65537, 2048), "RS256")),
        "token algorithm not allowed",
    ),
    "missing role claim": (
        lambda s: bearer(jwt.encode(claims(s, role=None), dev_private_key(s), "EdDSA")),
        "token missing claim role",
    ),
    "missing exp claim": (
        lambda s: bearer(jwt.encode(claims(s, exp=None), dev_private_key(s), "EdDSA")),
        "token missing claim exp",
    ),
    "empty role": (
        lambda s: bearer(jwt.encode(claims(s, role=""), dev_private_key(s), "EdDSA")),
        "token role",
    ),
    "org_unit not a string": (
        lambda s: bearer(jwt.encode(claims(s, org_unit=["ward-7"]), dev_private_key(s), "EdDSA")),
        "token org_unit",
    ),
    "empty org_unit": (
        lambda s: bearer(jwt.encode(claims(s, org_unit=""), dev_private_key(s), "EdDSA")),
        "token org_unit",
    ),
    "missing header": (lambda s: None, "missing bearer token"),
    "empty header": (lambda s: "", "missing bearer token"),
    "Bearer without a token": (lambda s: "Bearer ", "missing bearer token"),
    "Basic scheme": (lambda s: "Basic dXNlcjpzZWNyZXQ=", "Bearer scheme"),
    "token without a scheme": (lambda s: issue_dev_token(s, "u-1", ROLE), "Bearer scheme"),
    "garbage": (lambda s: "Bearer this-is.not-a.jwt", "token malformed"),
    "oversized": (lambda s: "Bearer " + "a" * 20_000, "too large"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_tokens(dev_settings: Settings, name: str) -> None:
    make_header, message = REFUSED[name]
    verifier = TokenVerifier.from_settings(dev_settings)
    header = make_header(dev_settings)
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(header)
    assert message in str(caught.value)
    token = (header or "").split(" ", 1)[-1].strip()
    if token:
        assert token not in str(caught.value)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_valid_dev_token_is_accepted(dev_settings: Settings, scheme: str) -> None:
    token = issue_dev_token(dev_settings, "u-100", ROLE)
    verifier = TokenVerifier.from_settings(dev_settings)
    assert verifier.verify(f"{scheme} {token}") == Subject(id="u-100", role=ROLE)


def test_the_org_unit_claim_reaches_the_subject(dev_settings: Settings) -> None:
    token = issue_dev_token(dev_settings, "u-8", "nurse", org_unit="ward-7")
    verifier = TokenVerifier.from_settings(dev_settings)
    assert verifier.verify(f"Bearer {token}") == Subject(id="u-8", role="nurse", org_unit="ward-7")


def test_dev_token_claims(dev_settings: Settings) -> None:
    token = issue_dev_token(dev_settings, "u-7", "nurse", ttl_s=60)
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["iss"] == DEV_ISSUER
    assert payload["aud"] == "wardfn"
    assert payload["exp"] - payload["iat"] == 60
    assert payload["nbf"] == payload["iat"]
    assert {"sub", "role", "jti"} <= payload.keys()


def test_dev_key_pair_is_created_once_with_private_modes(dev_settings: Settings) -> None:
    issue_dev_token(dev_settings, "u-1", ROLE)
    key_dir = dev_settings.key_dir
    private, public = key_dir / DEV_PRIVATE_KEY, key_dir / DEV_PUBLIC_KEY
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    first = private.read_bytes(), public.read_bytes()
    TokenVerifier.from_settings(dev_settings)
    issue_dev_token(dev_settings, "u-2", ROLE)
    assert (private.read_bytes(), public.read_bytes()) == first


def test_a_lost_public_key_is_derived_again(dev_settings: Settings) -> None:
    token = issue_dev_token(dev_settings, "u-1", ROLE)
    (dev_settings.key_dir / DEV_PUBLIC_KEY).unlink()
    assert TokenVerifier.from_settings(dev_settings).verify(bearer(token)).id == "u-1"


def test_dev_private_key_readable_by_others_is_refused(dev_settings: Settings) -> None:
    issue_dev_token(dev_settings, "u-1", ROLE)
    (dev_settings.key_dir / DEV_PRIVATE_KEY).chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        issue_dev_token(dev_settings, "u-1", ROLE)


def test_leeway_accepts_a_just_expired_token(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, jwt_leeway_s=30)
    now = int(time.time())
    token = jwt.encode(claims(settings, exp=now - 10), dev_private_key(settings), "EdDSA")
    assert TokenVerifier.from_settings(settings).verify(bearer(token)).id == "u-100"


def test_the_default_leeway_is_a_few_seconds_and_no_more(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    assert settings.jwt_leeway_s == 5
    key, now = dev_private_key(settings), int(time.time())
    verifier = TokenVerifier.from_settings(settings)
    # Well inside the leeway: accepted. Past it (by two seconds, so a slow machine cannot blur it): refused.
    assert verifier.verify(bearer(jwt.encode(claims(settings, exp=now - 2), key, "EdDSA"))).id == "u-100"
    for late in (
        claims(settings, exp=now - settings.jwt_leeway_s - 2),
        claims(settings, nbf=now + settings.jwt_leeway_s + 60, iat=now),
    ):
        with pytest.raises(AuthenticationError):
            verifier.verify(bearer(jwt.encode(late, key, "EdDSA")))


@pytest.mark.parametrize("value", [-1, 301])
def test_the_leeway_is_bounded(tmp_path: Path, value: int) -> None:
    with pytest.raises(ValidationError, match="jwt_leeway_s"):
        load_settings(home=tmp_path, jwt_leeway_s=value)


# --- production -------------------------------------------------------------------------

KEY_TYPES: dict[str, tuple[Callable[[], PrivateKey], str]] = {
    "Ed25519": (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
    "RSA": (lambda: rsa.generate_private_key(65537, 2048), "RS256"),
    "P-256": (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
}


def write_public_key(path: Path, key: PrivateKey) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def production_settings(home: Path, key_file: Path) -> Settings:
    return load_settings(
        env="production",
        home=home,
        jwt_issuer=PROD_ISSUER,
        jwt_public_key_file=key_file,
        kek=TEST_KEK,
        audit_checkpoint_key_file=home / "audit-checkpoint.pem",
    )


@pytest.mark.parametrize("key_type", list(KEY_TYPES))
def test_production_accepts_tokens_signed_by_the_configured_key(tmp_path: Path, key_type: str) -> None:
    generate, algorithm = KEY_TYPES[key_type]
    key = generate()
    settings = production_settings(tmp_path, write_public_key(tmp_path / "idp.pem", key))
    token = jwt.encode(claims(settings), key, algorithm, headers={"kid": "idp-1"})
    assert TokenVerifier.from_settings(settings).verify(bearer(token)) == Subject("u-100", ROLE)


def test_production_refuses_dev_tokens(tmp_path: Path) -> None:
    dev = load_settings(home=tmp_path)
    dev_token = issue_dev_token(dev, "u-1", ROLE)
    key = ed25519.Ed25519PrivateKey.generate()
    prod = production_settings(tmp_path, write_public_key(tmp_path / "idp.pem", key))
    verifier = TokenVerifier.from_settings(prod)
    with pytest.raises(AuthenticationError, match="development tokens") as caught:
        verifier.verify(bearer(dev_token))
    assert dev_token not in str(caught.value)
    # Signed by the dev key but dressed up as the identity provider's: the signature fails.
    disguised = jwt.encode(claims(prod), dev_private_key(dev), "EdDSA")
    with pytest.raises(AuthenticationError, match="signature invalid"):
        verifier.verify(bearer(disguised))


def test_production_refuses_hs256_keyed_with_its_public_key(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    prod = production_settings(tmp_path, write_public_key(tmp_path / "idp.pem", key))
    secret = (tmp_path / "idp.pem").read_bytes()
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims(prod)).encode())
    token = signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(AuthenticationError, match="algorithm not allowed"):
        TokenVerifier.from_settings(prod).verify(bearer(token))


def test_production_refuses_to_issue_dev_tokens(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    prod = production_settings(tmp_path, write_public_key(tmp_path / "idp.pem", key))
    with pytest.raises(ConfigurationError, match="production"):
        issue_dev_token(prod, "u-1", ROLE)
    assert not (tmp_path / "keys" / DEV_PRIVATE_KEY).exists()


def test_production_verifier_needs_a_key(tmp_path: Path) -> None:
    # model_construct skips the settings validator, which refuses this already: the verifier
    # must refuse on its own too.
    unvalidated = Settings.model_construct(env="production", home=tmp_path, jwt_issuer=PROD_ISSUER)
    with pytest.raises(ConfigurationError, match="WARDFN_JWT_PUBLIC_KEY_FILE"):
        TokenVerifier.from_settings(unvalidated)
    assert not (tmp_path / "keys").exists()


def test_production_refuses_a_missing_or_unusable_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        TokenVerifier.from_settings(production_settings(tmp_path, tmp_path / "absent.pem"))
    (tmp_path / "junk.pem").write_text("not a key\n")
    with pytest.raises(ConfigurationError, match="not a PEM public key"):
        TokenVerifier.from_settings(production_settings(tmp_path, tmp_path / "junk.pem"))
    p384 = write_public_key(tmp_path / "p384.pem", ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigurationError, match="P-256"):
        TokenVerifier.from_settings(production_settings(tmp_path, p384))


def test_production_refuses_the_dev_public_key_as_its_key(tmp_path: Path) -> None:
    dev = load_settings(home=tmp_path)
    issue_dev_token(dev, "u-1", ROLE)
    prod = production_settings(tmp_path, dev.key_dir / DEV_PUBLIC_KEY)
    with pytest.raises(ConfigurationError, match="development key"):
        TokenVerifier.from_settings(prod)


# --- JWKS -------------------------------------------------------------------------------


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    key = rsa.generate_private_key(65537, 2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "idp-1", "alg": "RS256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", key
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_jwks_verifier(tmp_path: Path, jwks_server: tuple[str, rsa.RSAPrivateKey]) -> None:
    url, key = jwks_server
    settings = load_settings(
        env="production",
        home=tmp_path,
        jwt_issuer=PROD_ISSUER,
        jwks_url=url,
        kek=TEST_KEK,
        audit_checkpoint_key_file=tmp_path / "audit-checkpoint.pem",
    )
    verifier = TokenVerifier.from_settings(settings)
    good = jwt.encode(claims(settings), key, "RS256", headers={"kid": "idp-1"})
    assert verifier.verify(bearer(good)) == Subject("u-100", ROLE)
    unknown = jwt.encode(claims(settings), key, "RS256", headers={"kid": "rotated-away"})
    with pytest.raises(AuthenticationError, match="unknown key"):
        verifier.verify(bearer(unknown))
    confused = jwt.encode(claims(settings), key, "RS384", headers={"kid": "idp-1"})
    with pytest.raises(AuthenticationError, match="algorithm not allowed"):
        verifier.verify(bearer(confused))


def test_a_verified_token_is_remembered_until_it_expires(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, jwt_leeway_s=0, token_cache_size=16)
    verifier = TokenVerifier.from_settings(settings)
    token = issue_dev_token(settings, "dr-cache", "authorized_medical_staff", ttl_s=1)
    assert verifier.verify(bearer(token)) == Subject("dr-cache", "authorized_medical_staff")
    assert verifier.verify(bearer(token)) == Subject("dr-cache", "authorized_medical_staff")
    time.sleep(2.1)
    with pytest.raises(AuthenticationError, match="token expired"):
        verifier.verify(bearer(token))


def test_the_token_cache_never_accepts_a_token_it_did_not_verify(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, token_cache_size=16)
    verifier = TokenVerifier.from_settings(settings)
    token = issue_dev_token(settings, "dr-cache", "authorized_medical_staff")
    verifier.verify(bearer(token))
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(AuthenticationError):
        verifier.verify(bearer(forged))
