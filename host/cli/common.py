"""What every `wardfn` command shares: the root group, settings, and errors as one line."""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console

from host.config import Settings, load_settings
from host.errors import WardfnError

err = Console(stderr=True)


def cli_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus the given CLI flags; invalid settings are one clear line."""
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        raise click.ClickException(f"invalid settings: {problems}") from None


class _Group(click.Group):
    """Turns host errors into one readable line and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WardfnError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
def main() -> None:
    """wardfn: patient-data functions in WebAssembly sandboxes, behind a policy decision, with an audit trail."""
