"""`wardfn keys`: the key-encryption key of the patient data, and its rotation."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

import click

from host.cli.common import cli_settings, err


def _kek_option(path: Path | None, variable: str, what: str) -> bytes:
    """A KEK from a file (raw or base64) or from the named variable (base64); never from a flag's value."""
    from host.store.encryption import read_kek_file

    if path is not None:
        return read_kek_file(path, f"--{what}-kek-file")
    value = os.environ.get(variable, "")
    if not value:
        raise click.ClickException(f"give the {what} key-encryption key with --{what}-kek-file PATH or {variable}")
    try:
        key = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise click.ClickException(f"{variable} must be 32 random bytes in base64 (`openssl rand -base64 32`)")
    return key


@click.group()
def keys() -> None:
    """The key-encryption key (KEK) that wraps every patient's data key."""


@keys.command("status")
def keys_status() -> None:
    """Show this host's KEK id and how many data keys are wrapped under each KEK the database knows."""
    from host.store.resources import open_store

    settings = cli_settings()
    store = open_store(settings)
    try:
        counts = store.kek_status()
        current = store.kek_id
    finally:
        store.close()
    for kek_id, count in counts.items():
        marker = "  (this host's WARDFN_KEK)" if kek_id == current else ""
        click.echo(f"{kek_id}  {count} data keys{marker}")
    if len(counts) > 1:
        err.print("a rotation is in progress: finish it with `wardfn keys retire` once every host runs on the new key")


@keys.command("rotate")
@click.option(
    "--new-kek-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="A file holding the new KEK (32 bytes, raw or base64); or set WARDFN_NEW_KEK (base64).",
)
def keys_rotate(new_kek_file: Path | None) -> None:
    """Wrap every data key under a new KEK as well, with the service running; nothing is re-encrypted."""
    from host.store.encryption import LocalKek
    from host.store.resources import open_store

    settings = cli_settings()
    new = LocalKek(_kek_option(new_kek_file, "WARDFN_NEW_KEK", "new"))
    store = open_store(settings)
    try:
        with err.status("re-wrapping data keys"):
            wrapped = store.rotate_kek(new)
        old = store.kek_id
    finally:
        store.close()
    err.print(f"wrapped {wrapped} data keys under the new key-encryption key {new.kek_id} (they stay under {old})")
    err.print(
        "next: restart every host with WARDFN_KEK (or WARDFN_KEK_FILE) set to the new key; hosts on either key "
        "serve every record meanwhile. Then, with the new key set, run "
        "`wardfn keys retire --old-kek-file OLD` (or WARDFN_OLD_KEK) to delete the old wrappings."
    )


@keys.command("retire")
@click.option(
    "--old-kek-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="A file holding the KEK to retire (32 bytes, raw or base64); or set WARDFN_OLD_KEK (base64).",
)
def keys_retire(old_kek_file: Path | None) -> None:
    """Finish a rotation: wrap stragglers under this host's KEK, then delete every wrapping under the old one."""
    from host.store.encryption import LocalKek
    from host.store.resources import open_store

    settings = cli_settings()
    old = LocalKek(_kek_option(old_kek_file, "WARDFN_OLD_KEK", "old"))
    store = open_store(settings)
    try:
        with err.status("retiring the old key-encryption key"):
            caught_up = store.retire_kek(old)
    finally:
        store.close()
    err.print(
        f"retired key-encryption key {old.kek_id} ({caught_up} data keys written meanwhile were wrapped under "
        f"the current key first): a host still on it now refuses to start, and the old key can be destroyed"
    )
