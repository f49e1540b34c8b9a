"""Encryption at rest: the key-encryption key, the data keys it wraps, sealed fields and blind indexes.

Envelope encryption. Every patient has a random 256-bit data key; each of their stored
fields is sealed with it (AES-256-GCM, a fresh 96-bit nonce each time, associated data
naming the row so a sealed value cannot be moved to another row). Data keys are stored
only wrapped by the key-encryption key (KEK), which never enters the database. Erasing a
patient destroys their data key (crypto-shredding); rotating the KEK re-wraps data keys
and never touches the data.

The KEK sits behind `KeyProvider`, a two-method interface a KMS can implement later
(wrap and unwrap a data key, with an id that names the KEK). `LocalKek` is the one here:
the 32 bytes from WARDFN_KEK or WARDFN_KEK_FILE, or in development a key generated once
under the key directory. A KEK's id is a keyed hash of a constant: it tells a wrong KEK
from the right one at start-up and reveals nothing about the key.

Blind indexes: search keys are stored as HMAC-SHA256 under a separate random key (itself
wrapped by the KEK), so a lookup matches exactly without the name being stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from host.errors import ConfigurationError
from host.keys import load_or_create_key

if TYPE_CHECKING:
    # Only for annotations: reading the store (a tool, the process-per-call baseline) should not
    # pay for the settings machinery's import (pydantic, about 100 ms).
    from host.config import Settings

# An AES-256 key. host.config checks WARDFN_KEK against the same length (a leaf, it cannot import it).
KEK_BYTES = 32

DATA_KEY_BYTES = 32
NONCE_BYTES = 12
DEV_KEK_FILE = "kek.key"
KEK_ID_CONTEXT = b"wardfn-kek-id-v1"
WRAP_CONTEXT = b"wardfn-data-key-v1\0"


class KeyUnreadable(Exception):
    """A wrapped key or sealed value failed authentication: wrong key, or altered or moved bytes."""


class KeyProvider(Protocol):
    """Wraps and unwraps data keys under one key-encryption key; a KMS can implement this."""

    @property
    def kek_id(self) -> str:
        """A stable, non-secret name of the KEK, different for every KEK."""
        ...

    def wrap(self, data_key: bytes, owner: str) -> bytes:
        """The data key encrypted under the KEK, bound to its owner."""
        ...

    def unwrap(self, wrapped: bytes, owner: str) -> bytes:
        """The data key back; KeyUnreadable if it was not wrapped by this KEK for this owner."""
        ...


class LocalKek:
    """A KEK held in this process's memory (from the environment, a file, or the development key)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEK_BYTES:
            raise ConfigurationError(f"the key-encryption key must be {KEK_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._id = hmac.new(key, KEK_ID_CONTEXT, hashlib.sha256).hexdigest()[:16]

    @property
    def kek_id(self) -> str:
        return self._id

    def wrap(self, data_key: bytes, owner: str) -> bytes:
        return seal(self._aead, data_key, WRAP_CONTEXT + owner.encode())

    def unwrap(self, wrapped: bytes, owner: str) -> bytes:
        return open_sealed(self._aead, wrapped, WRAP_CONTEXT + owner.encode())


def kek_from_settings(settings: Settings) -> LocalKek:
    """The KEK the settings name: WARDFN_KEK, WARDFN_KEK_FILE, or (development only) the generated one."""
    if settings.kek is not None and settings.kek.get_secret_value():
        return LocalKek(base64.b64decode(settings.kek.get_secret_value()))
    if settings.kek_file is not None and str(settings.kek_file) not in ("", "."):
        return LocalKek(read_kek_file(settings.kek_file, "WARDFN_KEK_FILE"))
    if settings.production:
        raise ConfigurationError("WARDFN_ENV=production needs WARDFN_KEK or WARDFN_KEK_FILE")
    return LocalKek(load_or_create_key(settings.key_dir / DEV_KEK_FILE, KEK_BYTES))


def read_kek_file(path: Path, name: str) -> bytes:
    """A KEK file's 32 bytes, raw or base64 text; ConfigurationError naming the setting otherwise."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{name}: cannot read {path} ({exc.strerror})") from None
    if len(content) == KEK_BYTES:
        return content
    try:
        key = base64.b64decode(content.strip(), validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != KEK_BYTES:
        raise ConfigurationError(
            f"{name}: {path} must hold {KEK_BYTES} random bytes, raw or base64 (`openssl rand -base64 32`)"
        )
    return key


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


def seal(aead: AESGCM, plaintext: bytes, associated: bytes) -> bytes:
    """nonce || AES-GCM ciphertext and tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, associated)


def open_sealed(aead: AESGCM, sealed: bytes, associated: bytes) -> bytes:
    """The plaintext of `seal`'s output; KeyUnreadable if the key, the bytes or the row do not match."""
    try:
        return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise KeyUnreadable("authentication failed") from None


class FieldCipher:
    """Seals and opens one owner's fields with their data key."""

    def __init__(self, data_key: bytes) -> None:
        self._aead = AESGCM(data_key)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        return seal(self._aead, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        return open_sealed(self._aead, sealed, associated)


class BlindIndex:
    """Keyed HMAC-SHA256 of normalised search keys: equal keys match, the stored value reveals nothing."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, kind: str, key: str) -> str:
        return hmac.new(self._key, f"{kind}\0{key}".encode(), hashlib.sha256).hexdigest()
