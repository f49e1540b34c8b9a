"""`wardfn deploy`: both overlays render and validate clean with the real kustomize, the Kubernetes 1.31
schemas and Gatekeeper's gator; each bad manifest gives exactly its one violation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from host.config import PROJECT_ROOT, load_settings
from host.deploy import GATEKEEPER_DIR, validate
from tests.host.test_deploy_pods import PACKAGES_IMAGE, _deployer_key

WARDFN = Path(sys.executable).parent / "wardfn"
TOOLS = load_settings().tools_dir
BAD = GATEKEEPER_DIR / "tests"


def _wardfn(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH: the `wardfn` script runs this checkout's host, as the test process does.
    env = {"PATH": "/usr/bin:/bin", "WARDFN_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([str(WARDFN), *args], env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("rendered")
    dirs = {}
    key = _deployer_key(home)
    prod = ["--public-key", str(key), "--packages-image", PACKAGES_IMAGE, "--jwks-cidr", "10.20.0.15/32"]
    for overlay, extra in (("dev", []), ("prod", prod)):
        done = _wardfn("deploy", "render", "--out", str(out / overlay), "--overlay", overlay, *extra, home=home)
        assert done.returncode == 0, done.stderr
        dirs[overlay] = out / overlay
    return dirs


def _objects(directory: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((directory / "wardfn.yaml").read_text()) if d]


def _one(directory: Path, kind: str) -> dict[str, Any]:
    found = [o for o in _objects(directory) if o["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_renders_and_validates_with_zero_problems(rendered: dict[str, Path], overlay: str) -> None:
    done = _wardfn("deploy", "validate", str(rendered[overlay]), home=rendered[overlay])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no Gatekeeper violations" in done.stdout
    kinds = {o["kind"] for o in _objects(rendered[overlay])}
    expected = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress"}
    assert expected | {"RuntimeClass", "ConfigMap", "ServiceAccount", "Namespace"} <= kinds


def test_prod_deployment_carries_the_seed_numbers(rendered: dict[str, Path]) -> None:
    deployment = _one(rendered["prod"], "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 20
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 4, "maxUnavailable": 2}}
    pod = spec["template"]["spec"]
    assert pod["runtimeClassName"] == "wasmedge"
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["weight"] == 100
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    host = next(c for c in pod["containers"] if c["name"] == "host")
    assert host["resources"] == {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"cpu": "1000m", "memory": "1Gi"},
    }
    assert host["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert host["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert host["securityContext"]["readOnlyRootFilesystem"] is True
    assert host["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "opa" in {c["name"] for c in pod["containers"]}
    # After the migrations, one init container copies the registry's functions' signed packages into the pod.
    assert "/packages/patient_lookup" in pod["initContainers"][1]["command"]
    assert "patient_lookup@0.1.0" in spec["template"]["metadata"]["annotations"]["wardfn.io/functions"]


def test_runtime_classes_name_their_containerd_handlers(rendered: dict[str, Path]) -> None:
    classes = {o["metadata"]["name"]: o for o in _objects(rendered["prod"]) if o["kind"] == "RuntimeClass"}
    assert classes["wasmedge"]["handler"] == "crun-wasmedge"
    assert classes["wasmtime"]["handler"] == "wasmtime"
    assert classes["wasmedge"]["overhead"]["podFixed"] and classes["wasmedge"]["scheduling"]["nodeSelector"]


def test_dev_overlay_scales_down_only(rendered: dict[str, Path]) -> None:
    assert _one(rendered["dev"], "Deployment")["spec"]["replicas"] == 2
    assert _one(rendered["dev"], "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 2


def test_rendered_key_is_the_pinned_public_key(rendered: dict[str, Path]) -> None:
    config = next(o for o in _objects(rendered["prod"]) if o["metadata"]["name"].startswith("wardfn-package-key"))
    assert config["data"]["package-signing.pub.pem"].startswith("-----BEGIN PUBLIC KEY-----")


EXPECTED = {
    "bad-no-runtime-class.yaml": ("WardfnRuntimeClass", "must set runtimeClassName"),
    "bad-deployment-no-runtime-class.yaml": ("WardfnRuntimeClass", "must set runtimeClassName"),
    "bad-no-limits.yaml": ("WardfnResourceLimits", "must set CPU and memory limits"),
    "bad-privileged.yaml": ("WardfnNonRoot", "must not be privileged"),
    "bad-host-path.yaml": ("WardfnNoHostPath", "must not be a hostPath"),
    "bad-foreign-registry.yaml": ("WardfnAllowedRegistry", "not from an allowed registry"),
    "bad-missing-label.yaml": ("WardfnDataClassification", "wardfn.io/data-classification"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_manifest_gives_exactly_its_violation(name: str, tmp_path: Path) -> None:
    shutil.copy(BAD / name, tmp_path / name)
    done = _wardfn("deploy", "validate", str(tmp_path), home=tmp_path / "home")
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    kind, text = EXPECTED[name]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{kind}: ") and text in lines[0]


def test_good_and_unlabelled_pods_pass(tmp_path: Path) -> None:
    for name in ("good-pod.yaml", "other-pod.yaml"):
        shutil.copy(BAD / name, tmp_path / name)
    assert validate(tmp_path, TOOLS) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda pod: pod["spec"]["containers"][0].update(resourcez={}), "'resourcez' was unexpected"),
        (lambda pod: pod["spec"].update(runtimeClassName=7), "7 is not of type 'string'"),
        (lambda pod: pod.update(kind="Bogus"), "no Kubernetes 1.31.0 schema for v1 Bogus"),
    ],
    ids=["unknown-field", "wrong-type", "unknown-kind"],
)
def test_schema_errors_are_named(change: Any, expected: str, tmp_path: Path) -> None:
    pod = yaml.safe_load((BAD / "good-pod.yaml").read_text())
    change(pod)
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    problems = [p for p in validate(tmp_path, TOOLS) if p.check == "schema"]
    assert len(problems) == 1, problems
    assert problems[0].obj.endswith("/wardfn/fn-good") and expected in problems[0].message


def test_gator_verify_suite_passes() -> None:
    done = subprocess.run(
        [str(TOOLS / "gator"), "verify", str(GATEKEEPER_DIR)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok" in done.stdout


def test_gator_verify_fails_a_wrong_expectation(tmp_path: Path) -> None:
    copy = tmp_path / "gatekeeper"
    shutil.copytree(GATEKEEPER_DIR, copy)
    suite = (copy / "suite.yaml").read_text().replace("must not be a hostPath", "something gator never says")
    (copy / "suite.yaml").write_text(suite)
    done = subprocess.run([str(TOOLS / "gator"), "verify", str(copy)], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
