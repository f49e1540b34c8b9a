"""`wardfn bench`: cold-start, load, history (chart size) and audit (writers) benchmarks: tables, JSON, charts."""

from __future__ import annotations

from pathlib import Path

import click

from host.cli.common import cli_settings, err

DEFAULT_OUT = Path("bench") / "results"


@click.group()
def bench() -> None:
    """Cold-start, load and chart-size benchmarks (JSON and PNG under --out)."""


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
@click.option("--low-rate", type=click.FloatRange(min=0.1), default=150.0, show_default=True, help="The lower req/s.")
@click.option("--subjects", type=click.IntRange(min=1), default=200, show_default=True, help="Distinct callers.")
@click.option("--patients", type=click.IntRange(min=1), default=1000, show_default=True, help="Distinct patients.")
@click.option(
    "--pin/--no-pin",
    default=True,
    show_default=True,
    help="One host worker pinned to one CPU, the load generator on another (needs two CPUs; ignores --workers).",
)
@click.option("--note", default=None, help="Said in the JSON beside the machine (e.g. that it was shared).")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
def load(
    url: str | None,
    connections: int,
    rate: float,
    duration: float,
    warmup: float,
    startup_runs: int,
    workers: int,
    low_rate: float,
    subjects: int,
    patients: int,
    pin: bool,
    note: str | None,
    out: Path,
) -> None:
    """One pod: the summary for many callers and patients, one worker on one CPU, against a bare FastAPI endpoint."""
    from host.bench.load import run_load

    # Unpinned, a host serving on one core of several measures the default, not the platform:
    # both the host and the floor get the same processes, every core unless told otherwise.
    settings = cli_settings().model_copy(update={"workers": workers})
    run_load(
        settings, url, connections, rate, duration, out, err, warmup, startup_runs,
        low_rate=low_rate, subjects=subjects, patients=patients, pin=pin, note=note,
    )  # fmt: skip


@bench.command("history")
@click.option("--sizes", help="Chart sizes in resources, comma-separated [default: 100,1000,10000,50000].")
@click.option("--calls", type=click.IntRange(min=1), help="Timed calls per size, summary and med_safety [default: 50].")
@click.option("--export-calls", type=click.IntRange(min=1), help="Timed exports per size [default: 10].")
@click.option("--warmup", type=click.IntRange(min=0), help="Calls per size and function not counted [default: 3].")
@click.option("--seed", "seed_value", type=int, help="The history generator's seed [default: WARDFN_SEED].")
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Host processes; 0 is one per core."
)
@click.option("--quick", is_flag=True, help="Tiny charts (30 and 60 resources) and a few calls: a smoke run.")
@click.option(
    "--bundles",
    "bundle_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="FHIR bundle files or directories (e.g. Synthea's), imported and summarised too; repeatable.",
)
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
def history(
    sizes: str | None,
    calls: int | None,
    export_calls: int | None,
    warmup: int | None,
    seed_value: int | None,
    workers: int,
    quick: bool,
    bundle_paths: tuple[Path, ...],
    out: Path,
) -> None:
    """Summary, med_safety and export latency against chart size (100 to 50,000 resources), on an idle host."""
    from host.bench.history import QUICK_SIZES, HistoryOptions, run_history

    settings = cli_settings().model_copy(update={"workers": workers})
    base = HistoryOptions(sizes=QUICK_SIZES, calls=3, export_calls=2, warmup=1) if quick else HistoryOptions()
    try:
        chosen = base.sizes if sizes is None else tuple(int(s) for s in sizes.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(
            "give sizes as whole numbers separated by commas, e.g. 100,1000", param_hint="--sizes"
        ) from None
    if not chosen or min(chosen) < 1:
        raise click.BadParameter("give at least one size, each at least 1", param_hint="--sizes")
    options = HistoryOptions(
        sizes=chosen,
        calls=base.calls if calls is None else calls,
        export_calls=base.export_calls if export_calls is None else export_calls,
        warmup=base.warmup if warmup is None else warmup,
        seed=settings.seed if seed_value is None else seed_value,
        workers=workers,
        bundles=tuple(str(p) for p in bundle_paths),
    )
    run_history(settings, options, out, err)


@bench.command("audit")
@click.option(
    "--database-url",
    envvar="WARDFN_DATABASE_URL",
    required=True,
    help="The PostgreSQL database to append to (default: WARDFN_DATABASE_URL); migrated first.",
)
@click.option("--writers", default="1,2,4,8", show_default=True, help="Writer process counts, comma-separated.")
@click.option("--rate", type=click.FloatRange(min=1), default=1000.0, show_default=True, help="Records/s in all.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds per N.")
@click.option("--warmup", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Seconds not counted.")
@click.option(
    "--repeat", type=click.IntRange(min=1), default=3, show_default=True, help="Rounds; each N reports its median."
)
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
def audit(database_url: str, writers: str, rate: float, duration: float, warmup: float, repeat: int, out: Path) -> None:
    """Append latency with 1, 2, 4 and 8 writer processes at one total rate, on PostgreSQL (audit.json)."""
    from host.bench.audit import AuditBenchOptions, run_audit_bench

    try:
        counts = tuple(int(n) for n in writers.split(",") if n.strip())
    except ValueError:
        raise click.BadParameter("give writer counts as whole numbers, e.g. 1,2,4,8", param_hint="--writers") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter("give at least one writer count, each at least 1", param_hint="--writers")
    options = AuditBenchOptions(database_url, counts, rate, duration, warmup, repeat=repeat)
    run_audit_bench(options, out, err.print)
