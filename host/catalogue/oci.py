"""Functions as OCI artifacts: write a signed OCI image layout, and verify one before it is trusted.

The layout (OCI image-spec 1.1) holds two manifests, both listed in `index.json`:

- the function: config `application/vnd.wasm.config.v0+json` (the CNCF Wasm OCI artifact format,
  plus the function's manifest under `wardfn`), one layer `application/wasm` holding the component,
  annotations naming the function, its version, the component digest and the WIT world;
- its signature, an OCI 1.1 referrer (`subject` = the function manifest) whose one layer is an
  Ed25519 signature over the function manifest's digest string (`sha256:<hex>`).

Both are plain OCI content, so `oras cp --from-oci-layout` or `skopeo copy oci:` push them as they are.

Only the component travels, never a `.cwasm`: the host compiles it itself into its own verified
artifact cache. A layout is accepted only when every blob's digest and size match, the function
manifest is signed by the pinned public key, and the config and layer are the promised ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from host.catalogue.manifest import Manifest
from host.errors import ArtifactRejected, ConfigurationError

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
WASM_CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
WASM_LAYER_MEDIA_TYPE = "application/wasm"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.wardfn.signature.v1+ed25519"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"

ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_REF = "org.opencontainers.image.ref.name"
ANNOTATION_DIGEST = "io.wardfn.function.digest"
ANNOTATION_WORLD = "io.wardfn.wit.world"
ANNOTATION_KEY_ID = "io.wardfn.signature.key-id"

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
MAX_JSON_BLOB = 1 << 20


@dataclass(frozen=True)
class VerifiedPackage:
    """A function read from a layout whose digests and signature all held."""

    manifest: Manifest
    wasm: bytes
    wasm_digest: str
    manifest_digest: str
    world: str
    key_id: str
    # The JSON Schema the manifest's args_schema names, carried in the signed config.
    args_schema: dict[str, Any] | None = None


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name for a public key: sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"sha256:{hashlib.sha256(raw).hexdigest()[:16]}"


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class _Writer:
    def __init__(self, out: Path) -> None:
        self.blobs = out / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def blob(self, media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
        digest = digest_of(data)
        (self.blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}


def write_layout(
    out: Path,
    manifest: Manifest,
    wasm: bytes,
    world: str,
    signing_key: Ed25519PrivateKey,
    created: str,
    args_schema: dict[str, Any] | None = None,
) -> str:
    """Write the function and its signature as an OCI image layout in `out`; return the manifest digest."""
    if out.exists() and any(out.iterdir()):
        raise ConfigurationError(f"{out} is not empty: give --out a new or empty directory")
    writer = _Writer(out)
    layer = writer.blob(WASM_LAYER_MEDIA_TYPE, wasm, annotations={ANNOTATION_TITLE: f"{manifest.name}.wasm"})
    config = {
        "created": created,
        "author": "wardfn",
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer["digest"]],
        "component": {"target": world},
        "wardfn": {"manifest": manifest.model_dump(mode="json"), "args_schema": args_schema},
    }
    annotations = {
        ANNOTATION_TITLE: manifest.name,
        ANNOTATION_VERSION: manifest.version,
        ANNOTATION_DIGEST: layer["digest"],
        ANNOTATION_WORLD: world,
    }
    function_manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": writer.blob(WASM_CONFIG_MEDIA_TYPE, _canonical(config)),
        "layers": [layer],
        "annotations": annotations,
    }
    function_desc = writer.blob(MANIFEST_MEDIA_TYPE, _canonical(function_manifest))
    signature = signing_key.sign(function_desc["digest"].encode())
    signer = key_id(signing_key.public_key())
    signature_manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": SIGNATURE_ARTIFACT_TYPE,
        "config": writer.blob(EMPTY_MEDIA_TYPE, EMPTY_BLOB),
        "layers": [writer.blob(SIGNATURE_ARTIFACT_TYPE, signature, annotations={ANNOTATION_KEY_ID: signer})],
        "subject": {k: function_desc[k] for k in ("mediaType", "digest", "size")},
    }
    signature_desc = writer.blob(
        MANIFEST_MEDIA_TYPE, _canonical(signature_manifest), artifactType=SIGNATURE_ARTIFACT_TYPE
    )
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            {**function_desc, "annotations": {**annotations, ANNOTATION_REF: manifest.version}},
            signature_desc,
        ],
    }
    (out / LAYOUT_FILE).write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return str(function_desc["digest"])


class _Reader:
    """Reads blobs by descriptor, refusing any whose digest or size is not the descriptor's."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def refuse(self, problem: str) -> ArtifactRejected:
        return ArtifactRejected(f"OCI layout {self.root}: {problem}; repackage with `wardfn package`")

    def blob(self, descriptor: Any, limit: int | None = None) -> bytes:
        if not isinstance(descriptor, dict):
            raise self.refuse("a descriptor is not an object")
        digest, size = descriptor.get("digest"), descriptor.get("size")
        if not isinstance(digest, str) or not _DIGEST.match(digest) or not isinstance(size, int):
            raise self.refuse("a descriptor has no valid sha256 digest and size")
        if limit is not None and size > limit:
            raise self.refuse(f"blob {digest} is larger than {limit} bytes")
        path = self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")
        try:
            data = path.read_bytes()
        except OSError:
            raise self.refuse(f"blob {digest} is missing") from None
        if len(data) != size or digest_of(data) != digest:
            raise self.refuse(f"blob {digest} does not match its digest or size (tampered or corrupt)")
        return data

    def json(self, descriptor: Any) -> dict[str, Any]:
        try:
            document = json.loads(self.blob(descriptor, MAX_JSON_BLOB))
        except json.JSONDecodeError:
            raise self.refuse("a manifest or config blob is not JSON") from None
        if not isinstance(document, dict):
            raise self.refuse("a manifest or config blob is not a JSON object")
        return document

    def signature_blobs(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted((self.root / "blobs" / "sha256").iterdir()):
            if path.stat().st_size > MAX_JSON_BLOB:
                continue
            try:
                document = json.loads(path.read_bytes())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(document, dict) and document.get("artifactType") == SIGNATURE_ARTIFACT_TYPE:
                found.append(document)
        return found

    def every_blob_matches_its_name(self) -> None:
        for path in sorted((self.root / "blobs" / "sha256").iterdir()):
            if not path.is_file() or f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}" != f"sha256:{path.name}":
                raise self.refuse(f"blob {path.name} does not match its digest (tampered or corrupt)")


def read_layout(root: Path, public_key: Ed25519PublicKey) -> VerifiedPackage:
    """The function in the layout at `root`, only if every digest matches and the pinned key signed it."""
    reader = _Reader(root)
    try:
        layout = json.loads((root / LAYOUT_FILE).read_text())
        index = json.loads((root / INDEX_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        raise reader.refuse(f"no readable {LAYOUT_FILE} and {INDEX_FILE}") from None
    if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
        raise reader.refuse("not an OCI image layout 1.0.0")
    if not (root / "blobs" / "sha256").is_dir():
        raise reader.refuse("no blobs/sha256 directory")
    reader.every_blob_matches_its_name()
    descriptors = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(descriptors, list):
        raise reader.refuse("index.json lists no manifests")

    functions: list[tuple[dict[str, Any], dict[str, Any]]] = []
    signatures: list[dict[str, Any]] = []
    for descriptor in descriptors:
        document = reader.json(descriptor)
        if document.get("artifactType") == SIGNATURE_ARTIFACT_TYPE:
            signatures.append(document)
        elif (document.get("config") or {}).get("mediaType") == WASM_CONFIG_MEDIA_TYPE:
            functions.append((descriptor, document))
    if len(functions) != 1:
        raise reader.refuse(f"expected exactly one Wasm function manifest, found {len(functions)}")
    descriptor, function_manifest = functions[0]
    manifest_digest = str(descriptor["digest"])

    # Tools that copy referrers into a layout (oras cp -r) may leave them out of index.json:
    # any blob that is a signature manifest counts too (every blob's digest is verified above).
    signatures.extend(reader.signature_blobs())
    signer = _verify_signature(reader, signatures, manifest_digest, public_key)
    config = reader.json(function_manifest["config"])
    layers = function_manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or layers[0].get("mediaType") != WASM_LAYER_MEDIA_TYPE:
        raise reader.refuse(f"the function manifest must have exactly one {WASM_LAYER_MEDIA_TYPE} layer")
    wasm = reader.blob(layers[0])
    wasm_digest = str(layers[0]["digest"])
    annotations = function_manifest.get("annotations") or {}
    if annotations.get(ANNOTATION_DIGEST) != wasm_digest or config.get("layerDigests") != [wasm_digest]:
        raise reader.refuse("the annotated component digest is not the layer's digest")
    try:
        manifest = Manifest.model_validate(config["wardfn"]["manifest"])
    except (KeyError, TypeError, ValidationError):
        raise reader.refuse("the config carries no valid function manifest") from None
    if annotations.get(ANNOTATION_TITLE) != manifest.name or annotations.get(ANNOTATION_VERSION) != manifest.version:
        raise reader.refuse("the annotations name another function or version than the config")
    world = str(annotations.get(ANNOTATION_WORLD, ""))
    args_schema = config["wardfn"].get("args_schema")
    if manifest.args_schema is not None and not isinstance(args_schema, dict):
        raise reader.refuse("the manifest names an args_schema the config does not carry")
    return VerifiedPackage(manifest, wasm, wasm_digest, manifest_digest, world, signer, args_schema)


def _verify_signature(
    reader: _Reader, signatures: list[dict[str, Any]], manifest_digest: str, public_key: Ed25519PublicKey
) -> str:
    wanted = key_id(public_key)
    for document in signatures:
        subject = document.get("subject") or {}
        layers = document.get("layers") or []
        if subject.get("digest") != manifest_digest or len(layers) != 1:
            continue
        try:
            public_key.verify(reader.blob(layers[0], 1024), manifest_digest.encode())
        except InvalidSignature:
            continue
        return wanted
    raise reader.refuse(f"no signature by the pinned key {wanted} over {manifest_digest}")


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The pinned Ed25519 public key (PEM)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"WARDFN_PACKAGE_PUBLIC_KEY_FILE {path}: not a readable PEM public key ({type(exc).__name__})"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"WARDFN_PACKAGE_PUBLIC_KEY_FILE {path}: not an Ed25519 public key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 signing key (PEM, unencrypted PKCS#8)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"{path}: not a readable unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path}: not an Ed25519 private key")
    return key


def development_signing_key(path: Path) -> Ed25519PrivateKey:
    """The development signing key at `path`, created (mode 0600) with its `.pub` beside it if missing."""
    if path.exists():
        return load_private_key(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    write_public_key(key, public_key_path(path))
    return key


def public_key_path(private_key_path: Path) -> Path:
    return private_key_path.with_name(private_key_path.stem + ".pub.pem")


def write_public_key(key: Ed25519PrivateKey, path: Path) -> None:
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path.write_bytes(pem)
