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


@bench.command("load")
@click.option("--url", default=None, help="Target a running host instead of starting one (no start-up measure).")
@click.option("--connections", type=click.IntRange(min=1), default=16, show_default=True, help="Closed-loop clients.")
@click.option("--rate", type=click.FloatRange(min=0.1), default=200.0, show_default=True, help="Open-loop req/s.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds per run.")
@click.option("--warmup", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Seconds not counted.")
@click.option("--startup-runs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Server processes for the host and the floor alike; 0 is one per CPU core (WARDFN_WORKERS is ignored).",
)
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
def load(
    url: str | None,
    connections: int,
    rate: float,
    duration: float,
    warmup: float,
    startup_runs: int,
    workers: int,
    out: Path,
) -> None:
    """Full path (token, policy, Wasm, audit) and clinical_calc against the floor, closed and open loop."""
    from host.bench.load import run_load

    # A host serving on one core of several measures the default, not the platform: both the
    # host and the floor get the same processes, every core unless told otherwise.
    settings = cli_settings().model_copy(update={"workers": workers})
    run_load(settings, url, connections, rate, duration, out, err, warmup, startup_runs)
