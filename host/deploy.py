"""Kubernetes manifests: render the kustomize overlays for the registry's functions, and validate them offline.

Rendering runs the real kustomize (v5, from the Go module proxy). Validation is two passes, as a
cluster would judge: every object against the Kubernetes 1.31 OpenAPI schemas (kubernetes-validate,
strict: unknown fields are errors), then every Gatekeeper ConstraintTemplate and Constraint against
every object with Gatekeeper's own `gator test` (Gatekeeper v3.23), which evaluates the templates'
Rego or CEL on the same review input the admission webhook builds. Images are named by digest
(runtimeclass/images.lock, which `make images` builds to).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from host.catalogue.manifest import FunctionSource
from host.config import PROJECT_ROOT
from host.errors import ConfigurationError

KUBERNETES_VERSION = "1.31.0"
DEPLOY_DIR = PROJECT_ROOT / "runtimeclass"
GATEKEEPER_DIR = DEPLOY_DIR / "gatekeeper"
OVERLAYS = ("dev", "prod")
APP_FILE = "wardfn.yaml"
GATEKEEPER_FILE = "gatekeeper.yaml"
GATEKEEPER_GROUPS = ("templates.gatekeeper.sh", "constraints.gatekeeper.sh")
PACKAGES_MOUNT = "/var/lib/wardfn-packages"
DEFAULT_REGISTRY = "registry.example.com/wardfn"
# The digests `make images` built the images to; a render names the images by these.
IMAGES_LOCK = DEPLOY_DIR / "images.lock"
LOCKED_IMAGES = ("host", "opa")
PINNED = re.compile(r"^[a-z0-9][^@\s]*@sha256:[0-9a-f]{64}$")
# The function-packages image is the host image plus a layer of signed layouts: its Python copies
# them into the pod (no shell in either image).
PYTHON = "/usr/bin/python3.11"  # the host image's interpreter (runtimeclass/images/build.py)
COPY = "import shutil, sys; [shutil.copytree(s, sys.argv[-1] + '/' + s.rsplit('/', 1)[1]) for s in sys.argv[1:-1]]"


@dataclass(frozen=True)
class Problem:
    """One schema error or Gatekeeper violation, naming the object and the rule."""

    check: str  # "schema" or the constraint kind
    obj: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.obj}: {self.message}"


def tool(tools_dir: Path, name: str) -> Path:
    """A tool the Makefile installs into the project's tools directory; a clear error when it is missing."""
    path = tools_dir / name
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ConfigurationError(f"{name} is not installed in {tools_dir}: run `make tools` (it needs Go)")
    return path


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigurationError(f"{Path(command[0]).name} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout


def render(
    out: Path,
    overlay: str,
    functions: list[FunctionSource],
    public_key_file: Path,
    tools_dir: Path,
    registry: str = DEFAULT_REGISTRY,
    packages_image: str | None = None,
    jwks_cidrs: tuple[str, ...] = (),
) -> list[Path]:
    """Render `overlay` for `functions` into `out` (wardfn.yaml, gatekeeper.yaml); return the files.

    Every image is named by digest: the host's and OPA's from runtimeclass/images.lock, the
    function-packages image as given (production requires `REF@sha256:...`; its content depends on
    the deployer's signing key). `jwks_cidrs` open egress to the identity provider on 443."""
    if overlay not in OVERLAYS:
        raise ConfigurationError(f"unknown overlay {overlay!r}: choose one of {', '.join(OVERLAYS)}")
    if not functions:
        raise ConfigurationError("no functions to deploy: WARDFN_FUNCTIONS_DIRS holds none")
    if packages_image is None:
        if overlay == "prod":
            raise ConfigurationError(
                "production names the function-packages image by digest: give --packages-image REF@sha256:<64 hex>"
            )
        packages_image = f"{registry}/function-packages:dev"
    elif overlay == "prod" and not PINNED.match(packages_image):
        raise ConfigurationError(f"--packages-image {packages_image!r} is not REF@sha256:<64 hex digits>")
    kustomize = tool(tools_dir, "kustomize")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wardfn-render-") as tmp:
        work = Path(tmp)
        shutil.copyfile(public_key_file, work / "package-signing.pub.pem")
        kustomization = _functions_kustomization(work, overlay, functions, registry, packages_image)
        if jwks_cidrs:
            (work / "networkpolicy-idp.yaml").write_text(yaml.safe_dump(_idp_egress(jwks_cidrs), sort_keys=False))
            kustomization["resources"].append("networkpolicy-idp.yaml")
        (work / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        rendered = _run([str(kustomize), "build", "--load-restrictor", "LoadRestrictionsNone", str(work)])
    gatekeeper = _run([str(kustomize), "build", str(GATEKEEPER_DIR)])
    files = [out / APP_FILE, out / GATEKEEPER_FILE]
    files[0].write_text(rendered)
    files[1].write_text(gatekeeper)
    return files


def locked_images(lock: Path = IMAGES_LOCK) -> dict[str, str]:
    """{image: sha256 digest} from runtimeclass/images.lock (written by `make images`)."""
    try:
        entries = yaml.safe_load(lock.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read {lock}: {exc}; run `make images`") from None
    digests = {name: str((entries.get(name) or {}).get("digest", "")) for name in LOCKED_IMAGES}
    for name, digest in digests.items():
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise ConfigurationError(f"{lock} has no digest for the {name} image: run `make images`")
    return digests


def _idp_egress(cidrs: tuple[str, ...]) -> dict[str, Any]:
    """A NetworkPolicy letting the pods reach the identity provider's JWKS endpoint (HTTPS)."""
    blocks = []
    for cidr in cidrs:
        try:
            blocks.append({"ipBlock": {"cidr": str(ipaddress.ip_network(cidr, strict=True))}})
        except ValueError:
            raise ConfigurationError(f"--jwks-cidr {cidr!r} is not a network address such as 10.20.0.15/32") from None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "wardfn-idp"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "wardfn"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": blocks, "ports": [{"port": 443, "protocol": "TCP"}]}],
        },
    }


def _functions_kustomization(
    work: Path, overlay: str, functions: list[FunctionSource], registry: str, packages_image: str
) -> dict[str, Any]:
    """The overlay plus what depends on the deployment: image digests, the functions' packages, the pinned key."""
    names = [f"{f.name}@{f.manifest.version}" for f in sorted(functions, key=lambda f: f.name)]
    hardened = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # The kubelet pulls the packages image (no egress from the pod); the init container copies the
    # signed layouts into the pod, and the host verifies each against the pinned key before use.
    fetch = {
        "name": "function-packages",
        "image": packages_image,
        "command": [PYTHON, "-I", "-c", COPY, *(f"/packages/{f.name}" for f in functions), PACKAGES_MOUNT],
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
        "securityContext": hardened,
        "volumeMounts": [{"name": "packages", "mountPath": PACKAGES_MOUNT}],
    }
    patch = [
        # After `migrate`, the base's first init container.
        {"op": "add", "path": "/spec/template/spec/initContainers/-", "value": fetch},
        {"op": "add", "path": "/spec/template/metadata/annotations/wardfn.io~1functions", "value": ",".join(names)},
    ]
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes only relative paths to other kustomizations.
        "resources": [os.path.relpath(DEPLOY_DIR / "overlays" / overlay, work)],
        "images": [
            {"name": f"{DEFAULT_REGISTRY}/{name}", "newName": f"{registry}/{name}", "digest": digest}
            for name, digest in locked_images().items()
        ],
        "configMapGenerator": [
            {"name": "wardfn-package-key", "behavior": "replace", "files": ["package-signing.pub.pem"]}
        ],
        "patches": [{"target": {"kind": "Deployment", "name": "wardfn"}, "patch": yaml.safe_dump(patch)}],
    }


def load_objects(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document under `directory`, with the file it came from."""
    found: list[tuple[Path, dict[str, Any]]] = []
    paths = sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if not paths:
        raise ConfigurationError(f"{directory} holds no .yaml files: run `wardfn deploy render --out {directory}`")
    for path in paths:
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
        found.extend((path, d) for d in documents if d is not None)
    return found


def _label(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    namespace = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{obj.get('kind', '?')}/{namespace}{metadata.get('name', '?')}"


def _is_gatekeeper(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).split("/")[0] in GATEKEEPER_GROUPS


def schema_problems(objects: list[tuple[Path, dict[str, Any]]]) -> list[Problem]:
    """Every Kubernetes object against the 1.31 schemas, strictly (unknown fields are errors)."""
    import kubernetes_validate  # imported here: loading its schema index takes a moment

    problems = []
    for path, obj in objects:
        if _is_gatekeeper(obj):
            continue  # Gatekeeper's own CRDs: gator parses and checks these
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "(top)"
            problems.append(Problem("schema", _label(obj), f"{where}: {exc.message} ({path.name})"))
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            kind = f"{obj.get('apiVersion')} {obj.get('kind')}"
            problems.append(
                Problem("schema", _label(obj), f"no Kubernetes {KUBERNETES_VERSION} schema for {kind} {exc}")
            )
    return problems


def gatekeeper_problems(directory: Path, objects: list[tuple[Path, dict[str, Any]]], tools_dir: Path) -> list[Problem]:
    """Every ConstraintTemplate and Constraint against every object, by Gatekeeper's own gator."""
    gator = tool(tools_dir, "gator")
    sources = ["-f", str(directory)]
    if not any(obj.get("kind") == "ConstraintTemplate" for _, obj in objects):
        sources += ["-f", str(GATEKEEPER_DIR / "templates"), "-f", str(GATEKEEPER_DIR / "constraints")]
    done = subprocess.run([str(gator), "test", *sources, "-o", "json"], capture_output=True, text=True, check=False)
    # gator exits 1 when there are violations and prints them; anything else unparsable is an error.
    try:
        # `null` is gator's answer when nothing is violated.
        results = json.loads(done.stdout or "null") or []
        parsed = isinstance(results, list)
    except json.JSONDecodeError:
        parsed = False
    if not parsed or (done.returncode != 0 and not results):
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise ConfigurationError(f"gator could not evaluate {directory}: {detail}")
    return [
        Problem(r["constraint"]["kind"], _label(r.get("violatingObject") or {}), r["msg"])
        for r in results
        if r.get("enforcementAction", "deny") == "deny"
    ]


def validate(directory: Path, tools_dir: Path) -> list[Problem]:
    """Schema errors and Gatekeeper violations for everything under `directory`; empty when all pass."""
    objects = load_objects(directory)
    return schema_problems(objects) + gatekeeper_problems(directory, objects, tools_dir)
