"""Build wardfn's container images here, without a registry, a daemon or a base image (`make images`).

Each image is an OCI image layout (index.json, blobs/sha256/...) assembled by this script:

- host: Debian bookworm's python3.11 and the shared libraries it needs, unpacked by mmdebstrap's
  `extract` variant (no maintainer scripts run, no shell, no dpkg, no other executable kept), then
  the project's wheel and its pinned dependencies (requirements.txt, by hash) installed by pip, and
  a non-root user (10001). Entrypoint /opt/wardfn/bin/wardfn, a Python script run by the kernel.
- opa: OPA's static binary (CGO off, -trimpath, no build id), alone, run as 10001.
- function-packages (with --packages DIR): the host image plus one layer of signed package layouts
  under /packages; the init container copies them into the pod with the host image's Python.

Reproducible: every layer is a tar with sorted entries, one fixed timestamp (SOURCE_DATE_EPOCH),
owner root unless stated, gzip with no name and mtime 0; the config's dates are that timestamp.
So the same inputs give the same digests, and `--check` compares them with runtimeclass/images.lock.
The inputs are pinned: wheels by hash, Go by module version; Debian's packages are whatever
bookworm serves, and their versions are recorded in the lock, so a digest that moved says which.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "runtimeclass" / "images.lock"
# The prod overlay names the locked images by digest too, so a render by hand (kustomize build) pins them.
PROD_OVERLAY = ROOT / "runtimeclass" / "overlays" / "prod" / "kustomization.yaml"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1764633600"))  # 2025-12-02T00:00:00Z
CREATED = "2025-12-02T00:00:00Z" if EPOCH == 1764633600 else None
SUITE = "bookworm"
# python3.11 and what it links, what the wheels' native code links (regopy: libstdc++, libatomic), and
# the CA certificates (the bundle is made below: no postinst runs).
DEBIAN_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libatomic1", "ca-certificates")
PYTHON = "/usr/bin/python3.11"
UID = 10001
# Kept from the Debian tree: libraries, Python's standard library, the certificates; not every other
# executable, documentation or package-manager state (the image runs one program and installs nothing).
DROP_PREFIXES = (
    "dev/",
    "bin/",
    "sbin/",
    "usr/sbin/",
    "usr/libexec/",
    "usr/games/",
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/locale/",
    "usr/share/lintian/",
    "usr/share/bug/",
    "usr/share/bash-completion/",
    "usr/share/perl5/",
    "usr/share/dpkg/",
    "usr/share/debconf/",
    "usr/share/polkit-1/",
    "usr/share/pixmaps/",
    "var/cache/",
    "var/lib/apt/",
    "var/lib/dpkg/",
    "var/log/",
    "etc/apt/",
    "lib/systemd/",
    "usr/lib/mime/",
)
KEEP_BINARIES = {"usr/bin/python3.11"}
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Entry:
    """One file, directory or symlink of a layer."""

    name: str  # relative, no leading ./ or /
    kind: bytes  # tarfile.REGTYPE, DIRTYPE or SYMTYPE
    mode: int
    data: bytes = b""
    target: str = ""
    uid: int = 0


def file(name: str, data: bytes, mode: int = 0o644, uid: int = 0) -> Entry:
    return Entry(name, tarfile.REGTYPE, mode, data=data, uid=uid)


def directory(name: str, mode: int = 0o755, uid: int = 0) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode, uid=uid)


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """The entries plus every parent directory none of them names, sorted by name."""
    named = {e.name: e for e in entries}
    for name in list(named):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            named.setdefault("/".join(parts[:i]), directory("/".join(parts[:i])))
    return [named[n] for n in sorted(named)]


def layer(entries: Iterable[Entry]) -> tuple[bytes, str]:
    """A gzipped tar of `entries` (sorted, one timestamp) and its diff id (the uncompressed digest)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in with_parents(entries):
            info = tarfile.TarInfo(e.name + ("/" if e.kind == tarfile.DIRTYPE else ""))
            info.type, info.mode, info.mtime = e.kind, e.mode, EPOCH
            info.uid = info.gid = e.uid
            info.uname = info.gname = ""
            if e.kind == tarfile.SYMTYPE:
                info.linkname = e.target
                tar.addfile(info)
            elif e.kind == tarfile.REGTYPE:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    data = raw.getvalue()
    return gzip.compress(data, compresslevel=6, mtime=0), "sha256:" + hashlib.sha256(data).hexdigest()


def _run(command: list[str], **kwargs: object) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        sys.exit(f"{Path(command[0]).name} failed ({done.returncode}): {(done.stderr or done.stdout)[-3000:]}")
    return str(done.stdout)


# --- the host image ------------------------------------------------------------------------------


def debian_tree(work: Path) -> tuple[list[Entry], list[str]]:
    """Debian's python3.11 and its libraries, unpacked by mmdebstrap; and the .deb files it used."""
    tar_path, debs = work / "debian.tar", work / "debs.txt"
    hook = f'find "$1/var/cache/apt/archives" -name "*.deb" -printf "%f\\n" | sort > {debs}'
    _run(
        ["mmdebstrap", "--variant=extract", "--quiet", f"--include={','.join(DEBIAN_PACKAGES)}",
         "--skip=cleanup/apt/cache", f"--extract-hook={hook}", SUITE, str(tar_path)],
        env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)},
    )  # fmt: skip
    entries: list[Entry] = []
    certificates: list[tuple[str, bytes]] = []
    with tarfile.open(tar_path) as tar:
        for member in tar:
            name = member.name.removeprefix("./").rstrip("/")
            if not name or (name.startswith(DROP_PREFIXES) or name + "/" in DROP_PREFIXES):
                continue
            if name.startswith("usr/bin/") and name not in KEEP_BINARIES:
                continue
            if member.isdir():
                entries.append(directory(name, member.mode))
            elif member.issym():
                entries.append(Entry(name, tarfile.SYMTYPE, 0o777, target=member.linkname))
            elif member.isreg():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                entries.append(file(name, data, member.mode))
                if name.startswith("usr/share/ca-certificates/") and name.endswith(".crt"):
                    certificates.append((name, data))
            elif member.islnk():
                target = member.linkname.removeprefix("./")
                entries.append(file(name, next(e.data for e in entries if e.name == target), member.mode))
    # What update-ca-certificates would have written: every certificate, in name order.
    bundle = b"".join(data if data.endswith(b"\n") else data + b"\n" for _, data in sorted(certificates))
    entries.append(file("etc/ssl/certs/ca-certificates.crt", bundle))
    return entries, debs.read_text().split()


def python_tree(work: Path, wheels: Path) -> list[Entry]:
    """The project's wheel and its pinned dependencies, installed under /opt/wardfn/site."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "download", "--only-binary=:all:", "--no-deps", "--require-hashes", "-r", str(REQUIREMENTS),
          "-d", str(wheels)])  # fmt: skip
    project = work / "project"
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source = work / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "host", source / "host", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    constraints = Path(__file__).with_name("build-constraints.txt")
    _run([*pip, "wheel", "--no-deps", "-w", str(project), str(source)],
         env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "PIP_CONSTRAINT": str(constraints)})  # fmt: skip
    site = work / "site"
    names = sorted(str(p) for p in wheels.glob("*.whl") if _pinned(p.name))
    _run([*pip, "install", "--no-index", "--no-deps", "--no-compile", "--target", str(site),
          *names, *map(str, project.glob("wardfn-*.whl"))])  # fmt: skip
    entries = []
    for path in sorted(site.rglob("*")):
        rel = path.relative_to(site).as_posix()
        # pip's console scripts name this build's interpreter; where a wheel came from is no part of it.
        if rel.startswith("bin/") or rel == "bin" or rel.endswith(".dist-info/direct_url.json"):
            continue
        if "__pycache__" in rel.split("/"):
            continue
        target = f"opt/wardfn/site/{rel}"
        if path.is_symlink():
            entries.append(Entry(target, tarfile.SYMTYPE, 0o777, target=os.readlink(path)))
        elif path.is_dir():
            entries.append(directory(target))
        elif rel.endswith(".dist-info/RECORD"):
            # Without the line for direct_url.json (dropped above): it names this build's wheel path.
            lines = path.read_bytes().splitlines(keepends=True)
            entries.append(file(target, b"".join(line for line in lines if b"/direct_url.json," not in line)))
        else:
            entries.append(file(target, path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644))
    return entries


def _pinned(wheel: str) -> bool:
    """True if `wheel` is one of requirements.txt's pins (the download directory may hold others)."""
    name, version = wheel.split("-")[:2]
    key = name.lower().replace("_", "-").replace(".", "-")
    return any(
        line.split("==")[0].lower().replace("_", "-").replace(".", "-") == key
        and line.split("==")[1].split()[0] == version
        for line in REQUIREMENTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )


def inputs_digest() -> str:
    """What the host image is built from, hashed: the host package, the project metadata, the pins, the
    Debian package names and this script. The lock records it, so the tests see a stale lock without
    the minutes a build takes; Debian's package versions are checked by the build itself."""
    paths = sorted(p for p in (ROOT / "host").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    paths += [ROOT / "pyproject.toml", ROOT / "README.md", REQUIREMENTS, Path(__file__)]
    paths.append(Path(__file__).with_name("build-constraints.txt"))
    digest = hashlib.sha256(",".join(DEBIAN_PACKAGES).encode())
    for path in paths:
        digest.update(f"\0{path.relative_to(ROOT).as_posix()}\0".encode() + path.read_bytes())
    return f"sha256:{digest.hexdigest()}"


def user_tree() -> list[Entry]:
    """The non-root user, the directories the pod mounts over, and the entrypoint."""
    script = f"#!{PYTHON}\nimport sys\n\nfrom host.cli import main\n\nsys.exit(main())\n".encode()
    return [
        file("etc/passwd", f"root:x:0:0:root:/root:/nonexistent\nwardfn:x:{UID}:{UID}::/var/lib/wardfn:/nonexistent\n"
             .encode()),
        file("etc/group", f"root:x:0:\nwardfn:x:{UID}:\n".encode()),
        file("opt/wardfn/bin/wardfn", script, 0o755),
        directory("var/lib/wardfn", 0o700, uid=UID),
        directory("var/lib/wardfn-packages", 0o755, uid=UID),
        directory("etc/wardfn"),
        directory("tmp", 0o1777),
    ]  # fmt: skip


HOST_CONFIG = {
    "User": f"{UID}:{UID}",
    "Entrypoint": ["/opt/wardfn/bin/wardfn"],
    "Cmd": ["serve", "--host", "0.0.0.0", "--port", "8000"],
    "Env": [
        "PATH=/opt/wardfn/bin:/usr/bin",
        "PYTHONPATH=/opt/wardfn/site",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "WARDFN_HOME=/var/lib/wardfn",
    ],
    "WorkingDir": "/var/lib/wardfn",
    "ExposedPorts": {"8000/tcp": {}},
}


# --- the layout ----------------------------------------------------------------------------------


def write_layout(out: Path, layers: list[tuple[bytes, str]], config: Mapping[str, object], ref: str) -> str:
    """An OCI image layout of `layers` with `config`; returns the manifest's digest."""
    out.mkdir(parents=True, exist_ok=True)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes, media_type: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    image = {
        "created": CREATED or _iso(EPOCH),
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
    }
    config_blob = blob(_json(image), "application/vnd.oci.image.config.v1+json")
    layer_blobs = [blob(data, MEDIA_LAYER) for data, _ in layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_blob,
        "layers": layer_blobs,
    }
    descriptor = blob(_json(manifest), "application/vnd.oci.image.manifest.v1+json")
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": ref}
    (out / "index.json").write_bytes(_json({"schemaVersion": 2, "manifests": [descriptor]}))
    (out / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    # Blobs of an earlier build that this one no longer names.
    named = {str(d["digest"]).removeprefix("sha256:") for d in [descriptor, config_blob, *layer_blobs]}
    for stale in blobs.iterdir():
        if stale.name not in named:
            stale.unlink()
    return str(descriptor["digest"])


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _iso(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def packages_tree(packages: Path) -> list[Entry]:
    """Every signed layout under `packages` (one directory each), under /packages."""
    entries = []
    for path in sorted(packages.rglob("*")):
        rel = f"packages/{path.relative_to(packages).as_posix()}"
        entries.append(directory(rel) if path.is_dir() else file(rel, path.read_bytes()))
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".wardfn" / "images", help="where the layouts go")
    parser.add_argument("--opa", type=Path, help="OPA's static binary (the opa image is skipped without it)")
    parser.add_argument("--packages", type=Path, help="a directory of signed package layouts, one per function")
    parser.add_argument("--check", action="store_true", help="fail unless the digests are the lock's")
    args = parser.parse_args()
    work_root = args.out / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    lock = yaml.safe_load(LOCK.read_text()) if LOCK.is_file() else {}
    built: dict[str, dict[str, Any]] = {}
    inputs = inputs_digest()
    with tempfile.TemporaryDirectory(dir=work_root) as tmp:
        work = Path(tmp)
        debian, debs = debian_tree(work)
        host_layers = [layer(debian), layer(python_tree(work, args.out / "wheels")), layer(user_tree())]
    digest = write_layout(args.out / "host", host_layers, HOST_CONFIG, "host")
    if inputs_digest() != inputs:
        sys.exit("the sources changed while the image was built: build again")
    built["host"] = {"digest": digest, "debian": debs, "inputs": inputs}
    print(f"host: {digest} ({args.out / 'host'})")
    if args.opa:
        opa_layers = [layer([file("opa", args.opa.read_bytes(), 0o755), *user_tree()[:2]])]
        opa_config = {"User": f"{UID}:{UID}", "Entrypoint": ["/opa"], "Cmd": ["run"], "WorkingDir": "/"}
        built["opa"] = {"digest": write_layout(args.out / "opa", opa_layers, opa_config, "opa")}
        print(f"opa: {built['opa']['digest']} ({args.out / 'opa'})")
    if args.packages:
        config = {**HOST_CONFIG, "Cmd": []}
        digest = write_layout(args.out / "function-packages", [*host_layers, layer(packages_tree(args.packages))],
                              config, "function-packages")  # fmt: skip
        print(f"function-packages: {digest} ({args.out / 'function-packages'}); not locked: it carries your key")
    if args.check:
        moved = [n for n in built if (lock.get(n) or {}).get("digest") != built[n]["digest"]]
        for name in moved:
            before = set((lock.get(name) or {}).get("debian", []))
            changed = sorted(set(built[name].get("debian", [])) ^ before)
            print(f"{name}: built {built[name]['digest']}, {LOCK.name} has {(lock.get(name) or {}).get('digest')}"
                  + (f"; Debian packages differ: {' '.join(changed)}" if changed else ""), file=sys.stderr)  # fmt: skip
        if moved:
            sys.exit(1)
        print(f"digests match {LOCK.relative_to(ROOT)}")
        return
    header = ("# Written by `make images-lock` (runtimeclass/images/build.py); `make images` rebuilds to exactly\n"
              "# these digests. `wardfn deploy render` names the images by them.\n")  # fmt: skip
    LOCK.write_text(header + yaml.safe_dump({**lock, **built}, sort_keys=True))
    print(f"wrote {LOCK.relative_to(ROOT)}")
    overlay = PROD_OVERLAY.read_text()
    for name, entry in built.items():
        overlay = re.sub(
            rf"(  - name: wardfn/{name}\n    newName: [^\n]+\n    digest: )sha256:[0-9a-f]{{64}}",
            rf"\g<1>{entry['digest']}",
            overlay,
        )
    PROD_OVERLAY.write_text(overlay)
    print(f"wrote the digests into {PROD_OVERLAY.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
