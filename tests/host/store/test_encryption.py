"""Encryption primitives: KEKs and their ids, sealed values bound to their row, blind indexes, KEK sources."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from host.config import load_settings
from host.errors import ConfigurationError
from host.store.encryption import BlindIndex, FieldCipher, KeyUnreadable, LocalKek, kek_from_settings, new_data_key


def test_a_wrapped_data_key_unwraps_only_with_its_kek_and_for_its_owner() -> None:
    kek, other = LocalKek(os.urandom(32)), LocalKek(os.urandom(32))
    data_key = new_data_key()
    wrapped = kek.wrap(data_key, "patient-1")

    assert data_key not in wrapped
    assert kek.unwrap(wrapped, "patient-1") == data_key
    with pytest.raises(KeyUnreadable):
        other.unwrap(wrapped, "patient-1")
    with pytest.raises(KeyUnreadable):
        kek.unwrap(wrapped, "patient-2")  # a key moved to another patient does not unwrap


def test_kek_ids_are_stable_distinct_and_reveal_nothing() -> None:
    key = os.urandom(32)
    assert LocalKek(key).kek_id == LocalKek(key).kek_id
    assert LocalKek(key).kek_id != LocalKek(os.urandom(32)).kek_id
    assert key.hex()[:16] != LocalKek(key).kek_id


def test_a_sealed_value_opens_only_with_the_same_key_and_associated_data() -> None:
    cipher = FieldCipher(new_data_key())
    sealed = cipher.seal(b'{"family":"Okafor"}', b"row-1")

    assert b"Okafor" not in sealed
    assert cipher.seal(b'{"family":"Okafor"}', b"row-1") != sealed  # a fresh nonce each time
    assert cipher.open(sealed, b"row-1") == b'{"family":"Okafor"}'
    with pytest.raises(KeyUnreadable):
        cipher.open(sealed, b"row-2")
    with pytest.raises(KeyUnreadable):
        FieldCipher(new_data_key()).open(sealed, b"row-1")
    with pytest.raises(KeyUnreadable):
        cipher.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"row-1")


def test_blind_indexes_match_exactly_and_depend_on_key_and_kind() -> None:
    index = BlindIndex(os.urandom(32))
    assert index("family", "okafor") == index("family", "okafor")
    assert index("family", "okafor") != index("given", "okafor")
    assert index("family", "okafor") != BlindIndex(os.urandom(32))("family", "okafor")
    assert "okafor" not in index("family", "okafor")


def test_a_kek_must_be_32_bytes() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        LocalKek(b"short")


def test_the_kek_comes_from_the_environment_a_file_or_the_development_key_dir(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert kek_from_settings(load_settings(home=tmp_path, kek=base64.b64encode(key).decode())).kek_id == (
        LocalKek(key).kek_id
    )
    raw, text = tmp_path / "raw.key", tmp_path / "b64.key"
    raw.write_bytes(key)
    text.write_text(base64.b64encode(key).decode() + "\n")
    assert kek_from_settings(load_settings(home=tmp_path, kek_file=raw)).kek_id == LocalKek(key).kek_id
    assert kek_from_settings(load_settings(home=tmp_path, kek_file=text)).kek_id == LocalKek(key).kek_id

    generated = kek_from_settings(load_settings(home=tmp_path / "dev"))
    assert (tmp_path / "dev" / "keys" / "kek.key").stat().st_size == 32
    assert kek_from_settings(load_settings(home=tmp_path / "dev")).kek_id == generated.kek_id  # made once


def test_a_kek_file_that_is_not_a_key_is_refused_naming_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(ConfigurationError, match="WARDFN_KEK_FILE") as refused:
        kek_from_settings(load_settings(home=tmp_path, kek_file=bad))
    assert "not a key" not in str(refused.value)
    with pytest.raises(ConfigurationError, match="WARDFN_KEK_FILE"):
        kek_from_settings(load_settings(home=tmp_path, kek_file=tmp_path / "missing.key"))


def test_the_settings_check_the_kek_length_the_cipher_needs() -> None:
    # host.config, a leaf, keeps its own copy of the length it checks WARDFN_KEK against.
    from host import config
    from host.store import encryption

    assert config.KEK_BYTES == encryption.KEK_BYTES == 32
    with pytest.raises(ConfigurationError):
        encryption.LocalKek(bytes(config.KEK_BYTES - 1))
