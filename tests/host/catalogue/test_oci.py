"""`wardfn package` writes a signed OCI layout; the host loads it only when every digest matches and the
pinned key signed it, and compiles the component itself into its verified artifact cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host.assembly import open_host
from host.attempts import Invocation
from host.catalogue.oci import (
    SIGNATURE_ARTIFACT_TYPE,
    WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE,
    load_public_key,
    public_key_path,
    read_layout,
    write_public_key,
)
from host.config import Settings, load_settings
from host.data.synthetic import seed_store
from host.errors import ArtifactRejected
from host.store.consent import consented
from host.store.resources import open_store
from host.types import Subject
from tests.conftest import FUNCTION_DIRS, TEST_HOME

pytestmark = pytest.mark.components

WARDFN = Path(sys.executable).parent / "wardfn"
PUBLIC_KEY = public_key_path(TEST_HOME / "keys" / "package-signing.pem")


def settings_for(database: Path, **overrides: object) -> Settings:
    """Only packaged functions: no source directories."""
    return load_settings(home=TEST_HOME, database=database, **overrides)


@pytest.fixture(scope="module")
def layout(built_functions: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("oci") / "patient_lookup"
    env = {
        **os.environ,
        "WARDFN_HOME": str(TEST_HOME),
        "WARDFN_FUNCTIONS_DIRS": json.dumps([str(d) for d in FUNCTION_DIRS]),
    }
    done = subprocess.run(
        [str(WARDFN), "package", "patient_lookup", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("sha256:")
    return out


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _function_manifest(layout: Path) -> tuple[str, dict[str, object]]:
    index = json.loads((layout / "index.json").read_text())
    for descriptor in index["manifests"]:
        manifest = json.loads(_blob(layout, descriptor["digest"]).read_bytes())
        if manifest["config"]["mediaType"] == WASM_CONFIG_MEDIA_TYPE:
            return descriptor["digest"], manifest
    raise AssertionError("no function manifest")


def test_layout_is_a_wasm_oci_artifact(layout: Path) -> None:
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    digest, manifest = _function_manifest(layout)
    (layer,) = manifest["layers"]  # type: ignore[misc]
    assert layer["mediaType"] == WASM_LAYER_MEDIA_TYPE
    annotations = manifest["annotations"]
    assert annotations["org.opencontainers.image.title"] == "patient_lookup"  # type: ignore[index]
    assert annotations["org.opencontainers.image.version"] == "0.1.0"  # type: ignore[index]
    assert annotations["io.wardfn.function.digest"] == layer["digest"]  # type: ignore[index]
    assert annotations["io.wardfn.wit.world"] == "wardfn:patient/patient-function@0.1.0"  # type: ignore[index]
    assert _blob(layout, layer["digest"]).read_bytes()[:8] == b"\0asm\x0d\0\x01\0"  # a component, not a .cwasm
    index = json.loads((layout / "index.json").read_text())
    (signature,) = [d for d in index["manifests"] if d.get("artifactType") == SIGNATURE_ARTIFACT_TYPE]
    assert json.loads(_blob(layout, signature["digest"]).read_bytes())["subject"]["digest"] == digest
    package = read_layout(layout, load_public_key(PUBLIC_KEY))
    assert package.manifest.name == "patient_lookup" and package.manifest_digest == digest


def test_host_loads_the_package_compiles_it_and_runs_it(layout: Path, tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path / "wardfn.db", functions_dirs=[], packages_dirs=[layout.parent], package_public_key_file=PUBLIC_KEY
    )
    store = open_store(settings)
    seed_store(store, 5, 7)
    patients = [p["id"] for p in store.list_patients(5)]
    patient = next(p for p in patients if consented([json.loads(c) for c in store.search(p, "Consent")], "TREAT"))
    store.close()
    host = open_host(settings)
    try:
        (loaded,) = host.registry.all()
        assert loaded.name == "patient_lookup"
        assert Path(loaded.artifact.cwasm_path).is_relative_to(settings.artifact_dir)  # compiled by this host
        subject = Subject("dr-oci", "authorized_medical_staff")
        result = host.service.invoke(Invocation("oci-1", subject, "patient_lookup", patient, "TREAT"))
        assert result.body["demographics"]["id"] == patient
    finally:
        host.close()


def _copy(layout: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "layouts" / "patient_lookup"
    shutil.copytree(layout, target)
    return target


def _open(tmp_path: Path, layouts: Path, key: Path = PUBLIC_KEY) -> None:
    settings = settings_for(
        tmp_path / "wardfn.db", functions_dirs=[], packages_dirs=[layouts], package_public_key_file=key
    )
    host = open_host(settings)
    host.close()


def test_a_tampered_wasm_blob_is_refused(layout: Path, tmp_path: Path) -> None:
    copy = _copy(layout, tmp_path)
    _, manifest = _function_manifest(copy)
    wasm = _blob(copy, manifest["layers"][0]["digest"])  # type: ignore[index]
    data = bytearray(wasm.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wasm.write_bytes(bytes(data))
    with pytest.raises(ArtifactRejected, match="does not match its digest"):
        _open(tmp_path, copy.parent)


def test_a_rewritten_manifest_with_fixed_digests_is_refused_by_the_signature(layout: Path, tmp_path: Path) -> None:
    copy = _copy(layout, tmp_path)
    digest, manifest = _function_manifest(copy)
    manifest["annotations"]["org.opencontainers.image.version"] = "9.9.9"  # type: ignore[index]
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    import hashlib

    new_digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    _blob(copy, new_digest).write_bytes(data)
    _blob(copy, digest).unlink()
    index = json.loads((copy / "index.json").read_text())
    for descriptor in index["manifests"]:
        if descriptor["digest"] == digest:
            descriptor.update(digest=new_digest, size=len(data))
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(ArtifactRejected, match="no signature by the pinned key"):
        _open(tmp_path, copy.parent)


def test_a_layout_signed_by_another_key_is_refused(layout: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pub.pem"
    write_public_key(Ed25519PrivateKey.generate(), other)
    with pytest.raises(ArtifactRejected, match="no signature by the pinned key"):
        _open(tmp_path, layout.parent, other)


def test_packages_without_a_pinned_key_are_refused(tmp_path: Path, layout: Path) -> None:
    with pytest.raises(ValueError, match="WARDFN_PACKAGE_PUBLIC_KEY_FILE"):
        settings_for(tmp_path / "wardfn.db", functions_dirs=[], packages_dirs=[layout.parent])


def _drop_signature_from_index(copy: Path) -> str:
    index = json.loads((copy / "index.json").read_text())
    (signature,) = [d for d in index["manifests"] if d.get("artifactType") == SIGNATURE_ARTIFACT_TYPE]
    index["manifests"].remove(signature)
    (copy / "index.json").write_text(json.dumps(index))
    return str(signature["digest"])


def test_a_signature_only_among_the_blobs_still_counts(layout: Path, tmp_path: Path) -> None:
    # As `oras cp -r --to-oci-layout` may leave it: the referrer stored, not indexed.
    copy = _copy(layout, tmp_path)
    _drop_signature_from_index(copy)
    assert read_layout(copy, load_public_key(PUBLIC_KEY)).manifest.name == "patient_lookup"


def test_a_layout_without_its_signature_is_refused(layout: Path, tmp_path: Path) -> None:
    copy = _copy(layout, tmp_path)
    _blob(copy, _drop_signature_from_index(copy)).unlink()
    with pytest.raises(ArtifactRejected, match="no signature by the pinned key"):
        read_layout(copy, load_public_key(PUBLIC_KEY))


def test_oras_reads_the_layout_and_a_copy_still_verifies(layout: Path, tmp_path: Path) -> None:
    """A standard OCI tool sees the function and its signature, and what it copies the host accepts."""
    oras = str(load_settings().tools_dir / "oras")
    reference = f"{layout}:0.1.0"
    fetched = subprocess.run(
        [oras, "manifest", "fetch", "--oci-layout", reference], capture_output=True, text=True, timeout=60
    )
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["layers"][0]["mediaType"] == WASM_LAYER_MEDIA_TYPE
    discovered = subprocess.run(
        [oras, "discover", "--oci-layout", "--format", "json", reference], capture_output=True, text=True, timeout=60
    )
    assert discovered.returncode == 0, discovered.stderr
    assert SIGNATURE_ARTIFACT_TYPE in discovered.stdout
    target = tmp_path / "copied" / "patient_lookup"
    copied = subprocess.run(
        [oras, "cp", "-r", "--from-oci-layout", reference, "--to-oci-layout", f"{target}:0.1.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert copied.returncode == 0, copied.stderr
    assert read_layout(target, load_public_key(PUBLIC_KEY)).manifest.version == "0.1.0"
