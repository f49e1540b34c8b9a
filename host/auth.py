"""Bearer tokens: a development issuer and the verifier that turns a token into a `Subject`.

Development signs with an Ed25519 key pair kept under `settings.key_dir`. Production verifies
only with the identity provider's key (a PEM file or a JWKS URL) and refuses development
tokens outright. Error messages are short and never contain the token.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from host.config import DEV_ISSUER, Settings
from host.errors import AuthenticationError, ConfigurationError, InvalidRequest
from host.keys import write_once
from host.types import Subject

DEV_PRIVATE_KEY = "jwt_dev_private.pem"
DEV_PUBLIC_KEY = "jwt_dev_public.pem"
DEV_KID_PREFIX = "wardfn-dev"
REQUIRED_CLAIMS = ["sub", "role", "exp", "iss", "aud"]
# The only algorithms ever accepted, one per key type. Never "none", never HMAC: an HS256
# token "signed" with our public key as the secret must not verify.
ALGORITHM_FOR_KEY: dict[type[Any], str] = {
    ed25519.Ed25519PublicKey: "EdDSA",
    rsa.RSAPublicKey: "RS256",
    ec.EllipticCurvePublicKey: "ES256",
}
ALLOWED_ALGORITHMS = frozenset(ALGORITHM_FOR_KEY.values())
# Far above any real JWT; refusing early keeps a hostile header from costing CPU.
MAX_TOKEN_CHARS = 16 * 1024

VerificationKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
KeyResolver = Callable[[str], tuple[Any, str]]


def issue_dev_token(
    settings: Settings, subject_id: str, role: str, ttl_s: int = 3600, org_unit: str | None = None
) -> str:
    """Sign a development token (EdDSA) for `subject_id` acting as `role` (for `org_unit`, if given)."""
    if settings.production:
        raise ConfigurationError(
            "development tokens cannot be issued when WARDFN_ENV=production: get a token from your identity provider"
        )
    if not subject_id or not role:
        raise InvalidRequest("a development token needs a non-empty subject id and role")
    if ttl_s <= 0:
        raise InvalidRequest("the token lifetime (ttl_s) must be a positive number of seconds")
    private_key = _load_dev_private_key(ensure_dev_keypair(settings.key_dir)[0])
    now = int(time.time())
    claims = {
        "sub": subject_id,
        "role": role,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
        **({"org_unit": org_unit} if org_unit else {}),
    }
    return jwt.encode(claims, private_key, algorithm="EdDSA", headers={"kid": DEV_KID_PREFIX})


class TokenVerifier:
    """Verifies `Authorization: Bearer <jwt>` headers against one trusted key source."""

    def __init__(
        self,
        resolve_key: KeyResolver,
        issuer: str,
        audience: str,
        leeway_s: int,
        refuse_dev_tokens: bool,
        cache_size: int = 0,
    ) -> None:
        """Prefer `from_settings`. `resolve_key(token)` returns (key, algorithm) for a token."""
        # token -> (subject, the time after which it is expired, leeway included). A token's
        # claims and signature never change, so one that verified stays valid until then.
        self._verified: dict[str, tuple[Subject, float]] = {}
        self._cache_size = cache_size
        self._resolve_key = resolve_key
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._refuse_dev_tokens = refuse_dev_tokens

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """The development key in development; only the configured key source in production.

        In development the PEM file and JWKS settings are ignored: tokens come from
        `issue_dev_token`.
        """
        if settings.production and settings.jwt_issuer == DEV_ISSUER:
            raise ConfigurationError(
                f"WARDFN_JWT_ISSUER is still the development issuer {DEV_ISSUER!r}: "
                "set it to your identity provider's issuer"
            )
        resolve: KeyResolver
        if not settings.production:
            key = _load_public_key(ensure_dev_keypair(settings.key_dir)[1], "the development key")
            resolve = _fixed_key(key)
        elif settings.jwt_public_key_file is not None:
            path = settings.jwt_public_key_file
            if _same_file(path, settings.key_dir / DEV_PUBLIC_KEY):
                raise ConfigurationError(
                    "WARDFN_JWT_PUBLIC_KEY_FILE points at the development key: "
                    "set it to your identity provider's public key"
                )
            resolve = _fixed_key(_load_public_key(path, "WARDFN_JWT_PUBLIC_KEY_FILE"))
        elif settings.jwks_url is not None:
            resolve = _jwks_keys(jwt.PyJWKClient(settings.jwks_url, cache_keys=True))
        else:
            raise ConfigurationError("WARDFN_ENV=production needs WARDFN_JWT_PUBLIC_KEY_FILE or WARDFN_JWKS_URL")
        return cls(
            resolve,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_s=settings.jwt_leeway_s,
            refuse_dev_tokens=settings.production,
            cache_size=settings.token_cache_size,
        )

    def verify(self, authorization_header: str | None) -> Subject:
        """The subject of a valid bearer token; `AuthenticationError` otherwise."""
        token = _bearer_token(authorization_header)
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() <= cached[1]:
                return cached[0]
            self._verified.pop(token, None)  # expired: verified again below, and refused
        try:
            header = jwt.get_unverified_header(token)
            if self._refuse_dev_tokens and _looks_like_dev_token(token, header):
                raise AuthenticationError("development tokens are not accepted in production")
            algorithm = header.get("alg")
            if algorithm not in ALLOWED_ALGORITHMS:
                raise AuthenticationError("token algorithm not allowed")
            key, key_algorithm = self._resolve_key(token)
            if algorithm != key_algorithm:
                # e.g. an RS256 header on an Ed25519 key: refuse, do not let the token pick.
                raise AuthenticationError("token algorithm not allowed")
            claims = jwt.decode(
                token,
                key,
                algorithms=[key_algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError(_describe(exc)) from exc
        subject_id, role = claims.get("sub"), claims.get("role")
        if not isinstance(subject_id, str) or not subject_id:
            raise AuthenticationError("token subject (sub) is not a non-empty string")
        if not isinstance(role, str) or not role:
            raise AuthenticationError("token role is not a non-empty string")
        # Optional: more roles than the one in `role`, as a list of strings.
        extra = claims.get("roles", [])
        if not isinstance(extra, list) or not all(isinstance(r, str) and r for r in extra):
            raise AuthenticationError("token roles is not a list of non-empty strings")
        # Optional: the organisation unit (ward, department) the subject acts for, for the audit trail.
        org_unit = claims.get("org_unit")
        if org_unit is not None and (not isinstance(org_unit, str) or not org_unit or len(org_unit) > 200):
            raise AuthenticationError("token org_unit is not a non-empty string of at most 200 characters")
        subject = Subject(id=subject_id, role=role, roles=tuple(extra), org_unit=org_unit)
        if self._cache_size > 0 and isinstance(claims.get("exp"), int | float):
            if len(self._verified) >= self._cache_size:
                self._verified.clear()  # simple and bounded; the next requests re-verify once
            self._verified[token] = (subject, float(claims["exp"]) + self._leeway_s)
        return subject


def ensure_dev_keypair(key_dir: Path) -> tuple[Path, Path]:
    """Create the development Ed25519 key pair once; return (private, public) paths."""
    private_path, public_path = key_dir / DEV_PRIVATE_KEY, key_dir / DEV_PUBLIC_KEY
    try:
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(key_dir, 0o700)  # mkdir's mode is masked by the umask
        if not private_path.exists():
            _create_private_key(private_path)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the development key pair in {key_dir} ({exc.strerror}): "
            "set WARDFN_HOME to a directory you own"
        ) from exc
    private_key = _load_dev_private_key(private_path)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The private key is the truth: the public file is (re)derived from it, so two processes
    # racing to create the pair can never leave a public key that does not match.
    if not public_path.exists() or public_path.read_bytes() != public_pem:
        _write_atomically(public_path, public_pem, 0o644)
    return private_path, public_path


def _create_private_key(path: Path) -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_once(path, pem)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def _load_dev_private_key(path: Path) -> ed25519.Ed25519PrivateKey:
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"{path} is readable by other users: run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read the development key {path}: delete it and it will be created again"
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigurationError(f"{path} is not an Ed25519 key: delete it to create a new one")
    return key


def _load_public_key(path: Path, what: str) -> VerificationKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} at {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"{what} at {path} is not a PEM public key") from exc
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError(f"{what} at {path} is an EC key on {key.curve.name}; use P-256 (ES256)")
    if not isinstance(key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ConfigurationError(f"{what} at {path} must be an Ed25519, RSA or P-256 public key")
    return key


def _algorithm_for(key: VerificationKey) -> str:
    for key_type, algorithm in ALGORITHM_FOR_KEY.items():
        if isinstance(key, key_type):
            return algorithm
    raise ConfigurationError("unsupported public key type")  # _load_public_key prevents this


def _fixed_key(key: VerificationKey) -> KeyResolver:
    algorithm = _algorithm_for(key)
    return lambda _token: (key, algorithm)


def _jwks_keys(client: jwt.PyJWKClient) -> KeyResolver:
    def resolve(token: str) -> tuple[Any, str]:
        try:
            signing_key = client.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthenticationError("cannot fetch the identity provider's signing keys; try again later") from exc
        except jwt.PyJWKClientError as exc:
            raise AuthenticationError("token signed by an unknown key") from exc
        algorithm = signing_key.algorithm_name
        if algorithm not in ALLOWED_ALGORITHMS:
            raise AuthenticationError("token algorithm not allowed")
        return signing_key.key, algorithm

    return resolve


def _bearer_token(authorization_header: str | None) -> str:
    if not authorization_header or not authorization_header.strip():
        raise AuthenticationError("missing bearer token")
    if len(authorization_header) > MAX_TOKEN_CHARS:
        raise AuthenticationError("authorization header too large")
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    # RFC 7235: the scheme name is case-insensitive.
    if scheme.lower() != "bearer":
        raise AuthenticationError("authorization must use the Bearer scheme")
    if not token or " " in token:
        raise AuthenticationError("missing bearer token")
    return token


def _looks_like_dev_token(token: str, header: dict[str, Any]) -> bool:
    kid = header.get("kid")
    if isinstance(kid, str) and kid.startswith(DEV_KID_PREFIX):
        return True
    unverified = jwt.decode(token, options={"verify_signature": False})
    return bool(unverified.get("iss") == DEV_ISSUER)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _describe(exc: jwt.PyJWTError) -> str:
    """A short message for the caller; PyJWT's own messages never include the token either."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "token signature invalid"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token missing claim {exc.claim}"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "token algorithm not allowed"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "token issued-at (iat) invalid"
    if isinstance(exc, jwt.exceptions.InvalidSubjectError):
        return "token subject (sub) invalid"
    if isinstance(exc, jwt.DecodeError):
        return "token malformed"
    return "token invalid"
