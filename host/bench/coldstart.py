"""`wardfn bench cold-start`: every phase of running a function, on its own, beside the baselines.

Once each (they take seconds): componentize-py, and wasmtime compiling the component. Then,
over N iterations: loading the precompiled `.cwasm`; a cold invocation (instantiate, then the
first call); an invocation on a prepared instance (instantiated and warmed with synthetic
input ahead of time, as the host's pool does); a call on a reused warm instance; and the two
baselines, plain Python in this process and a fresh Python process per invocation.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from host.bench import report
from host.bench.baselines import baseline_for
from host.bench.fixtures import PURPOSE, open_bench_runtime
from host.bench.machine import describe
from host.bench.stats import ratio, summarise
from host.catalogue.build import build_function, compile_component, componentize
from host.catalogue.manifest import FunctionSource, discover_functions
from host.catalogue.registry import limits_for
from host.catalogue.warmup import warmup_for
from host.config import Settings
from host.errors import FunctionNotFound
from host.runtime.calls import FunctionRequest, SandboxLimits
from host.runtime.capture import Bounded
from host.runtime.imports import CallContext
from host.runtime.results import parse_body, unwrap
from host.runtime.sandbox import PreparedInstance, Sandbox
from host.types import Scope

DEFAULT_FUNCTIONS = ("patient_lookup", "clinical_calc")
RATIO_FUNCTION = "patient_lookup"
TARGETS = {"prepared_over_warm_p50": ("<=", 2.0), "subprocess_over_cold_p50": (">=", 60.0)}
# Phases in the order they are reported; the first two run once.
PHASES = (
    ("componentize", "componentize-py (once)"),
    ("compile", "wasmtime compile (once)"),
    ("load_cwasm", "load .cwasm"),
    ("instantiate", "instantiate"),
    ("first_call", "first call"),
    ("cold_invocation", "cold invocation (instantiate + first call)"),
    ("prepared_invocation", "invocation on a prepared instance"),
    ("warm_call", "call on a reused warm instance"),
    ("python_in_process", "baseline: plain Python in-process"),
    ("python_subprocess", "baseline: fresh Python process"),
)
# Function arguments used when a function takes no patient (clinical_calc).
CALC_ARGS = {"calculator": "egfr", "creatinine_mg_dl": 1.1, "age": 67, "sex": "female"}


@dataclass
class _Subject:
    source: FunctionSource
    cwasm: Path
    limits: SandboxLimits
    request: FunctionRequest
    scope: Scope


def run_cold_start(
    settings: Settings, names: list[str], iterations: int, out: Path, console: Console
) -> dict[str, Any]:
    """Measure, print the table, write `cold-start.json` and `cold-start.png` under `out`; return the document."""
    sources = _choose(settings, names)
    runtime = open_bench_runtime(settings)
    database, patient_id, sandbox = runtime.database, runtime.patient_id, runtime.sandbox
    engine = sandbox.engine
    results: dict[str, dict[str, Any]] = {}
    try:
        steps = len(sources) * (2 + 7 * iterations)
        with _progress(console) as progress:
            task = progress.add_task("cold-start", total=steps)
            for source in sources:
                progress.update(task, description=f"{source.name}: building")
                artifact, _ = build_function(source, settings.wit_dir, runtime.cache, engine)
                subject = _subject(source, Path(artifact.cwasm_path), settings, patient_id)

                def advance(phase: str, name: str = source.name) -> None:
                    progress.update(task, advance=1, description=f"{name}: {phase}")

                results[source.name] = _measure(sandbox, engine, settings, subject, database, iterations, advance)
    finally:
        runtime.close()
    document = _document(results, iterations, settings)
    _print(console, document)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "cold-start.json", document)
    _chart(out / "cold-start.png", document)
    console.print(f"wrote {out / 'cold-start.json'} and {out / 'cold-start.png'}")
    return document


def _choose(settings: Settings, names: list[str]) -> list[FunctionSource]:
    sources = {s.name: s for s in discover_functions(settings.functions_dirs)}
    wanted = names or [n for n in DEFAULT_FUNCTIONS if n in sources]
    unknown = [n for n in wanted if n not in sources]
    if unknown:
        raise FunctionNotFound(f"no function named {', '.join(unknown)}; found: {', '.join(sorted(sources))}")
    return [sources[n] for n in wanted]


def _subject(source: FunctionSource, cwasm: Path, settings: Settings, patient_id: str) -> _Subject:
    manifest = source.manifest
    if manifest.patient == "required":
        request = FunctionRequest(patient_id, PURPOSE, {})
        scope = Scope(patient_id, frozenset(manifest.reads))
    else:
        args = CALC_ARGS if source.name == "clinical_calc" else dict(manifest.warmup_args)
        request = FunctionRequest(None, PURPOSE, args)
        scope = Scope(None)
    return _Subject(source, cwasm, limits_for(manifest, settings), request, scope)


def _measure(
    sandbox: Sandbox,
    engine: Any,
    settings: Settings,
    subject: _Subject,
    database: Path,
    iterations: int,
    advance: Callable[[str], None],
) -> dict[str, Any]:
    samples: dict[str, list[float]] = {key: [] for key, _ in PHASES}
    source, limits, request, scope = subject.source, subject.limits, subject.request, subject.scope

    advance("componentize-py")
    with tempfile.TemporaryDirectory(prefix="wardfn-bench-") as tmp:
        wasm_path = Path(tmp) / f"{source.name}.wasm"
        samples["componentize"].append(_timed(lambda: componentize(source, settings.wit_dir, wasm_path)))
        wasm = wasm_path.read_bytes()
    advance("wasmtime compile")
    samples["compile"].append(_timed(lambda: compile_component(engine, wasm, source.name)))

    component = sandbox.load(subject.cwasm)
    for _ in range(iterations):
        samples["load_cwasm"].append(_timed(lambda: sandbox.load(subject.cwasm)))
        advance("load .cwasm")

    answer: Any = None
    for _ in range(iterations):
        started = time.perf_counter()
        prepared = sandbox.prepare(component, limits)
        instantiated = time.perf_counter()
        answer = sandbox.call(prepared, request, scope, limits).body
        done = time.perf_counter()
        samples["instantiate"].append((instantiated - started) * 1000)
        samples["first_call"].append((done - instantiated) * 1000)
        samples["cold_invocation"].append((done - started) * 1000)
        advance("cold invocation")

    warmup = warmup_for(source.manifest)
    for _ in range(iterations):
        prepared = sandbox.prepare(component, limits, warmup)  # ahead of demand: not timed
        started = time.perf_counter()
        sandbox.call(prepared, request, scope, limits)
        samples["prepared_invocation"].append((time.perf_counter() - started) * 1000)
        advance("prepared invocation")

    warm = sandbox.prepare(component, limits, warmup)
    try:
        for _ in range(3):
            _call_again(sandbox, warm, request, scope, limits)
        for _ in range(iterations):
            samples["warm_call"].append(_timed(lambda: _call_again(sandbox, warm, request, scope, limits)))
            advance("warm call")
    finally:
        warm.discard()

    baseline = baseline_for(source.name, source.path, database, request.patient_id, request.args, settings)
    same_answer = None
    if baseline is not None:
        same_answer = baseline.in_process() == answer and baseline.subprocess() == answer
        for _ in range(iterations):
            samples["python_in_process"].append(_timed(baseline.in_process))
            advance("plain Python")
        for _ in range(iterations):
            samples["python_subprocess"].append(_timed(baseline.subprocess))
            advance("fresh Python process")
    else:
        for _ in range(2 * iterations):
            advance("no baseline")
    return {
        "phases": {key: summarise(values) for key, values in samples.items() if values},
        "baselines_give_the_same_answer": same_answer,
    }


def _call_again(
    sandbox: Sandbox, prepared: PreparedInstance, request: FunctionRequest, scope: Scope, limits: SandboxLimits
) -> Any:
    """Benchmark only: call an instance that already served a call, as if instances were reused.

    The serving path never does this for a function that reads records (the sandbox refuses);
    it is measured here as the lower bound a prepared fresh instance is compared with."""
    store = prepared._store
    assert store is not None
    context = CallContext(scope=scope, read=sandbox._read, log=Bounded(limits.log_bytes))
    _, raw = sandbox._run(store, prepared, request, context, limits)
    return parse_body(unwrap(raw), limits.output_bytes, limits.answer_memory_bytes)


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


@contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        yield progress


def _document(results: dict[str, dict[str, Any]], iterations: int, settings: Settings) -> dict[str, Any]:
    ratios: dict[str, float | None] = {name: None for name in TARGETS}
    focus = results.get(RATIO_FUNCTION)
    if focus is not None:
        phases = focus["phases"]
        ratios["prepared_over_warm_p50"] = ratio(phases["prepared_invocation"]["p50"], phases["warm_call"]["p50"])
        if "python_subprocess" in phases:
            ratios["subprocess_over_cold_p50"] = ratio(
                phases["python_subprocess"]["p50"], phases["cold_invocation"]["p50"]
            )
    per_function = {
        name: {
            "prepared_over_warm_p50": ratio(r["phases"]["prepared_invocation"]["p50"], r["phases"]["warm_call"]["p50"]),
            "subprocess_over_cold_p50": ratio(
                r["phases"].get("python_subprocess", {}).get("p50") or float("nan"),
                r["phases"]["cold_invocation"]["p50"],
            ),
        }
        for name, r in results.items()
    }
    return {
        "benchmark": "cold-start",
        "unit": "ms",
        "iterations": iterations,
        "ratios": ratios,
        "ratio_function": RATIO_FUNCTION,
        "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
        "ratios_by_function": per_function,
        "functions": results,
        "settings": {"epoch_tick_ms": settings.epoch_tick_ms, "max_memory_bytes": settings.max_memory_bytes},
        "machine": describe(),
    }


def _print(console: Console, document: dict[str, Any]) -> None:
    for name, result in document["functions"].items():
        table = Table(title=f"cold start: {name} (ms, {document['iterations']} iterations)", title_justify="left")
        for column in ("phase", "p50", "p99", "max"):
            table.add_column(column, justify="left" if column == "phase" else "right")
        for key, label in PHASES:
            phase = result["phases"].get(key)
            if phase is not None:
                table.add_row(label, report.ms(phase["p50"]), report.ms(phase["p99"]), report.ms(phase["max"]))
        console.print(table)
    console.print(report.ratio_table(document["ratios"], TARGETS))


def _chart(path: Path, document: dict[str, Any]) -> None:
    keys = [(k, label) for k, label in PHASES if k not in ("componentize", "compile")]
    series: dict[str, Sequence[float | None]] = {
        name: [result["phases"].get(k, {}).get("p50") for k, _ in keys]
        for name, result in document["functions"].items()
    }
    machine = document["machine"]
    note = f"{machine['cpu_model']}, {machine['cpus']} CPUs, Python {machine['python']}, load {machine['load_average']}"
    report.bar_chart(
        path,
        "wardfn cold start: p50 per phase (ms, log scale)",
        [label for _, label in keys],
        series,
        "milliseconds (p50)",
        log_scale=True,
        note=note,
    )
