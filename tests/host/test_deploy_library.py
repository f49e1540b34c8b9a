"""The production render against a platform team's guardrails: the official gatekeeper-library templates
with the constraints in runtimeclass/gatekeeper/platform/, evaluated by gator (a version that runs CEL).

The templates used are vendored, unchanged, in runtimeclass/gatekeeper/library/ (its README names the
commit); WARDFN_GATEKEEPER_LIBRARY may name another checkout of
github.com/open-policy-agent/gatekeeper-library (its `library/` directory inside) to test against.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from host.config import load_settings
from host.deploy import GATEKEEPER_DIR
from tests.host.test_deploy_pods import PACKAGES_IMAGE, _deployer_key, _wardfn

GATOR = load_settings().tools_dir / "gator"
PLATFORM = GATEKEEPER_DIR / "platform"
LIBRARY = (
    Path(os.environ["WARDFN_GATEKEEPER_LIBRARY"]) / "library"
    if os.environ.get("WARDFN_GATEKEEPER_LIBRARY")
    else GATEKEEPER_DIR / "library"
)
TEMPLATES = [
    "general/requiredlabels",
    "general/containerlimits",
    "general/containerrequests",
    "general/allowedrepos",
    "general/disallowedtags",
    "general/imagedigests",
    "general/requiredprobes",
    "general/replicalimits",
    "general/poddisruptionbudget",
    "general/automount-serviceaccount-token",
    "general/httpsonly",
    "pod-security-policy/privileged-containers",
    "pod-security-policy/allow-privilege-escalation",
    "pod-security-policy/read-only-root-filesystem",
    "pod-security-policy/capabilities",
    "pod-security-policy/users",
    "pod-security-policy/seccomp",
]


def gator_test(*sources: Path) -> list[dict[str, Any]]:
    """gator test's violations over `sources` (an error if it could not evaluate them)."""
    args = [a for s in sources for a in ("-f", str(s))]
    done = subprocess.run([str(GATOR), "test", *args, "-o", "json"], capture_output=True, text=True, timeout=300)
    results = json.loads(done.stdout or "null") or []
    assert done.returncode == 0 or results, done.stderr
    return list(results)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    templates = tmp_path_factory.mktemp("library")
    for name in TEMPLATES:
        shutil.copy(LIBRARY / name / "template.yaml", templates / f"{name.replace('/', '-')}.yaml")
    return templates


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("prod")
    args = ["--public-key", str(_deployer_key(home)), "--packages-image", PACKAGES_IMAGE, "--jwks-cidr", "10.0.0.1/32"]
    done = _wardfn("deploy", "render", "--out", str(out), "--overlay", "prod", *args, home=home)
    assert done.returncode == 0, done.stderr
    (out / "gatekeeper.yaml").unlink()  # the project's own constraints: tests/host/test_deploy.py
    return out


def test_production_passes_the_library_constraints(library: Path, production: Path) -> None:
    violations = gator_test(library, PLATFORM, production)
    assert violations == [], [(v["constraint"]["kind"], v["msg"]) for v in violations]


def test_the_library_constraints_catch_a_tagged_privileged_pod(library: Path, production: Path, tmp_path: Path) -> None:
    objects = [d for d in yaml.safe_load_all((production / "wardfn.yaml").read_text()) if d]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    host = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "host")
    host["image"] = "registry.example.com/wardfn/host:latest"
    host["securityContext"]["privileged"] = True
    (tmp_path / "wardfn.yaml").write_text(yaml.safe_dump(deployment))
    kinds = {v["constraint"]["kind"] for v in gator_test(library, PLATFORM, tmp_path)}
    assert {"K8sDisallowedTags", "K8sImageDigests", "K8sPSPPrivilegedContainer"} <= kinds


CEL_TEMPLATE = """
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: celrequiredname
spec:
  crd:
    spec:
      names:
        kind: CelRequiredName
  targets:
    - target: admission.k8s.gatekeeper.sh
      code:
        - engine: K8sNativeValidation
          source:
            validations:
              - expression: "has(object.metadata.labels) && 'app.kubernetes.io/name' in object.metadata.labels"
                message: "app.kubernetes.io/name is required"
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: CelRequiredName
metadata:
  name: cel-required-name
spec:
  match:
    kinds:
      - apiGroups: [""]
        kinds: ["Pod"]
"""


@pytest.mark.parametrize(("labels", "violations"), [({"app.kubernetes.io/name": "wardfn"}, 0), ({"app": "wardfn"}, 1)])
def test_gator_evaluates_cel_templates(labels: dict[str, str], violations: int, tmp_path: Path) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "wardfn", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.example.com/wardfn/host@sha256:" + "0" * 64}]},
    }
    (tmp_path / "cel.yaml").write_text(CEL_TEMPLATE)
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    found = gator_test(tmp_path)
    assert len(found) == violations and all("app.kubernetes.io/name" in v["msg"] for v in found)
