"""The checkpoint signing key: an Ed25519 key the database does not hold, and its public half for verifying."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from host.config import Settings
from host.errors import ConfigurationError
from host.keys import make_private_dir, write_once


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The checkpoint signing key: WARDFN_AUDIT_CHECKPOINT_KEY_FILE, or in development one made once."""
    path = settings.audit_checkpoint_key_path
    if not settings.audit_checkpoint_key_given and not path.exists():
        if settings.production:  # Settings refuses this already; never make a key in production
            raise ConfigurationError("WARDFN_ENV=production needs WARDFN_AUDIT_CHECKPOINT_KEY_FILE")
        _create_private_key(path)
    return _load_private_key(path)


def load_verification_key(settings: Settings, public_key_file: Path | None = None) -> Ed25519PublicKey | None:
    """The key checkpoints are checked with: `public_key_file` (a public or private PEM), else the
    signing key's public half; None if there is neither (a development host never ran here)."""
    if public_key_file is not None:
        return _load_public_key(public_key_file)
    path = settings.audit_checkpoint_key_path
    if not settings.audit_checkpoint_key_given and not path.exists():
        return None
    return _load_private_key(path).public_key()


def _create_private_key(path: Path) -> None:
    make_private_dir(path.parent)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_once(path, pem)


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"the audit checkpoint key {path} is not a readable unencrypted PEM private key ({type(exc).__name__}): "
            "create one with `openssl genpkey -algorithm ed25519 -out audit-checkpoint.pem`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(
            f"the audit checkpoint key {path} is not an Ed25519 key: make one with openssl genpkey"
        )
    return key


def _load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the checkpoint public key {path}: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        return _load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigurationError(f"{path} is not a PEM public key (make one with `openssl pkey -pubout`)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"{path} is not an Ed25519 public key")
    return key
