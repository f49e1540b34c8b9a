"""`wardfn deploy`: Kubernetes manifests for the registry's functions, rendered and validated offline."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from host.cli.common import cli_settings, err


@click.group()
def deploy() -> None:
    """Kubernetes manifests (runtimeclass/), rendered with kustomize and validated offline."""


@deploy.command("render")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory to write the manifests to.")
@click.option("--overlay", type=click.Choice(["dev", "prod"]), default="dev", show_default=True)
@click.option(
    "--public-key",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="The Ed25519 public key (PEM) packages are signed with; required for prod (a development key is "
    "refused there); default for dev: this home's development key.",
)
@click.option("--registry", default=None, help="Image registry prefix (default registry.example.com/wardfn).")
@click.option(
    "--packages-image",
    default=None,
    help="The function-packages image, REF@sha256:<digest> (required for prod); default for dev: "
    "REGISTRY/function-packages:dev.",
)
@click.option(
    "--jwks-cidr",
    multiple=True,
    help="Address (CIDR) of the identity provider's JWKS endpoint the pods may reach on 443; repeatable.",
)
def deploy_render(
    out: Path,
    overlay: str,
    public_key: Path | None,
    registry: str | None,
    packages_image: str | None,
    jwks_cidr: tuple[str, ...],
) -> None:
    """Render an overlay for the functions in the registry into OUT (wardfn.yaml, gatekeeper.yaml)."""
    from host.catalogue.manifest import discover_functions
    from host.catalogue.oci import development_signing_key, public_key_path
    from host.deploy import DEFAULT_REGISTRY, render

    settings = cli_settings()
    development_key = public_key_path(settings.package_signing_key)
    if overlay == "prod" or settings.production:
        if public_key is None:
            raise click.UsageError("give --public-key: production pins the key packages are signed with")
        if development_key.is_file() and public_key.read_bytes().strip() == development_key.read_bytes().strip():
            raise click.UsageError(f"--public-key {public_key} is this home's development key: production refuses it")
    if public_key is None:
        development_signing_key(settings.package_signing_key)
        public_key = development_key
    functions = discover_functions(settings.functions_dirs)
    files = render(
        out, overlay, functions, public_key, settings.tools_dir, registry or DEFAULT_REGISTRY, packages_image, jwks_cidr
    )
    for path in files:
        err.print(f"wrote {path}")
    if overlay == "prod" and not jwks_cidr:
        err.print(
            "warning: no --jwks-cidr: no NetworkPolicy lets the pods reach the identity provider's JWKS "
            "endpoint (WARDFN_JWKS_URL), so tokens cannot be verified until one does"
        )


@deploy.command("validate")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
def deploy_validate(directory: Path) -> None:
    """Validate DIRECTORY against the Kubernetes 1.31 schemas and the Gatekeeper constraints (gator)."""
    from host.deploy import KUBERNETES_VERSION, validate

    problems = validate(directory, cli_settings().tools_dir)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        click.echo(f"{len(problems)} problem(s) in {directory}", err=True)
        sys.exit(1)
    click.echo(f"{directory}: valid against Kubernetes {KUBERNETES_VERSION} schemas, no Gatekeeper violations")
