"""`wardfn bench`: cold-start and load benchmarks, with tables, JSON and charts."""

from __future__ import annotations

from pathlib import Path

import click

from host.cli.common import cli_settings, err

DEFAULT_OUT = Path("bench") / "results"


@click.group()
def bench() -> None:
    """Cold-start and load benchmarks (JSON and PNG under --out)."""


@bench.command("cold-start")
@click.argument("names", nargs=-1)
@click.option("--iterations", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
def cold_start(names: tuple[str, ...], iterations: int, out: Path) -> None:
    """Every phase of a function's start, on its own, beside plain Python and a process per call."""
    from host.bench.coldstart import run_cold_start

    run_cold_start(cli_settings(), list(names), iterations, out, err)
