"""Would the rendered pods become Ready? Checked offline, as far as a cluster's own steps go.

For each overlay: every file a setting names (in the settings ConfigMap, or in the Secret
docs/data.md documents) is mounted at that path from a Secret or ConfigMap item; the settings the
pod gets pass the host's own start-up validation; the OPA sidecar, run for real with the rendered
arguments over a directory laid out the way the kubelet lays out a ConfigMap volume, loads the
policy once and answers; the migrations run first, from the host image; every image is pinned.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host.config import PROJECT_ROOT, Settings
from host.policy.sources import load_sources

WARDFN = Path(sys.executable).parent / "wardfn"
OPA = Path(__import__("os").environ.get("WARDFN_OPA_BIN") or PROJECT_ROOT / ".wardfn" / "tools" / "bin" / "opa")
PACKAGES_IMAGE = "registry.example.com/wardfn/function-packages@sha256:" + "ab" * 32
JWKS_CIDR = "10.20.0.15/32"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _wardfn(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH: the `wardfn` script runs this checkout's host, as the test process does.
    env = {"PATH": "/usr/bin:/bin", "WARDFN_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([str(WARDFN), *args], env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)


def _deployer_key(directory: Path) -> Path:
    path = directory / "deployer.pub.pem"
    public = Ed25519PrivateKey.generate().public_key()
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("rendered")
    key = _deployer_key(home)
    prod = ["--public-key", str(key), "--packages-image", PACKAGES_IMAGE, "--jwks-cidr", JWKS_CIDR]
    objects = {}
    for overlay, extra in (("dev", []), ("prod", prod)):
        done = _wardfn("deploy", "render", "--out", str(out / overlay), "--overlay", overlay, *extra, home=home)
        assert done.returncode == 0, done.stderr
        objects[overlay] = [d for d in yaml.safe_load_all((out / overlay / "wardfn.yaml").read_text()) if d]
    return objects


def _find(objects: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    return found


def _pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(_find(objects, "Deployment", "wardfn")["spec"]["template"]["spec"])


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name]
    return dict(found)


def documented_secret() -> dict[str, str]:
    """The Secret wardfn-secrets as docs/data.md tells operators to create it (a KEK in place of the $(...))."""
    text = (PROJECT_ROOT / "docs" / "data.md").read_text()
    found = dict(re.findall(r"--from-literal=(WARDFN_[A-Z_]+)=['\"]?([^'\" ]+)", text))
    assert {"WARDFN_DATABASE_URL", "WARDFN_AMQP_URL", "WARDFN_KEK"} <= set(found), found
    found["WARDFN_KEK"] = "A" * 43 + "="
    return found


def environment(objects: list[dict[str, Any]], overlay: str) -> dict[str, str]:
    """What the host container's environment holds: the settings ConfigMap, and in prod the documented Secret."""
    env = dict(_find(objects, "ConfigMap", "wardfn-settings")["data"])
    return {**env, **documented_secret()} if overlay == "prod" else env


def named_files(env: dict[str, str]) -> dict[str, str]:
    """{path: what names it} for every file a setting names: the *_FILE settings and the database URL's sslrootcert."""
    files = {value: name for name, value in env.items() if name.endswith("_FILE") and value}
    if env.get("WARDFN_DATABASE_URL"):
        query = dict(parse_qsl(urlsplit(env["WARDFN_DATABASE_URL"]).query))
        if query.get("sslrootcert"):
            files[query["sslrootcert"]] = "WARDFN_DATABASE_URL sslrootcert"
    return files


def _items(volume: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source kind, source name, file name) for every file a ConfigMap, Secret or projected volume provides."""
    sources = volume["projected"]["sources"] if "projected" in volume else [volume]
    provided = []
    for source in sources:
        for kind, name_key in (("configMap", "name"), ("secret", "secretName")):
            if kind in source:
                spec = source[kind]
                name = spec.get(name_key) or spec.get("name")
                provided += [(kind, name, item["path"]) for item in spec.get("items", [])]
    return provided


def unmounted(pod: dict[str, Any], container: str, files: dict[str, str]) -> list[str]:
    """Every named file no Secret or ConfigMap item of `container`'s mounts provides at exactly that path."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = _container(pod, container).get("volumeMounts", [])
    missing = []
    for path, setting in sorted(files.items()):
        target = PurePosixPath(path)
        provided = any(
            target.parent == PurePosixPath(m["mountPath"])
            and target.name in {f for _, _, f in _items(volumes[m["name"]])}
            for m in mounts
        )
        if not provided:
            missing.append(f"{setting}={path}")
    return missing


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_file_a_setting_names_is_mounted(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    pod = _pod(rendered[overlay])
    env = environment(rendered[overlay], overlay)
    files = named_files(env)
    assert unmounted(pod, "host", files) == []
    # The migrations connect to the same database, with the same CA.
    database = {p: s for p, s in files.items() if s.startswith("WARDFN_DATABASE_URL")}
    assert unmounted(pod, "migrate", database) == []
    if overlay == "prod":
        assert {
            "/etc/wardfn/keys/audit-checkpoint.pem",
            "/etc/wardfn/keys/package-signing.pub.pem",
            "/etc/wardfn/tls/mq-ca.pem",
            "/etc/wardfn/tls/db-ca.pem",
        } <= set(files)
    # Directories the settings name are volumes too: the state is writable, the policies are the ConfigMap.
    mounts = {m["mountPath"]: m for m in _container(pod, "host")["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["WARDFN_HOME"]]["name"]] and not mounts[env["WARDFN_HOME"]].get("readOnly")
    assert volumes[mounts[env["WARDFN_POLICY_DIR"]]["name"]]["configMap"]["name"].startswith("wardfn-policies")
    for directory in json.loads(env["WARDFN_PACKAGES_DIRS"]):
        assert directory in mounts


def test_the_check_finds_a_missing_mount(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = _pod(rendered["prod"])
    host = _container(pod, "host")
    host["volumeMounts"] = [m for m in host["volumeMounts"] if m["mountPath"] != "/etc/wardfn/tls"]
    pod["containers"] = [host if c["name"] == "host" else c for c in pod["containers"]]
    files = named_files(environment(rendered["prod"], "prod"))
    assert unmounted(pod, "host", files) == [
        "WARDFN_DATABASE_URL sslrootcert=/etc/wardfn/tls/db-ca.pem",
        "WARDFN_AMQP_CA_FILE=/etc/wardfn/tls/mq-ca.pem",
    ]


@pytest.mark.parametrize(("overlay", "env"), [("dev", "development"), ("prod", "production")])
def test_the_host_accepts_the_settings_it_is_given(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment(rendered[overlay], overlay).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.env == env
    if overlay == "prod":
        assert settings.audit_checkpoint_key_given and settings.kek_given and settings.jwks_url


def test_production_without_the_checkpoint_key_mount_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Why the mount matters: the host refuses production without the key file setting at all.
    for name, value in documented_secret().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WARDFN_ENV", "production")
    monkeypatch.setenv("WARDFN_JWKS_URL", "https://idp.example/certs")
    monkeypatch.setenv("WARDFN_JWT_ISSUER", "https://idp.example")
    with pytest.raises(ValueError, match="WARDFN_AUDIT_CHECKPOINT_KEY_FILE"):
        Settings()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubelet_layout(directory: Path, files: dict[str, str]) -> Path:
    """A ConfigMap volume as the kubelet writes it: ..<timestamp>/ holds the files, ..data links to it,
    and each file is a link through ..data."""
    stamp = directory / "..2026_12_02_03_00_00.000000001"
    stamp.mkdir(parents=True)
    for name, text in files.items():
        (stamp / name).write_text(text)
    (directory / "..data").symlink_to(stamp.name)
    for name in files:
        (directory / name).symlink_to(f"..data/{name}")
    return directory


def _run_opa(args: list[str], timeout: float = 60) -> tuple[subprocess.Popen[str], int | None]:
    """Start OPA; the diagnostic port once /health answers 200, or None if OPA exited first."""
    process = subprocess.Popen([str(OPA), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    diagnostic = int(next(a for a in args if a.startswith("--diagnostic-addr=")).rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{diagnostic}/health", timeout=2) as answer:
                if answer.status == 200:
                    return process, diagnostic
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    return process, None


def _sidecar_args(rendered: dict[str, list[dict[str, Any]]], policies: Path, addr: int, diag: int) -> list[str]:
    """The rendered sidecar's arguments, with this machine's ports and directory."""
    opa = _container(_pod(rendered["prod"]), "opa")
    mount = next(m["mountPath"] for m in opa["volumeMounts"] if m["name"] == "policies")
    replaced = {"--addr": f"--addr=127.0.0.1:{addr}", "--diagnostic-addr": f"--diagnostic-addr=127.0.0.1:{diag}"}
    args = [replaced.get(a.split("=")[0], a) for a in opa["args"]]
    return [str(policies) if a == mount else a for a in args]


def test_opa_sidecar_loads_the_configmap_mount_once(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    config = _find(rendered["prod"], "ConfigMap", "wardfn-policies")
    policies = kubelet_layout(tmp_path / "policies", config["data"])
    addr, diag = _free_port(), _free_port()
    args = _sidecar_args(rendered, policies, addr, diag)
    assert "--ignore=.*" in args
    process, ready = _run_opa(args)
    try:
        assert ready, "OPA exited or never answered /health"
        with urllib.request.urlopen(f"http://127.0.0.1:{addr}/v1/policies", timeout=5) as answer:
            loaded = json.load(answer)["result"]
        assert len(loaded) == 1 and loaded[0]["id"].endswith("his.rego")
        with urllib.request.urlopen(f"http://127.0.0.1:{addr}/v1/data/healthcare/his", timeout=5) as answer:
            assert "result" in json.load(answer)
    finally:
        process.terminate()
        process.communicate(timeout=10)
    # The host's embedded engine reads the same mount (WARDFN_POLICY_DIR) and sees the file once too.
    assert list(load_sources(policies)) == ["his.rego"]


def test_without_ignore_opa_fails_on_the_kubelet_layout(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    config = _find(rendered["prod"], "ConfigMap", "wardfn-policies")
    policies = kubelet_layout(tmp_path / "policies", config["data"])
    args = [a for a in _sidecar_args(rendered, policies, _free_port(), _free_port()) if a != "--ignore=.*"]
    process, ready = _run_opa(args, timeout=30)
    if process.poll() is None:
        process.kill()
    output, _ = process.communicate(timeout=10)
    assert ready is None and process.returncode != 0
    assert "multiple default rules" in output


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_migrations_run_first_from_the_host_image(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    pod = _pod(rendered[overlay])
    assert [c["name"] for c in pod["initContainers"]] == ["migrate", "function-packages"]
    migrate, host = pod["initContainers"][0], _container(pod, "host")
    assert migrate["image"] == host["image"] and migrate["args"] == ["db", "migrate"] and "command" not in migrate
    assert migrate["envFrom"] == host["envFrom"]


def test_prod_names_every_image_by_digest(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = _pod(rendered["prod"])
    images = [c["image"] for c in pod["initContainers"] + pod["containers"]]
    assert all(DIGEST.search(image) and ":latest" not in image for image in images), images
    assert _container(pod, "function-packages")["image"] == PACKAGES_IMAGE
    lock = yaml.safe_load((PROJECT_ROOT / "runtimeclass" / "images.lock").read_text())
    assert _container(pod, "host")["image"] == f"registry.example.com/wardfn/host@{lock['host']['digest']}"


def test_dev_is_a_development_configuration(rendered: dict[str, list[dict[str, Any]]]) -> None:
    env = environment(rendered["dev"], "dev")
    assert env["WARDFN_ENV"] == "development"
    assert "WARDFN_JWKS_URL" not in env and "WARDFN_AUDIT_CHECKPOINT_KEY_FILE" not in env
    # No Secret is needed to start a development pod.
    assert all(ref["secretRef"].get("optional") for ref in _container(_pod(rendered["dev"]), "host")["envFrom"][1:])


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_pod_template_carries_the_recommended_labels(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    labels = _find(rendered[overlay], "Deployment", "wardfn")["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "wardfn" and labels["app.kubernetes.io/part-of"] == "wardfn"


def test_egress_reaches_the_identity_provider_and_nodelocal_dns(rendered: dict[str, list[dict[str, Any]]]) -> None:
    idp = _find(rendered["prod"], "NetworkPolicy", "wardfn-idp")["spec"]["egress"]
    assert idp == [{"to": [{"ipBlock": {"cidr": JWKS_CIDR}}], "ports": [{"port": 443, "protocol": "TCP"}]}]
    dns = _find(rendered["prod"], "NetworkPolicy", "wardfn-dns")["spec"]["egress"][0]["to"]
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in dns
    assert not [o for o in rendered["dev"] if o["metadata"]["name"] == "wardfn-idp"]


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        ([], "give --public-key"),
        (["--public-key", "DEVKEY"], "development key"),
        (["--public-key", "KEY"], "--packages-image REF@sha256"),
        (["--public-key", "KEY", "--packages-image", "registry.example.com/wardfn/function-packages:1"], "not REF@sha"),
        (["--public-key", "KEY", "--packages-image", PACKAGES_IMAGE, "--jwks-cidr", "idp.example"], "not a network"),
    ],
    ids=["no-key", "development-key", "no-packages-image", "packages-by-tag", "jwks-not-an-address"],
)
def test_production_render_refuses(args: list[str], refusal: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    # The development key exists once a dev render made it.
    assert _wardfn("deploy", "render", "--out", str(tmp_path / "dev"), home=home).returncode == 0
    keys = {"DEVKEY": str(home / "keys" / "package-signing.pub.pem"), "KEY": str(_deployer_key(tmp_path))}
    args = [keys.get(a, a) for a in args]
    done = _wardfn("deploy", "render", "--out", str(tmp_path / "prod"), "--overlay", "prod", *args, home=home)
    assert done.returncode != 0 and refusal in done.stderr, done.stderr
    assert not (tmp_path / "prod" / "wardfn.yaml").exists()
