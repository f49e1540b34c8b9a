"""`wardfn package`: a function as a signed OCI image layout."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from host.cli.common import cli_settings, err


@click.command()
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="A new or empty directory.")
@click.option(
    "--key",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Ed25519 signing key (PEM); default: this home's development key, created if missing.",
)
def package(name: str, out: Path, key: Path | None) -> None:
    """Build NAME and write it as a signed OCI image layout (application/wasm layer) into OUT."""
    from host.catalogue.artifacts import ArtifactCache
    from host.catalogue.build import WORLD, cache_key
    from host.catalogue.manifest import discover_functions
    from host.catalogue.oci import development_signing_key, load_private_key, public_key_path, write_layout
    from host.cli.progress import build_functions
    from host.runtime.engine import WIT_PACKAGE, WIT_VERSION

    settings = cli_settings()
    if key is None and settings.production:
        raise click.UsageError("give --key: development signing keys are refused in production")
    build_functions(settings, [name], force=False, console=err)
    source = next(s for s in discover_functions(settings.functions_dirs) if s.name == name)
    artifact = ArtifactCache(settings.artifact_dir, settings.key_dir).lookup(name, cache_key(source, settings.wit_dir))
    assert artifact is not None  # just built
    signing_key = load_private_key(key) if key else development_signing_key(settings.package_signing_key)
    digest = write_layout(
        out,
        source.manifest,
        artifact.wasm_path.read_bytes(),
        f"{WIT_PACKAGE}/{WORLD}@{WIT_VERSION}",
        signing_key,
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        _args_schema(source.path, source.manifest.args_schema),
    )
    err.print(f"{name} {source.manifest.version}: OCI layout in {out}, manifest {digest}")
    if key is None:
        err.print(f"signed with the development key; pin {public_key_path(settings.package_signing_key)}")
    click.echo(digest)


def _args_schema(function_dir: Path, name: str | None) -> dict[str, Any] | None:
    """The manifest's arguments schema, to travel signed inside the package."""
    if name is None:
        return None
    schema = json.loads((function_dir / name).read_text(encoding="utf-8"))
    return schema if isinstance(schema, dict) else None
