"""runtimeclass/images/build.py, without the minutes `make images` takes: its layers are reproducible, its
layouts are read by an independent OCI client (oras), and runtimeclass/images.lock is what renders use."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from host.config import PROJECT_ROOT, load_settings
from host.deploy import locked_images

ORAS = load_settings().tools_dir / "oras"
BUILT = PROJECT_ROOT / ".wardfn" / "images"


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_build", PROJECT_ROOT / "runtimeclass" / "images" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _build_module()


def _entries() -> list[object]:
    return [
        build.file("opt/wardfn/bin/wardfn", b"#!/usr/bin/python3.11\n", 0o755),
        build.file("etc/passwd", b"wardfn:x:10001:10001::/var/lib/wardfn:/nonexistent\n"),
        build.directory("var/lib/wardfn", 0o700, uid=10001),
        build.Entry("usr/bin/python3", tarfile.SYMTYPE, 0o777, target="python3.11"),
    ]


def test_a_layer_is_the_same_bytes_whatever_the_order_or_the_clock() -> None:
    first = build.layer(_entries())
    second = build.layer(list(reversed(_entries())))
    assert first == second
    changed = build.layer([*_entries()[:-1], build.file("usr/bin/python3", b"x")])
    assert changed[1] != first[1]


def test_a_layer_holds_sorted_entries_with_their_parents_and_one_timestamp(tmp_path: Path) -> None:
    data, diff_id = build.layer(_entries())
    (tmp_path / "layer.tar.gz").write_bytes(data)
    with tarfile.open(tmp_path / "layer.tar.gz") as tar:
        members = tar.getmembers()
    names = [m.name.rstrip("/") for m in members]
    assert names == sorted(names) and {"opt", "opt/wardfn", "opt/wardfn/bin", "var/lib"} <= set(names)
    assert {m.mtime for m in members} == {build.EPOCH}
    state = next(m for m in members if m.name.rstrip("/") == "var/lib/wardfn")
    assert (state.uid, state.mode) == (10001, 0o700)
    assert diff_id.startswith("sha256:") and data[4:8] == b"\0\0\0\0"  # gzip header: no mtime


def test_an_independent_client_reads_the_layout(tmp_path: Path) -> None:
    layers = [build.layer(_entries())]
    digest = build.write_layout(tmp_path / "img", layers, build.HOST_CONFIG, "host")
    assert digest == build.write_layout(tmp_path / "again", layers, build.HOST_CONFIG, "host")
    done = subprocess.run(
        [str(ORAS), "manifest", "fetch", "--oci-layout", f"{tmp_path / 'img'}:host", "--descriptor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["digest"] == digest
    manifest = subprocess.run(
        [str(ORAS), "manifest", "fetch", "--oci-layout", f"{tmp_path / 'img'}:host"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    config_digest = json.loads(manifest.stdout)["config"]["digest"].removeprefix("sha256:")
    config = json.loads((tmp_path / "img" / "blobs" / "sha256" / config_digest).read_bytes())
    assert config["config"]["User"] == "10001:10001" and config["rootfs"]["diff_ids"] == [layers[0][1]]


def test_the_packages_copy_runs_the_interpreter_the_host_image_has() -> None:
    from host.deploy import PYTHON

    assert PYTHON == build.PYTHON and f"usr/bin/{PYTHON.rsplit('/', 1)[1]}" in build.KEEP_BINARIES


def test_the_pins_cover_every_dependency_of_the_project() -> None:
    import tomllib

    from packaging.requirements import Requirement

    def key(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {
        key(line.split("==")[0]): line.split("==")[1].split()[0]
        for line in build.REQUIREMENTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert all(" --hash=sha256:" in line for line in build.REQUIREMENTS.read_text().splitlines() if "==" in line)
    dependencies = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        assert key(dependency.name) in pins, f"{dependency.name} is not pinned in runtimeclass/images/requirements.txt"
        assert dependency.specifier.contains(pins[key(dependency.name)]), dependency


def test_the_lock_names_the_images_renders_use() -> None:
    digests = locked_images()
    assert set(digests) == {"host", "opa"}
    lock = yaml.safe_load((PROJECT_ROOT / "runtimeclass" / "images.lock").read_text())
    assert lock["host"]["debian"] and all(d.endswith(".deb") for d in lock["host"]["debian"])


def test_the_prod_overlay_names_the_locked_digests() -> None:
    overlay = yaml.safe_load((PROJECT_ROOT / "runtimeclass" / "overlays" / "prod" / "kustomization.yaml").read_text())
    named = {i["name"].removeprefix("wardfn/"): i.get("digest") for i in overlay["images"]}
    assert named == locked_images()


def test_the_lock_is_for_these_sources() -> None:
    # The host image holds host/: any change to it (or to the pins, the Debian package list or the
    # build) changes the image, so the lock must be rebuilt with it.
    lock = yaml.safe_load((PROJECT_ROOT / "runtimeclass" / "images.lock").read_text())
    assert lock["host"]["inputs"] == build.inputs_digest(), "stale runtimeclass/images.lock: run `make images-lock`"


def test_a_lock_without_a_digest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images.lock").write_text("host:\n  digest: sha256:abc\n")
    from host.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="make images"):
        locked_images(tmp_path / "images.lock")


@pytest.mark.skipif(not (BUILT / "host" / "index.json").is_file(), reason="no `make images` build in .wardfn/images")
def test_the_built_host_image_is_the_locked_one() -> None:
    index = json.loads((BUILT / "host" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == locked_images()["host"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", index["manifests"][0]["digest"])
