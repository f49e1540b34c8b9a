"""The artifact cache: what it stores comes back, and anything it did not sign is refused."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from host.catalogue import artifacts
from host.catalogue.artifacts import KEY_FILE, WITNESS_SUFFIX, Artifact, ArtifactCache
from host.errors import ArtifactRejected, ConfigurationError

NAME = "demo"
VERSION = "1.2.3"
KEY = "a" * 64
OTHER_KEY = "b" * 64
WASM = b"\0asm fake component"
CWASM = b"fake native code for this engine"


@pytest.fixture
def cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache", tmp_path / "keys")


def stored(cache: ArtifactCache, name: str = NAME, key: str = KEY) -> Artifact:
    return cache.store(name, VERSION, key, WASM, CWASM)


def record_path(artifact: Artifact) -> Path:
    return artifact.cwasm_path.with_suffix(".json")


def test_store_then_lookup_round_trips(cache: ArtifactCache) -> None:
    written = stored(cache)

    found = cache.lookup(NAME, KEY)

    assert found == written
    assert found.version == VERSION
    assert found.cwasm_path.read_bytes() == CWASM
    assert found.wasm_path.read_bytes() == WASM
    assert found.cwasm_sha256 == hashlib.sha256(CWASM).hexdigest()
    assert found.wasm_sha256 == hashlib.sha256(WASM).hexdigest()


def test_a_second_cache_on_the_same_directories_reads_what_the_first_stored(tmp_path: Path) -> None:
    written = stored(ArtifactCache(tmp_path / "cache", tmp_path / "keys"))

    assert ArtifactCache(tmp_path / "cache", tmp_path / "keys").lookup(NAME, KEY) == written


def test_lookup_of_an_unknown_key_is_none(cache: ArtifactCache) -> None:
    assert cache.lookup(NAME, KEY) is None
    stored(cache)
    assert cache.lookup(NAME, OTHER_KEY) is None
    assert cache.lookup("other", KEY) is None


def test_a_cwasm_changed_after_store_is_refused(cache: ArtifactCache) -> None:
    artifact = stored(cache)
    artifact.cwasm_path.write_bytes(CWASM[:-1] + b"!")

    with pytest.raises(ArtifactRejected, match=rf"digest does not match.*`wardfn build {NAME}`"):
        cache.lookup(NAME, KEY)


def test_a_missing_cwasm_is_refused(cache: ArtifactCache) -> None:
    stored(cache).cwasm_path.unlink()

    with pytest.raises(ArtifactRejected, match=rf"`wardfn build {NAME}`"):
        cache.lookup(NAME, KEY)


def test_a_swapped_cwasm_with_its_digest_edited_into_the_record_is_refused(cache: ArtifactCache) -> None:
    artifact = stored(cache)
    evil = b"someone else's native code"
    artifact.cwasm_path.write_bytes(evil)
    path = record_path(artifact)
    record = json.loads(path.read_bytes())
    record["artifact"]["cwasm_sha256"] = hashlib.sha256(evil).hexdigest()
    path.write_text(json.dumps(record))

    with pytest.raises(ArtifactRejected, match=rf"signature does not match.*`wardfn build {NAME}`"):
        cache.lookup(NAME, KEY)


def test_a_record_whose_hmac_was_edited_is_refused(cache: ArtifactCache) -> None:
    path = record_path(stored(cache))
    record = json.loads(path.read_bytes())
    signature = record["hmac"]
    record["hmac"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    path.write_text(json.dumps(record))

    with pytest.raises(ArtifactRejected, match="signature does not match"):
        cache.lookup(NAME, KEY)


@pytest.mark.parametrize("garbage", [b"{not json", b"[]", b"\xff"], ids=["not-json", "not-an-object", "not-utf8"])
def test_a_garbled_record_is_refused(cache: ArtifactCache, garbage: bytes) -> None:
    record_path(stored(cache)).write_bytes(garbage)

    with pytest.raises(ArtifactRejected, match=rf"`wardfn build {NAME}`"):
        cache.lookup(NAME, KEY)


def test_a_record_signed_with_another_caches_key_is_refused(tmp_path: Path) -> None:
    stored(ArtifactCache(tmp_path / "cache", tmp_path / "other-keys"))
    mine = ArtifactCache(tmp_path / "cache", tmp_path / "keys")

    with pytest.raises(ArtifactRejected, match="signature does not match"):
        mine.lookup(NAME, KEY)


def test_a_record_for_another_key_is_refused(cache: ArtifactCache) -> None:
    source = record_path(stored(cache, key=OTHER_KEY))
    target = record_path(stored(cache, key=KEY))
    shutil.copyfile(source, target)

    with pytest.raises(ArtifactRejected, match=rf"describes another build.*`wardfn build {NAME}`"):
        cache.lookup(NAME, KEY)


def test_a_key_sharing_the_file_name_prefix_is_not_served_anothers_build(cache: ArtifactCache) -> None:
    # File names keep only the first 32 hex digits of the key; the record holds all of it.
    stored(cache, key="c" * 32 + "0" * 32)

    with pytest.raises(ArtifactRejected, match="describes another build"):
        cache.lookup(NAME, "c" * 32 + "1" * 32)


def test_a_record_for_another_name_is_refused(cache: ArtifactCache) -> None:
    source = record_path(stored(cache, name="other"))
    target = record_path(stored(cache, name=NAME))
    shutil.copyfile(source, target)

    with pytest.raises(ArtifactRejected, match="describes another build"):
        cache.lookup(NAME, KEY)


def test_a_cache_directory_others_can_write_is_refused_on_lookup(cache: ArtifactCache) -> None:
    stored(cache)
    cache.directory.chmod(0o777)

    with pytest.raises(ConfigurationError, match=re.escape(f"chmod 700 {cache.directory}")):
        cache.lookup(NAME, KEY)


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_cache_directory_others_can_write_is_refused_on_store(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    directory.chmod(mode)
    cache = ArtifactCache(directory, tmp_path / "keys")

    with pytest.raises(ConfigurationError, match="chmod 700"):
        stored(cache)
    assert list(directory.iterdir()) == []


def test_a_key_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    key_dir.chmod(0o777)

    with pytest.raises(ConfigurationError, match="chmod 700"):
        ArtifactCache(tmp_path / "cache", key_dir)


def test_the_hmac_key_is_private_and_reused(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / KEY_FILE
    ArtifactCache(tmp_path / "cache", tmp_path / "keys")
    first = key_file.read_bytes()

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert len(first) == 32

    ArtifactCache(tmp_path / "cache", tmp_path / "keys")
    assert key_file.read_bytes() == first


def test_the_cache_files_are_private(cache: ArtifactCache) -> None:
    artifact = stored(cache)

    assert stat.S_IMODE(cache.directory.stat().st_mode) == 0o700
    for path in (artifact.wasm_path, artifact.cwasm_path, record_path(artifact)):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


@pytest.mark.parametrize("content", [b"", b"short"], ids=["empty", "truncated"])
def test_a_key_file_that_is_not_a_whole_key_is_refused(tmp_path: Path, content: bytes) -> None:
    key_file = tmp_path / "keys" / KEY_FILE
    key_file.parent.mkdir(mode=0o700)
    key_file.write_bytes(content)
    with pytest.raises(ConfigurationError, match="32-byte key"):
        ArtifactCache(tmp_path / "cache", tmp_path / "keys")


# The witness: a file hashed once is trusted while its identity (inode, size, times) is unchanged.


def counting_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    hashed: list[Path] = []
    real = artifacts.sha256_file

    def counted(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(artifacts, "sha256_file", counted)
    return hashed


def rewrite_keeping_size_and_times(path: Path, content: bytes) -> None:
    before = path.stat()
    assert len(content) == before.st_size
    with path.open("r+b") as f:  # in place: same inode
        f.write(content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns


def test_a_cwasm_hashed_once_is_not_hashed_again_while_unchanged(
    cache: ArtifactCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts, "RACY_S", -1.0)  # the file was just written: trust it at once
    artifact = stored(cache)
    hashed = counting_hashes(monkeypatch)

    assert cache.lookup(NAME, KEY) == artifact
    assert ArtifactCache(cache.directory, artifact.cwasm_path.parent.parent / "keys").lookup(NAME, KEY) == artifact

    assert hashed == [artifact.cwasm_path]
    assert artifact.cwasm_path.with_suffix(WITNESS_SUFFIX).stat().st_mode & 0o077 == 0


def test_a_cwasm_rewritten_in_place_with_its_times_put_back_is_hashed_again_and_refused(
    cache: ArtifactCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts, "RACY_S", -1.0)
    artifact = stored(cache)
    cache.lookup(NAME, KEY)  # hashed, witnessed
    hashed = counting_hashes(monkeypatch)

    rewrite_keeping_size_and_times(artifact.cwasm_path, CWASM[:-1] + b"!")

    with pytest.raises(ArtifactRejected, match="digest does not match"):
        cache.lookup(NAME, KEY)
    assert hashed == [artifact.cwasm_path]  # the ctime moved: the witness no longer held


def test_a_witness_signed_with_another_key_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "RACY_S", -1.0)
    cache = ArtifactCache(tmp_path / "cache", tmp_path / "keys")
    artifact = stored(cache)
    rewrite_keeping_size_and_times(artifact.cwasm_path, CWASM[:-1] + b"!")
    # An attacker's witness for the tampered file, claiming the recorded digest, under their own key.
    forger = ArtifactCache(tmp_path / "forged", tmp_path / "other-keys")
    forged = forger._sign({"cwasm_sha256": artifact.cwasm_sha256, "identity": artifacts._identity(artifact.cwasm_path)})
    artifact.cwasm_path.with_suffix(WITNESS_SUFFIX).write_text(json.dumps({"hmac": forged}))

    with pytest.raises(ArtifactRejected, match="digest does not match"):
        cache.lookup(NAME, KEY)


def test_a_cwasm_changed_moments_before_it_was_hashed_gets_no_witness(cache: ArtifactCache) -> None:
    artifact = stored(cache)  # written just now: a second write in the same clock tick could go unseen

    assert cache.lookup(NAME, KEY) == artifact

    assert not artifact.cwasm_path.with_suffix(WITNESS_SUFFIX).exists()
