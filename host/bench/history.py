"""`wardfn bench history`: what a call costs as the chart grows, on an idle host.

Seeds a database of its own (`bench-history.db` in a fresh directory under `$WARDFN_HOME`,
removed after the run) with one history-profile patient per size (host.data.history: about
100, 1,000, 10,000 and 50,000 resources by default), timing how long each chart takes to
generate and to store; starts a real host on it (`wardfn serve` on a free loopback port);
then, one call at a time, for each size:

- summary: `GET /v1/patients/{id}/summary` (patient_lookup), as medical staff, for treatment;
- med_safety: `POST /v1/functions/med_safety/invoke`, the same caller;
- export: `POST /v1/functions/fhir_export/invoke` as a physician on the patient's care team: its
  first page (`EXPORT_ARGS`), which is what a client waits for;
- then, once per size, the whole export walked page by page (host.bench.pages), both
  `fhir_export` (the physician, for treatment) and `deidentify` (a researcher, for research):
  pages, time, and whether the resources received are every resource of the types it reads.

Every call is timed, whatever it answered: a call past its function's deadline (504) or over its
output cap is counted by status, never a crash. The headline, `summary_p99_50k_over_100`, is the
summary's p99 at the largest size over its p99 at the smallest (every call counted; when calls
at the largest size failed at their deadline, the ratio is a lower bound and says so).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from host.auth import issue_dev_token
from host.bench import bundles, report
from host.bench.machine import commit, describe
from host.bench.pages import walk
from host.bench.server import build_all, start_host, stop, until_ok
from host.bench.stats import summarise
from host.catalogue.manifest import discover_functions
from host.config import Settings
from host.data.history import history_patient
from host.store.encryption import kek_from_settings
from host.store.resources import ResourceStore

DEFAULT_SIZES = (100, 1_000, 10_000, 50_000)
QUICK_SIZES = (30, 60)
RATIO = "summary_p99_50k_over_100"
TARGETS = {RATIO: ("<=", 1.5)}
DATABASE = "bench-history.db"
FUNCTIONS = {"summary": "patient_lookup", "med_safety": "med_safety", "export": "fhir_export"}
# One page of the export, its default size.
PAGE_COUNT = 1000
EXPORT_ARGS: dict[str, Any] = {"_count": PAGE_COUNT}
# Who walks each export, and for what.
WALKS = {"fhir_export": ("physician", "TREAT"), "deidentify": ("researcher", "HRESCH")}
CALL_TIMEOUT_S = 120
STAFF_ROLE = "authorized_medical_staff"


@dataclass(frozen=True)
class HistoryOptions:
    """What `wardfn bench history` measures, recorded as given in the JSON."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    calls: int = 50
    export_calls: int = 10
    warmup: int = 3
    seed: int = 20261125
    workers: int = 0
    bundles: tuple[str, ...] = ()  # FHIR bundle files or directories, imported and summarised too


@dataclass(frozen=True)
class BenchPatient:
    """One seeded chart: its size, its patient and the care-team member who may export it."""

    target: int
    index: int
    patient_id: str
    physician: str
    counts: dict[str, int]
    generate_ms: float
    store_ms: float

    def describe(self) -> dict[str, Any]:
        """What the JSON says of it: sizes and timings, not the (synthetic) ids."""
        return {
            "target_resources": self.target,
            "resources": sum(self.counts.values()),
            "history_index": self.index,
            "by_type": self.counts,
            "generate_ms": round(self.generate_ms, 1),
            "store_ms": round(self.store_ms, 1),
        }


def run_history(settings: Settings, options: HistoryOptions, out: Path, console: Console) -> dict[str, Any]:
    """Seed, serve, measure, print; write `history.json` and `history.png` under `out`; return the document."""
    out.mkdir(parents=True, exist_ok=True)
    settings.home.mkdir(parents=True, exist_ok=True)
    # A directory of its own for each run: two runs in one home never delete each other's database.
    workdir = Path(tempfile.mkdtemp(prefix="bench-history-", dir=settings.home))
    try:
        with Progress(
            TextColumn("{task.description:<52}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True
        ) as progress:
            patients, url, runs, walks, imported = _seed_and_measure(
                settings, options, workdir / DATABASE, out, progress
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    document = _document(settings, options, url, patients, runs)
    document["walks"] = walks
    _print(console, document)
    _print_walks(console, walks)
    if options.bundles:
        document["bundles"] = bundles.summarise_runs(imported)
        bundles.print_bundles(console, document["bundles"])
    report.write_json(out / "history.json", document)
    _chart(out / "history.png", document)
    console.print(f"wrote {out / 'history.json'} and {out / 'history.png'}")
    return document


def _seed_and_measure(
    settings: Settings, options: HistoryOptions, database: Path, out: Path, progress: Progress
) -> tuple[list[BenchPatient], str, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    sizes = sorted(set(options.sizes))
    task = progress.add_task("history", total=len(sizes) * (1 + len(FUNCTIONS)) + 1)
    patients = []
    for position, size in enumerate(sizes):
        progress.update(task, description=f"seeding a chart of {size:,} resources")
        patients.append(_seed(settings, database, options.seed, position, len(sizes), size))
        progress.advance(task)
    progress.update(task, description="importing bundles")
    real = bundles.import_for_bench(settings, database, [Path(p) for p in options.bundles])
    progress.update(task, description="building functions, starting the host")
    build_all(settings)
    staff = {"Authorization": f"Bearer {issue_dev_token(settings, 'bench-history', STAFF_ROLE, 7200)}"}
    runs: list[dict[str, Any]] = []
    walks: list[dict[str, Any]] = []
    imported: list[dict[str, Any]] = []
    with (out / "history-server.log").open("wb") as log:
        server, url = start_host(settings, database, log)
        try:
            until_ok(server, f"{url}/v1/patients/{patients[0].patient_id}/summary", staff, time.perf_counter())
            progress.advance(task)
            with httpx.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client:
                for patient in patients:
                    for function, request in _requests(settings, patient, staff).items():
                        progress.update(task, description=f"{function}, {patient.target:,} resources")
                        calls = options.export_calls if function == "export" else options.calls
                        runs.append(_measure(client, function, patient, request, calls, options.warmup))
                        progress.advance(task)
                    progress.update(task, description=f"exports page by page, {patient.target:,} resources")
                    walks.append(_walk_exports(settings, client, patient))
                for chart in real:
                    progress.update(task, description=f"bundle {chart.number}, {chart.resources:,} resources")
                    imported += _measure_bundle(client, chart, staff, options)
        finally:
            stop(server)
    return patients, url, runs, walks, imported


def _measure_bundle(
    client: httpx.Client, chart: bundles.BundlePatient, staff: dict[str, str], options: HistoryOptions
) -> list[dict[str, Any]]:
    """The summary and med_safety of one imported chart, as for the synthetic ones."""
    found = []
    as_seeded = BenchPatient(chart.resources, 0, chart.patient_id, "", chart.counts, 0.0, 0.0)
    for function, request in bundles.staff_requests(chart.patient_id, staff).items():
        run = _measure(client, function, as_seeded, request, options.calls, options.warmup)
        found.append({"bundle": chart.number, **run, "by_type": chart.counts})
    return found


def _seed(settings: Settings, database: Path, seed: int, position: int, stride: int, size: int) -> BenchPatient:
    """The first history patient at `position`, `position + stride`, ... whose consent allows treatment, stored."""
    index = position
    while True:
        started = time.perf_counter()
        chart = history_patient(seed, index, size)
        generate_ms = (time.perf_counter() - started) * 1000
        if not any(r["resourceType"] == "Consent" for r in chart):
            break
        index += stride  # a patient who refuses treatment would answer 403: take the next one
    store = ResourceStore(database, kek_from_settings(settings))
    try:
        started = time.perf_counter()
        store.add_resources(chart)
        store_ms = (time.perf_counter() - started) * 1000
    finally:
        store.close()
    team = next(r for r in chart if r["resourceType"] == "CareTeam")
    physician = team["participant"][0]["member"]["reference"].removeprefix("Practitioner/")
    counts = dict(sorted(Counter(str(r["resourceType"]) for r in chart).items()))
    return BenchPatient(size, index, chart[0]["id"], physician, counts, generate_ms, store_ms)


def _requests(settings: Settings, patient: BenchPatient, staff: dict[str, str]) -> dict[str, dict[str, Any]]:
    physician = issue_dev_token(settings, patient.physician, "physician", 7200)
    invoke = {"patient_id": patient.patient_id, "purpose": "TREAT"}
    return {
        **bundles.staff_requests(patient.patient_id, staff),
        "export": {
            "method": "POST",
            "url": "/v1/functions/fhir_export/invoke",
            "headers": {"Authorization": f"Bearer {physician}"},
            "json": {**invoke, "args": EXPORT_ARGS},
        },
    }


def _walk_exports(settings: Settings, client: httpx.Client, patient: BenchPatient) -> dict[str, Any]:
    """Both exports of one chart, every page, as the callers that may make them."""
    reads = {source.name: source.manifest.reads for source in discover_functions(settings.functions_dirs)}
    found: dict[str, Any] = {"target_resources": patient.target, "resources": sum(patient.counts.values())}
    for function, (role, purpose) in WALKS.items():
        subject = patient.physician if role == "physician" else "bench-research"
        headers = {"Authorization": f"Bearer {issue_dev_token(settings, subject, role, 7200)}"}
        expected = {kind: n for kind, n in patient.counts.items() if kind in reads[function]}
        invoke = {"patient_id": patient.patient_id, "purpose": purpose}
        found[function] = walk(client, function, headers, invoke, PAGE_COUNT, expected)
    return found


def _measure(
    client: httpx.Client, function: str, patient: BenchPatient, request: dict[str, Any], calls: int, warmup: int
) -> dict[str, Any]:
    """`warmup` calls not counted, then `calls` calls one after another, each timed whatever it answers."""
    every: list[float] = []
    ok: list[float] = []
    sizes: list[float] = []
    statuses: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for number in range(warmup + calls):
        started = time.perf_counter()
        try:
            response = client.request(**request)
            status, body = str(response.status_code), len(response.content)
            code = None if response.is_success else _error_code(response)
        except httpx.TimeoutException:
            status, body, code = "client_timeout", 0, None
        elapsed = (time.perf_counter() - started) * 1000
        if number < warmup:
            continue
        every.append(elapsed)
        statuses[status] += 1
        if code is not None:
            codes[code] += 1
        if status == "200":
            ok.append(elapsed)
            sizes.append(body)
    return {
        "function": function,
        "target_resources": patient.target,
        "resources": sum(patient.counts.values()),
        "calls": calls,
        "status": dict(sorted(statuses.items())),
        "errors": calls - statuses["200"],
        "error_codes": dict(sorted(codes.items())),
        "latency_ms": summarise(every),
        "latency_ok_ms": summarise(ok),
        "response_bytes_p50": summarise(sizes)["p50"],
    }


def _document(
    settings: Settings, options: HistoryOptions, url: str, patients: list[BenchPatient], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    summaries = [r for r in runs if r["function"] == "summary"]
    smallest, largest = summaries[0], summaries[-1]
    low, high = smallest["latency_ms"]["p99"], largest["latency_ms"]["p99"]
    value = round(high / low, 3) if low and high else None
    by_status: Counter[str] = Counter()
    for run in runs:
        by_status.update({k: v for k, v in run["status"].items() if k != "200"})
    limits = {
        source.name: source.manifest.limits.model_dump()
        for source in discover_functions(settings.functions_dirs)
        if source.name in FUNCTIONS.values()
    }
    return {
        "benchmark": "history",
        "commit": commit(),
        "url": url,
        # Bundle paths may name their patient (Synthea's file names do): counted, never written.
        "options": {
            **asdict(options),
            "sizes": sorted(set(options.sizes)),
            "export_args": EXPORT_ARGS,
            "bundles": len(options.bundles),
        },
        RATIO: value,
        "ratios": {RATIO: value},
        "ratio_basis": {
            "sizes": [smallest["target_resources"], largest["target_resources"]],
            "latencies": "every timed call, whatever its status",
            "lower_bound": largest["errors"] > 0,
        },
        "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
        "errors": {"total": sum(by_status.values()), "by_status": dict(sorted(by_status.items()))},
        "patients": [p.describe() for p in patients],
        "runs": runs,
        "notes": {
            "export": f"the export figures are its first page of {PAGE_COUNT} resources; `walks` follow "
            "every page of both exports once per chart",
            "seeding": "generate_ms and store_ms: one chart generated, then stored in one transaction "
            "(every resource sealed, the search index written)",
        },
        "settings": {"workers": settings.worker_count, "limits": limits},
        "machine": describe(),
    }


def _print(console: Console, document: dict[str, Any]) -> None:
    table = Table(title="history (latency in ms, every call)", title_justify="left")
    for column in ("function", "resources", "calls", "p50", "p99", "max", "statuses", "bytes p50"):
        table.add_column(column, justify="left" if column in ("function", "statuses") else "right")
    for run in document["runs"]:
        lat = run["latency_ms"]
        table.add_row(
            run["function"],
            f"{run['resources']:,}",
            str(run["calls"]),
            *(report.ms(lat[k]) for k in ("p50", "p99", "max")),
            ", ".join(f"{k}: {v}" for k, v in run["status"].items()),
            "n/a" if run["response_bytes_p50"] is None else f"{run['response_bytes_p50']:,.0f}",
        )
    console.print(table)
    seeding = ", ".join(
        f"{p['resources']:,}: {p['generate_ms']:,.0f} + {p['store_ms']:,.0f} ms" for p in document["patients"]
    )
    console.print(f"seeding (generate + store): {seeding}")
    console.print(report.ratio_table(document["ratios"], TARGETS))
    if document["ratio_basis"]["lower_bound"]:
        console.print("the largest chart's summaries failed at their deadline: the ratio is a lower bound")


def _print_walks(console: Console, walks: list[dict[str, Any]]) -> None:
    table = Table(title="exports walked page by page", title_justify="left")
    for column in ("function", "resources", "pages", "page p50 ms", "page max ms", "total ms", "complete"):
        table.add_column(column, justify="left" if column == "function" else "right")
    for chart in walks:
        for function in WALKS:
            found = chart[function]
            table.add_row(
                function,
                f"{found['resources']:,} of {found['expected_resources']:,}",
                str(found["pages"]),
                report.ms(found["page_ms"]["p50"]),
                report.ms(found["page_ms"]["max"]),
                f"{found['total_ms']:,.0f}",
                "yes" if found["complete"] else f"no ({found['status']})",
            )
    console.print(table)


def _chart(path: Path, document: dict[str, Any]) -> None:
    series: dict[str, list[tuple[float, float | None, str]]] = {}
    for run in document["runs"]:
        for point in ("p50", "p99"):
            series.setdefault(f"{run['function']} {point}", []).append(
                (run["resources"], run["latency_ms"][point], _failures(run) if point == "p99" else "")
            )
    machine = document["machine"]
    note = (
        f"one call at a time; {document['options']['calls']} calls a point ({document['options']['export_calls']} "
        f"for the export); non-200 answers by status; {machine['cpu_model']}, {machine['cpus']} CPUs; "
        f"{RATIO} = {document[RATIO]}; commit {str(document['commit']['sha'])[:10]}"
    )
    report.line_chart(
        path, "wardfn: latency against chart size (ms, log-log)", series, "resources in the chart", "milliseconds", note
    )


def _failures(run: dict[str, Any]) -> str:
    """ "504×50": what the calls that did not answer 200 answered, for the chart."""
    return ", ".join(f"{status}×{count}" for status, count in run["status"].items() if status != "200")


def _error_code(response: httpx.Response) -> str:
    """The API's error code (`deadline_exceeded`, `function_output_rejected`...), or `unreadable`."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "unreadable"
